"""`make demo`'s path on a tiny corpus: corpus, real tiny.en, random-init LLM, fairseq-train,
fairseq-generate --beam 5 (translation and transcription), BLEU/WER report and the curve."""
import json
import runpy
import subprocess
import sys

import pytest

from conftest import REPO


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
    assert set(results["st"]) == {"fr-en", "de-en", "es-en", "en-fr"}
    assert set(results["asr_wer"]) == {"fr", "de", "es", "en"}
    assert set(results["baseline_bleu"]) == {"fr_en", "de_en", "es_en", "en_fr"}
    assert all(0 <= b <= 100 for b in results["st"].values())
    assert [u for u, _, _ in results["dev_curve"]] == [6, 12]  # dev BLEU at each validation
    png = (work / "training_curve.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    for d in ("fr->en", "de->en", "es->en", "en->fr"):
        assert f"  {d} [" in out  # example translations beside their references
    for task in ("st", "asr"):  # every test row decoded
        lines = next((work / task).glob("generate-*.txt")).read_text().splitlines()
        assert sum(l.startswith("D-") for l in lines) == 32
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
