"""llast_fairseq.api and scripts/export.py against a checkpoint trained by the real fairseq-train.

Tiny random-init models, six French sentences spoken by espeak-ng, a few updates with L-LoRA and
S-LoRA at a high learning rate (so the LoRA weights are far from zero and merging matters). Then:
the API's beam search equals fairseq-generate's output line for line, and the exported model (LoRA
merged, no peft) gives the trained model's logits and beam-search output.
"""
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "scripts"))

PAIRS = [
    ("Bonjour tout le monde.", "Hello everyone."),
    ("Le chat dort.", "The cat is sleeping."),
    ("Il fait beau aujourd'hui.", "The weather is nice today."),
    ("Merci beaucoup.", "Thank you very much."),
    ("Où est la gare ?", "Where is the station?"),
    ("Nous allons au marché.", "We are going to the market."),
]
BEAM, MAX_LEN_B, BATCH = 3, 10, 4

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")


def run(cmd, cwd, **kwargs):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)


def finish(proc, what):
    out, _ = proc.communicate()
    assert proc.returncode == 0, f"{what} failed:\n{out[-3000:]}"
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Tiny models and corpus, a checkpoint from fairseq-train (base paths saved relative to the
    training directory, so loading elsewhere needs the overrides), fairseq-generate's output and
    an export by the CLI (the last two run side by side)."""
    from llast_fairseq.tiny_models import make_tiny_llm, make_tiny_whisper

    from llast_fairseq.data.audio import load_waveform

    work = tmp_path_factory.mktemp("api_export")
    (work / "data" / "wav").mkdir(parents=True)
    make_tiny_whisper(str(work / "whisper.pt"))
    make_tiny_llm(str(work / "llm"), [t for pair in PAIRS for t in pair] * 4, vocab_size=300)
    rows, paths = [], []
    for i, (fr, en) in enumerate(PAIRS):
        wav = work / "data" / "wav" / f"u{i}.wav"
        subprocess.run(["espeak-ng", "-v", "fr", "-w", str(wav), fr], check=True)
        paths.append(str(wav))
        rows.append(f"u{i}\twav/u{i}.wav\t{len(load_waveform(str(wav)))}\t{en}\t{fr}\tfr\ten\tspk")
    for split in ("train", "test"):
        (work / "data" / f"{split}.tsv").write_text(
            "id\taudio\tn_frames\ttgt_text\tsrc_text\tsrc_lang\ttgt_lang\tspeaker\n" + "\n".join(rows) + "\n")
    (work / "data" / "config.yaml").write_text(f"audio_root: {work / 'data'}\n")

    common = [work / "data", "--user-dir", REPO / "llast_fairseq", "--task", "llast_st",
              "--llm-path", "llm", "--cpu"]
    finish(run([BIN / "fairseq-train", *common, "--arch", "llast_tiny", "--whisper-path", "whisper.pt",
                "--llm-lora-r", "4", "--whisper-lora-r", "4", "--whisper-lora-alpha", "8",
                "--criterion", "llast_cross_entropy", "--optimizer", "adam", "--lr", "1e-2",
                "--batch-size", "4", "--max-update", "6", "--save-dir", "ckpt", "--seed", "1",
                "--disable-validation", "--no-epoch-checkpoints"], cwd=work), "fairseq-train")
    ckpt = work / "ckpt" / "checkpoint_last.pt"
    generate = run([BIN / "fairseq-generate", *common, "--path", ckpt, "--gen-subset", "test",
                    "--beam", BEAM, "--max-len-b", MAX_LEN_B, "--batch-size", BATCH], cwd=work)
    export = run([sys.executable, REPO / "scripts" / "export.py", "--checkpoint", ckpt,
                  "--out", work / "exported", "--llm-path", work / "llm",
                  "--whisper-path", work / "whisper.pt"], cwd=REPO)
    return dict(work=work, ckpt=ckpt, paths=paths, exported=work / "exported",
                generate=finish(generate, "fairseq-generate"), export=finish(export, "export.py"))


@pytest.fixture(scope="module")
def translator(trained):
    from llast_fairseq.api import LlastTranslator

    w = trained["work"]
    return LlastTranslator.from_checkpoint(str(trained["ckpt"]), llm_path=str(w / "llm"),
                                           whisper_path=str(w / "whisper.pt"), beam=BEAM, max_len_b=MAX_LEN_B)


def test_lora_weights_were_trained(trained):
    model = torch.load(trained["ckpt"], map_location="cpu", weights_only=False)["model"]
    for prefix in ("decoder.llm.", "encoder.whisper."):
        lora_b = [v for k, v in model.items() if k.startswith(prefix) and "lora_B" in k]
        assert lora_b and max(float(v.abs().max()) for v in lora_b) > 1e-3, prefix


@pytest.fixture(scope="module")
def api_results(trained, translator):
    return translator.generate(trained["paths"], "fr", "en", batch_size=BATCH)


def test_api_matches_fairseq_generate(trained, translator, api_results):
    lines = {}
    for kind, i, score, text in re.findall(r"^([HD])-(\d+)\t(\S+)\t(.*)$", trained["generate"], re.M):
        lines[kind, int(i)] = (float(score), text)
    assert len(lines) == 2 * len(PAIRS)
    results = api_results
    tgt_dict = translator.task.target_dictionary
    for i, r in enumerate(results):
        score, text = lines["D", i]
        assert r["text"] == text, i
        assert r["score"] / math.log(2) == pytest.approx(score, abs=1e-4), i  # generate prints base 2
        assert " ".join(tgt_dict[t] for t in r["tokens"][:-1]) == lines["H", i][1], i
    # results follow the input order (batches are formed by length, so they stay the same)
    reordered = translator.generate(trained["paths"][::-1], "fr", "en", batch_size=BATCH)
    assert [r["score"] for r in reordered[::-1]] == pytest.approx([r["score"] for r in results], abs=1e-4)
    assert translator.translate(trained["paths"], "fr", "en", batch_size=BATCH) == [r["text"] for r in results]


def test_api_errors(trained, translator, tmp_path, monkeypatch):
    from llast_fairseq.api import LlastTranslator

    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="llm_path="):  # saved relative to the training dir
        LlastTranslator.from_checkpoint(str(trained["ckpt"]))
    with pytest.raises(FileNotFoundError, match="nope.wav"):
        translator.translate([trained["paths"][0], "/nonexistent/nope.wav"], "fr", "en")
    with pytest.raises(KeyError, match="xx"):
        translator.translate(trained["paths"][:1], "xx", "en")
    assert translator.translate([], "fr", "en") == []


def test_export_equals_trained_model(trained, translator, api_results):
    from peft.tuners.lora import LoraLayer
    from transformers import AutoModelForCausalLM

    from llast_fairseq.api import LlastTranslator
    from llast_fairseq.models.whisper_weights import load_whisper_encoder

    out = trained["exported"]
    assert {p.name for p in out.iterdir()} >= {"llm", "whisper.pt", "adaptor.pt", "llast.json"}
    exported = LlastTranslator.from_exported(str(out), beam=BEAM, max_len_b=MAX_LEN_B)
    assert not any(isinstance(m, LoraLayer) or "lora" in n for n, m in exported.model.named_modules())

    # standalone formats, and the LoRA really merged into them
    llm = AutoModelForCausalLM.from_pretrained(out / "llm", local_files_only=True)
    base = AutoModelForCausalLM.from_pretrained(trained["work"] / "llm", local_files_only=True)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert (llm.state_dict()[q] - base.state_dict()[q]).abs().max() > 1e-4
    whisper, _ = load_whisper_encoder(str(out / "whisper.pt"))
    whisper_base, _ = load_whisper_encoder(str(trained["work"] / "whisper.pt"))
    k = "blocks.0.attn.query.weight"
    assert (whisper.state_dict()[k] - whisper_base.state_dict()[k]).abs().max() > 1e-4

    task = translator.task
    task.load_dataset("test")
    dataset = task.dataset("test")
    sample = dataset.collater([dataset[i] for i in range(BATCH)])
    with torch.no_grad():
        expected = translator.model(**sample["net_input"])[0]
        got = exported.model(**sample["net_input"])[0]
    assert got.shape == expected.shape == (*sample["target"].shape, len(task.target_dictionary))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    ours, theirs = api_results, exported.generate(trained["paths"], "fr", "en", batch_size=BATCH)
    assert [r["tokens"] for r in ours] == [r["tokens"] for r in theirs]
    assert [r["text"] for r in ours] == [r["text"] for r in theirs]


def test_export_refuses_existing_dir(trained):
    from export import export

    with pytest.raises(FileExistsError, match="--force"):
        export(str(trained["ckpt"]), str(trained["exported"]))
