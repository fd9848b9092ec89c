"""The real fairseq-train and fairseq-generate commands on tiny models and real speech."""
import json
import math
import re
import subprocess
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
        cwd=tiny_corpus,
    )
    return save, log


def test_train_lowers_the_loss_and_trains_only_lora_and_adaptor(trained):
    save, log = trained
    losses = [float(json.loads(line.split("| train_inner | ", 1)[1])["loss"])
              for line in log.splitlines() if "| train_inner | " in line]
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
