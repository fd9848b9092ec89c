"""llast-benchmark: the installed command measures what it says, and its agreement check can fail."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from llast_fairseq.benchmark import _child, agreement

BIN = Path(sys.executable).parent


def test_agreement_tells_ranking_from_search():
    ours = [[[1, 2], [1, 3]], [[4], [5]]]
    assert agreement(ours, ours) == {"best_identical": "2/2", "same_beams": "2/2"}
    reranked = [[[1, 3], [1, 2]], [[4], [6]]]  # sentence 0 ranked differently, sentence 1 searched differently
    assert agreement(ours, reranked) == {"best_identical": "1/2", "same_beams": "1/2"}


def test_benchmark_command_writes_its_table(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run([BIN / "llast-benchmark", "--presets", "tiny", "--sections", "encoding", "decoding", "data_check",
                          "--data-check-rows", "200", "--jobs", "2",
                          "--work-dir", tmp_path / "work", "--json", out],
                         capture_output=True, text=True, check=True)
    rows = json.loads(out.read_text())
    # measured by two processes at once, reported in the tables' order
    assert "benchmark: 2 process(es) of 1 thread(s)" in run.stdout
    assert [(r["section"], r.get("clips"), r.get("dtype")) for r in rows] == [
        ("decoding", "30 s", "float32"), ("decoding", "5 s", "float32"), ("encoding", None, None),
        ("data_check", None, None)]
    encoding = [r for r in rows if r["section"] == "encoding"]
    assert len(encoding) == 1 and encoding[0]["padded_30s_s"] > 0 and encoding[0]["trimmed_s"] > 0
    decoding = {r["clips"]: r for r in rows if r["section"] == "decoding" and r["dtype"] == "float32"}
    assert decoding["30 s"]["prefix_positions"] > 1500 > decoding["5 s"]["prefix_positions"]
    # the shared prefix must not change the search: same final beams as HF and as recomputation
    assert decoding["30 s"]["hf_same_beams"] == "8/8"
    assert decoding["5 s"]["recompute_same_beams"] == "8/8"
    assert "| tiny |" in run.stdout and "| recompute_vs_ours |" in run.stdout  # a column only the 5 s row has
    check = next(r for r in rows if r["section"] == "data_check")
    assert check["rows"] == 200  # every row checked, and a second load reads the cached verdict
    assert check["cached_check_s"] < check["first_check_s_1_threads"] / 3


def test_bf16_decoding_is_refused_where_bf16_is_emulated(monkeypatch, capsys, tmp_path):
    from llast_fairseq.cli import benchmark as cli
    from llast_fairseq.models import autocast

    monkeypatch.setattr(autocast, "cpu_bf16_speedup", lambda: 1 / 75)  # what an AVX2-only CPU measures
    autocast.bf16_autocast_pays.cache_clear()
    try:
        with pytest.raises(SystemExit):
            cli.main(["--sections", "decoding_bf16", "--presets", "tiny", "--jobs", "1",
                      "--work-dir", str(tmp_path), "--json", str(tmp_path / "bench.json")])
    finally:
        autocast.bf16_autocast_pays.cache_clear()
    err = capsys.readouterr().err
    assert "decoding_bf16: this CPU" in err and "no native bfloat16" in err and "75x slower than float32" in err


def test_generate_memory_measures_the_peak_of_the_command_it_runs(tmp_path):
    """generate_memory's yardstick: the peak resident memory of the child (here one that waits
    1 s, then holds 200 MB for a moment), not this process's, and the child's peak by half its
    run (before the 200 MB); a command that fails raises with its log."""
    hold = "import time; time.sleep(1); b = b'x' * (200 * 2**20); time.sleep(0.2)"
    peak, at_half = (kb / 2**10 for kb in _child(tmp_path / "hold.log", sys.executable, "-c", hold))
    assert 200 <= peak < 240, peak
    assert 0 < at_half < 100, at_half
    with pytest.raises(RuntimeError, match="failed, see .*fail.log"):
        _child(tmp_path / "fail.log", sys.executable, "-c", "raise SystemExit(3)")
