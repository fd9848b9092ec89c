"""The real fairseq-train and fairseq-generate commands on tiny models and real speech, with
fairseq's logging integrations, and llast-evaluate on what fairseq-generate wrote."""
import fcntl
import json
import math
import os
import re
import struct
import subprocess
import termios
from pathlib import Path

import pytest
import torch
from conftest import REPO, PAIRS
from fairseq.sequence_generator import SequenceGenerator

BIN = Path(REPO / ".venv" / "bin")


def run(*argv, cwd):
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{argv[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def trained(tiny_corpus, tiny_models, tmp_path_factory):
    save = tmp_path_factory.mktemp("checkpoints")
    log = run(
        BIN / "fairseq-train", tiny_corpus, "--user-dir", REPO / "llast_fairseq",
        "--task", "llast_st", "--llm-path", tiny_models / "llm", "--asr-augment",
        "--arch", "llast_tiny", "--whisper-path", tiny_models / "whisper.pt",
        "--criterion", "llast_cross_entropy", "--label-smoothing", "0.1",
        "--optimizer", "adam", "--lr", "1e-2", "--clip-norm", "1.0", "--batch-size", "4", "--max-update", "40",
        "--train-subset", "train", "--valid-subset", "test", "--save-dir", save,
        "--log-format", "json", "--log-interval", "1", "--num-workers", "0", "--cpu", "--seed", "1",
        "--tensorboard-logdir", save / "tensorboard",
        cwd=tiny_corpus,
    )
    return save, log


def json_train_losses(log):
    """The loss of each train_inner line of a --log-format json log."""
    return [float(json.loads(line.split("| train_inner | ", 1)[1])["loss"])
            for line in log.splitlines() if "| train_inner | " in line]


def test_train_lowers_the_loss_and_trains_only_lora_and_adaptor(trained):
    save, log = trained
    losses = json_train_losses(log)
    assert len(losses) == 40
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.7 * first, (first, last)
    counts = re.search(r"num\. shared model params: ([\d,]+) \(num\. trained: ([\d,]+)\)", log)
    total, trained_params = (int(c.replace(",", "")) for c in counts.groups())
    state = torch.load(save / "checkpoint_last.pt", map_location="cpu")  # torch 2.13: weights_only
    keys = list(state["model"])
    assert keys and all("lora_" in k or k.startswith("encoder.adaptor.") for k in keys)
    assert sum(v.numel() for v in state["model"].values()) == trained_params < total
    assert state["cfg"]["task"]["llm_path"].endswith("llm")


@pytest.mark.parametrize("subset", ["test", "test_fr_en"])
def test_generate_beam5_from_checkpoint_in_a_fresh_process(trained, tiny_corpus, tiny_models, tmp_path, subset):
    save, _ = trained
    out = run(
        BIN / "fairseq-generate", tiny_corpus, "--user-dir", REPO / "llast_fairseq",
        "--task", "llast_st", "--llm-path", tiny_models / "llm", "--path", save / "checkpoint_last.pt",
        "--gen-subset", subset, "--beam", "5", "--max-len-b", "30", "--batch-size", "3",
        "--scoring", "sacrebleu", "--results-path", tmp_path, "--cpu",
        cwd=tmp_path,
    )
    lines = (tmp_path / f"generate-{subset}.txt").read_text().splitlines()
    rows = [p for p in PAIRS if subset == "test" or p[2] == "fr"]
    refs = {int(l.split("\t")[0][2:]): l.split("\t")[1] for l in lines if l.startswith("T-")}
    hyps = {int(l.split("\t")[0][2:]): l.split("\t")[1:] for l in lines if l.startswith("D-")}
    assert sorted(hyps) == list(range(len(rows)))  # every row got a hypothesis
    assert [refs[i] for i in range(len(rows))] == [tgt for _, tgt, _, _ in rows]  # detokenized
    assert re.search(r"Generate \S+ with beam=5: BLEU = [\d.]+", lines[-1]), lines[-1]
    assert "Translated" in out

    # the D- lines are what SequenceGenerator gives in this process on the same checkpoint, each
    # sentence decoded alone: text and score (generate prints base 2)
    from llast_fairseq.checkpoint import load_checkpoint

    model, task, _ = load_checkpoint(str(save / "checkpoint_last.pt"))
    task.load_dataset(subset)
    dataset, d = task.dataset(subset), task.target_dictionary
    generator = SequenceGenerator([model.eval()], d, beam_size=5, max_len_b=30)
    detok = task.build_bpe(None)
    for i in range(len(dataset)):
        with torch.no_grad():
            best = generator.generate([model], dataset.collater([dataset[i]]))[0][0]
        score, text = hyps[i]
        assert detok.decode(d.string(best["tokens"], extra_symbols_to_ignore={d.eos()})) == text, i
        assert float(best["score"]) / math.log(2) == pytest.approx(float(score), abs=1e-4), i


def test_generate_refuses_another_prompt_contract_and_older_checkpoints_load(trained, tiny_corpus, tiny_models,
                                                                              tmp_path):
    """fairseq-generate with another --prompt-template than the model was trained with stops with
    an error naming both. A checkpoint saved before the model config held the contract loads, and
    is held to the template of the task it was trained with."""
    from conftest import fairseq_cfg
    from fairseq import checkpoint_utils, tasks

    from llast_fairseq.checkpoint import load_checkpoint

    save, _ = trained
    other = "<audio>{src} to {tgt}:"
    proc = subprocess.run([str(a) for a in (
        BIN / "fairseq-generate", tiny_corpus, "--user-dir", REPO / "llast_fairseq", "--task", "llast_st",
        "--llm-path", tiny_models / "llm", "--path", save / "checkpoint_last.pt", "--gen-subset", "test_fr_en",
        "--prompt-template", other, "--cpu")], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode != 0
    assert (f"the model was trained with --prompt-template 'llama2' but is asked to decode with "
            f"--prompt-template '{other}'") in proc.stderr, proc.stderr[-3000:]

    state = torch.load(save / "checkpoint_last.pt", map_location="cpu")
    del state["cfg"]["model"]["prompt_template"], state["cfg"]["model"]["pad_token"]
    torch.save(state, tmp_path / "older.pt")
    model, task, _ = load_checkpoint(str(tmp_path / "older.pt"))
    assert (model.cfg.prompt_template, model.cfg.pad_token) == ("llama2", None)
    other_task = tasks.setup_task(fairseq_cfg(tiny_corpus, tiny_models, "--prompt-template", other).task)
    with pytest.raises(ValueError, match="trained with --prompt-template 'llama2'"):
        checkpoint_utils.load_model_ensemble([str(tmp_path / "older.pt")], task=other_task)


def test_train_stops_before_the_first_update_on_a_bad_manifest_row(tiny_corpus, tiny_models, tmp_path):
    """A clip cut to 28 samples whose row says 27,208: fairseq-train exits with the one error that
    lists the row (file, line, id, field, reason), before any update or checkpoint."""
    import soundfile as sf

    from llast_fairseq.data.manifest import write_tsv
    from fairseq.data.audio.speech_to_text_dataset import SpeechToTextDatasetCreator

    rows = SpeechToTextDatasetCreator._load_samples_from_tsv(str(tiny_corpus), "train")
    speech, rate = sf.read(tiny_corpus / rows[0]["audio"])
    sf.write(tmp_path / "cut.wav", speech[:28], rate)
    rows.insert(3, dict(rows[0], id="cut", audio=str(tmp_path / "cut.wav"), n_frames="27208"))
    write_tsv(tmp_path / "train.tsv", rows)
    (tmp_path / "config.yaml").write_text(f"audio_root: {tiny_corpus}\n")
    proc = subprocess.run([str(a) for a in (
        BIN / "fairseq-train", tmp_path, "--user-dir", REPO / "llast_fairseq", "--task", "llast_st",
        "--llm-path", tiny_models / "llm", "--arch", "llast_tiny", "--whisper-path", tiny_models / "whisper.pt",
        "--criterion", "llast_cross_entropy", "--optimizer", "adam", "--lr", "1e-3", "--batch-size", "4",
        "--max-update", "2", "--disable-validation", "--save-dir", tmp_path / "ckpt", "--num-workers", "0",
        "--cpu")], cwd=tmp_path, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert (f"{tmp_path / 'train.tsv'}:5 id 'cut' field 'n_frames': 27208 samples, but the header of "
            f"{tmp_path / 'cut.wav'} holds 28 at {rate} Hz") in out, out[-3000:]
    assert "split 'train': 1 of 9 manifest rows cannot be used" in out and "--skip-bad-rows" in out
    assert "| epoch 001" not in out and not list((tmp_path / "ckpt").glob("*.pt"))  # no update, no checkpoint


def tensorboard_scalars(logdir: Path):
    """{tag: [(step, value)]} of the scalar summaries in the TensorBoard event files of logdir
    (TFRecord framing: length u64, its crc u32, an Event proto, the proto's crc u32)."""
    from tensorboardX.proto.event_pb2 import Event

    scalars = {}
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_tensorboard_logdir_holds_the_train_and_valid_loss(trained):
    save, log = trained
    assert "Please install tensorboardX" not in log and "tensorboard not found" not in log
    train_inner = tensorboard_scalars(save / "tensorboard" / "train_inner")
    assert [step for step, _ in train_inner["loss"]] == list(range(1, 41))  # --log-interval 1
    # the values the json log printed (rounded there to 3 decimals)
    assert [v for _, v in train_inner["loss"]] == pytest.approx(json_train_losses(log), abs=6e-4)
    # validation stats go under the valid subset's name (--valid-subset test)
    valid_losses = [float(json.loads(line.split("| test | ", 1)[1])["test_loss"])
                    for line in log.splitlines() if "| test | " in line]
    valid = tensorboard_scalars(save / "tensorboard" / "test")
    assert valid_losses and [v for _, v in valid["loss"]] == pytest.approx(valid_losses, abs=6e-4)


def run_in_a_terminal(argv, cwd):
    """Run argv with stdout and stderr on a pseudo-terminal, as in an interactive shell (fairseq
    falls back from tqdm to simple when stderr is not a terminal); returns what it printed."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 200, 0, 0))  # rows, columns
    proc = subprocess.Popen([str(a) for a in argv], cwd=cwd, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    out = b"".join(chunks).decode("utf-8", errors="replace")
    assert proc.wait() == 0, out[-3000:]
    return out


@pytest.mark.parametrize("log_format", ["simple", "tqdm"])
def test_log_formats_print_the_train_loss(tiny_corpus, tiny_models, tmp_path, log_format):
    """--log-format json is the trained fixture's; simple and tqdm print the loss their own way."""
    argv = [BIN / "fairseq-train", tiny_corpus, "--user-dir", REPO / "llast_fairseq", "--task", "llast_st",
            "--llm-path", tiny_models / "llm", "--arch", "llast_tiny", "--whisper-path", tiny_models / "whisper.pt",
            "--criterion", "llast_cross_entropy", "--optimizer", "adam", "--lr", "1e-3", "--batch-size", "4",
            "--max-update", "2", "--train-subset", "train", "--disable-validation", "--no-save",
            "--log-format", log_format, "--log-interval", "1", "--num-workers", "0", "--cpu"]
    if log_format == "simple":
        out = run(*argv, cwd=tmp_path)
        # progress lines "epoch 001:      1 / 2 loss=12.345, ..." at every update
        assert len(re.findall(r"epoch 001:\s+\d+ / 2 loss=\d+\.\d+", out)) == 2, out[-3000:]
    else:
        out = run_in_a_terminal(argv, cwd=tmp_path)
        # tqdm's bar, redrawn in place (its postfix of logged stats is drawn only when tqdm
        # refreshes, which two fast updates may not give it time for; the summary below has them)
        assert re.search(r"epoch 001:\s+\d+%\|[^|]*\| \d/2 \[", out), out[-3000:]
        assert not re.search(r"epoch 001:\s+\d+ / 2 loss=", out)  # not simple's lines
    # the end-of-epoch summary of the train stats, in both formats
    assert re.search(r"\| train \| epoch 001 \| loss \d+\.\d+ \|", out), out[-3000:]
    assert "Please install tensorboardX" not in out


def test_generate_bleu_equals_llast_evaluate(trained, tiny_corpus, tiny_models, tmp_path):
    """fairseq-generate with the X->en flags of the README prints the BLEU that llast-evaluate
    computes from the file it wrote; the installed llast-evaluate command checks its references."""
    save, _ = trained
    run(BIN / "fairseq-generate", tiny_corpus, "--user-dir", REPO / "llast_fairseq",
        "--task", "llast_st", "--llm-path", tiny_models / "llm", "--path", save / "checkpoint_last.pt",
        "--gen-subset", "test_fr_en", "--beam", "5", "--max-len-b", "30", "--batch-size", "3",
        "--scoring", "sacrebleu", "--sacrebleu-lowercase", "--results-path", tmp_path / "res", "--cpu",
        cwd=tmp_path)
    last = (tmp_path / "res" / "generate-test_fr_en.txt").read_text().splitlines()[-1]
    fairseq_bleu = re.search(r"BLEU = ([\d.]+)", last).group(1)
    table = run(BIN / "llast-evaluate", "--data", tiny_corpus, tmp_path / "res", "--json", tmp_path / "scores.json",
                cwd=tmp_path)
    (entry,) = json.loads((tmp_path / "scores.json").read_text())["results"]
    assert (entry["subset"], entry["direction"], entry["n"]) == ("test_fr_en", "fr-en", 4)
    assert f"{entry['bleu']['mean']:.2f}" == fairseq_bleu
    assert re.search(rf"test_fr_en\s+fr-en\s+4\s+1\s+{re.escape(fairseq_bleu)}\s", table), table
