"""`make demo`'s path on a tiny corpus: corpus, real tiny.en, random-init LLM, fairseq-train,
fairseq-generate --beam 5 (translation and transcription), BLEU/WER report and the curve."""
import json
import subprocess
import sys

from conftest import REPO


def test_demo_end_to_end_on_the_tiny_preset(tmp_path):
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
    # a second run reuses the corpus, models and checkpoint
    again = subprocess.run(
        [sys.executable, REPO / "scripts" / "run_demo.py", "--preset", "tiny", "--cache-dir", cache,
         "--work-dir", work], capture_output=True, text=True)
    assert again.returncode == 0 and "holds a finished run" in again.stdout
    assert "up to date" in again.stdout
    # a different training command never reuses (or resumes) that run
    other = subprocess.run(
        [sys.executable, REPO / "scripts" / "run_demo.py", "--preset", "tiny", "--cache-dir", cache,
         "--work-dir", work, "--lr", "3e-3"], capture_output=True, text=True)
    assert other.returncode != 0 and "holds a run of another fairseq-train command" in other.stderr
    assert (work / "checkpoints" / "checkpoint_best.pt").exists()
