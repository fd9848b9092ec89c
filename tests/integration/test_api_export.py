"""llast_fairseq.api and llast-export against a checkpoint trained by the real fairseq-train.

Tiny random-init models, six French sentences spoken by espeak-ng, a few updates with L-LoRA and
S-LoRA at a high learning rate (so the LoRA weights are far from zero and merging matters) and
frame stacking (not the default, so an export must keep it). Then: the API's beam search equals
fairseq-generate's output line for line, and the exported model (LoRA merged, no peft, rebuilt
through build_model from the saved configs) gives the trained model's logits and beam-search output.
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
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

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
                "--llm-lora-r", "4", "--whisper-lora-r", "4", "--whisper-lora-alpha", "8", "--frame-stack", "2",
                "--criterion", "llast_cross_entropy", "--optimizer", "adam", "--lr", "1e-2",
                "--batch-size", "4", "--max-update", "6", "--save-dir", "ckpt", "--seed", "1",
                "--disable-validation", "--no-epoch-checkpoints"], cwd=work), "fairseq-train")
    ckpt = work / "ckpt" / "checkpoint_last.pt"
    generate = run([BIN / "fairseq-generate", *common, "--path", ckpt, "--gen-subset", "test",
                    "--beam", BEAM, "--max-len-b", MAX_LEN_B, "--batch-size", BATCH], cwd=work)
    export = run([BIN / "llast-export", "--checkpoint", ckpt, "--out", work / "exported",
                  "--llm-path", work / "llm", "--whisper-path", work / "whisper.pt"], cwd=REPO)
    return dict(work=work, ckpt=ckpt, paths=paths, exported=work / "exported",
                generate=finish(generate, "fairseq-generate"), export=finish(export, "llast-export"))


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
    with pytest.raises(FileNotFoundError, match="is not an exported LLaST model: no model.pt there$"):
        LlastTranslator.from_exported(str(tmp_path))
    (tmp_path / "llast.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="older export: export the training checkpoint again"):
        LlastTranslator.from_exported(str(tmp_path))


def test_export_equals_trained_model(trained, translator, api_results):
    from peft.tuners.lora import LoraLayer
    from transformers import AutoModelForCausalLM

    from llast_fairseq.api import LlastTranslator
    from llast_fairseq.models.whisper_weights import load_whisper_encoder

    out = trained["exported"]
    assert f"exported {trained['ckpt']} to {out}" in trained["export"]
    assert {p.name for p in out.iterdir()} == {"llm", "whisper.pt", "model.pt"}
    exported = LlastTranslator.from_exported(str(out), beam=BEAM, max_len_b=MAX_LEN_B)
    assert not any(isinstance(m, LoraLayer) or "lora" in n for n, m in exported.model.named_modules())
    assert not any(p.requires_grad for p in exported.model.parameters())

    # every setting of the model and the task is the trained one; only what merging changes differs
    configs = [OmegaConf.to_container(cfg, resolve=True, enum_to_str=True) for cfg in
               (translator.model.cfg, translator.task.cfg, exported.model.cfg, exported.task.cfg)]
    trained_model, trained_task, exported_model, exported_task = configs
    assert {k for k in trained_model if trained_model[k] != exported_model[k]} == {
        "whisper_path", "llm_training", "llm_lora_r", "whisper_lora_r"}
    assert exported_model["frame_stack"] == 2 and exported_model["adaptor"] == "mlp"
    assert (exported_model["llm_lora_r"], exported_model["whisper_lora_r"]) == (0, 0)
    assert {k for k in trained_task if trained_task[k] != exported_task[k]} == {"llm_path"}

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


def test_export_keeps_settings_reads_whisper_once_and_refuses_an_existing_dir(trained, tmp_path, monkeypatch):
    """Settings the trained checkpoint does not exercise (autocast, padding to 30 s, another
    template) survive an export too; the model knows Whisper's dims, so export reads Whisper once
    (to build the model) and reloads nothing for them."""
    from llast_fairseq.export import export, load_exported
    from llast_fairseq.models import whisper_weights

    with pytest.raises(FileExistsError, match="--force"):
        export(str(trained["ckpt"]), str(trained["exported"]))
    state = torch.load(trained["ckpt"], map_location="cpu")
    settings = {"autocast_bf16": True, "trim_audio_padding": False, "prompt_template": "<audio>{src} to {tgt}:"}
    state["cfg"]["model"].update(settings)
    state["cfg"]["task"]["prompt_template"] = settings["prompt_template"]
    torch.save(state, tmp_path / "variant.pt")
    reads, read = [], whisper_weights._read_whisper_checkpoint
    monkeypatch.setattr(whisper_weights, "_read_whisper_checkpoint", lambda path: reads.append(path) or read(path))
    w = trained["work"]
    export(str(tmp_path / "variant.pt"), str(tmp_path / "variant"), w / "llm", w / "whisper.pt")
    assert reads == [str(w / "whisper.pt")]
    model, task = load_exported(str(tmp_path / "variant"))
    assert {k: model.cfg[k] for k in settings} == settings
    assert task.cfg.prompt_template == settings["prompt_template"]
    assert model.encoder.autocast_bf16 and model.decoder.autocast_bf16 and not model.encoder.trim_padding


def test_translate_command(trained, api_results, capsys, monkeypatch):
    """llast-translate on a checkpoint and on its export: one line per file in the order given
    (not the length order batches take), a flushed progress line per batch on stderr."""
    from llast_fairseq.cli import translate as translate_cli

    w, files = trained["work"], trained["paths"][::-1]
    common = ["--src-lang", "fr", "--tgt-lang", "en", "--beam", BEAM, "--max-len-b", MAX_LEN_B,
              "--batch-size", BATCH]
    runs = [subprocess.Popen([str(a) for a in (BIN / "llast-translate", *files, "--checkpoint", ckpt, *extra, *common)],
                             cwd=w, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=dict(os.environ, OMP_NUM_THREADS="1"))
            for ckpt, extra in [(trained["ckpt"], ["--llm-path", w / "llm", "--whisper-path", w / "whisper.pt"]),
                                (trained["exported"], [])]]
    expected = [r["text"] for r in api_results][::-1]
    batches = -(-len(files) // BATCH)
    for proc in runs:
        out, err = proc.communicate()
        assert proc.returncode == 0, err[-3000:]
        assert out.splitlines() == expected
        progress = [line for line in err.splitlines() if line.startswith("llast-translate: ")]
        assert len(progress) == batches and progress[-1].startswith(f"llast-translate: {len(files)}/{len(files)} files")

    monkeypatch.chdir(w)

    def fails(*argv):  # the error paths in this process (a process start is ~10 s of imports)
        with pytest.raises(SystemExit) as exit_:
            translate_cli.main([str(a) for a in argv])
        assert exit_.value.code != 0
        return capsys.readouterr().err

    assert "--tgt-lang is required to translate" in fails(files[0], "--checkpoint", trained["exported"], "--src-lang", "fr")
    assert "llast-translate: error: 1 audio file(s) not found: 'nope.wav'" in fails(
        "nope.wav", "--checkpoint", trained["exported"], "--src-lang", "fr", "--tgt-lang", "en")
