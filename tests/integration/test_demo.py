"""`make demo`'s path on a small corpus of two directions: corpus, real tiny.en, random-init LLM,
fairseq-train, fairseq-generate --beam 5 (translation and transcription), BLEU/WER report and the
curve; the model learns enough to beat the most-frequent-translation baseline on held-out speech."""
import json
import runpy
import subprocess
import sys

import pytest

from conftest import REPO

MARGIN = 5  # BLEU points


def test_demo_end_to_end_on_the_tiny_preset(tmp_path, capsys, monkeypatch):
    cache, work = tmp_path / "cache", tmp_path / "work"
    proc = subprocess.run(
        [sys.executable, REPO / "scripts" / "run_demo.py", "--preset", "tiny", "--cache-dir", cache,
         "--work-dir", work], capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    held_out = json.loads(out.split("held-out check (all must be 0): ", 1)[1].splitlines()[0])
    assert held_out == {f"{split}_{what}_in_train": 0 for split in ("dev", "test") for what in ("sentences", "voices")}
    results = json.loads((work / "results.json").read_text())
    assert set(results["asr_wer"]) == {"fr", "en"}
    assert set(results["baseline_bleu"]) == {"fr_en", "en_fr"}
    # translation learnt: held-out BLEU well above always answering the most frequent translation
    assert set(results["st"]) == {"fr-en", "en-fr"}
    for direction, bleu in results["st"].items():
        assert bleu > results["baseline_bleu"][direction.replace("-", "_")] + MARGIN, results
    assert all(0 <= wer < 100 for wer in results["asr_wer"].values()), results
    assert [u for u, _, _ in results["dev_curve"]] == [600, 1200]  # dev BLEU at each validation
    png = (work / "training_curve.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    for d in ("fr->en", "en->fr"):
        assert f"  {d} [" in out  # example translations beside their references
    for task in ("st", "asr"):  # every test row decoded
        lines = next((work / task).glob("generate-*.txt")).read_text().splitlines()
        assert sum(l.startswith("D-") for l in lines) == 40
    # the reruns in this process (a process start is ~10 s of imports); fairseq-generate still runs
    demo = runpy.run_path(str(REPO / "scripts" / "run_demo.py"))["main"]
    argv = ["--preset", "tiny", "--cache-dir", str(cache), "--work-dir", str(work)]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # a different training command never reuses (or resumes) that run
    with pytest.raises(SystemExit, match="holds a run of another fairseq-train command"):
        demo(argv + ["--lr", "3e-3"])
    capsys.readouterr()
    # the same command reuses the corpus, models and checkpoint
    checkpoint = (work / "checkpoints" / "checkpoint_best.pt").read_bytes()
    demo(argv)
    again = capsys.readouterr().out
    assert "holds a finished run" in again and "up to date" in again
    assert (work / "checkpoints" / "checkpoint_best.pt").read_bytes() == checkpoint
    assert json.loads((work / "results.json").read_text())["st"] == results["st"]
