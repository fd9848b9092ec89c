"""llast-experiment end to end on the tiny models, through the real CLIs: a grid of one variant
(decoded end to end and through the cascade) and two seeds, i.e. two cells, with translation and
transcription tests.

One run covers: two runners sharing the directory (a llast-experiment process and this one), each
claiming a cell; the process killed (SIGKILL) while its fairseq-train is between checkpoints, and
this runner taking its cell over, where fairseq-train continues from the checkpoint; the report's
numbers against the cells' own outputs; a finished grid not run again; a changed command refused.
"""
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sacrebleu
import torch
import yaml
from conftest import REPO

from llast_fairseq.cli.experiment import main as experiment_main
from llast_fairseq.evaluation import load_manifest, read_generate_output, wer
from llast_fairseq.experiments.grid import load_grid
from llast_fairseq.experiments.runner import claims, run_grid

BIN = Path(sys.executable).parent
MAX_UPDATE = 10  # a checkpoint every 3 updates: the kill comes long before the end
pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")


def grid_file(path: Path, corpus: Path, models: Path, lr=1e-2) -> Path:
    grid = {
        "recipe": {
            "data": str(corpus),
            "task": {"user-dir": str(REPO / "llast_fairseq"), "task": "llast_st", "llm-path": str(models / "llm")},
            "train": {"arch": "llast_tiny", "whisper-path": str(models / "whisper.pt"), "asr-augment": True,
                      "cache-whisper-states": True, "eval-bleu": True,
                      "eval-bleu-args": '{"beam": 1, "max_len_b": 6}', "criterion": "llast_cross_entropy",
                      "optimizer": "adam", "lr": lr, "lr-scheduler": "inverse_sqrt", "warmup-updates": 2,
                      "max-update": MAX_UPDATE, "batch-size": 4, "save-interval-updates": 3,
                      "validate-interval-updates": 3,
                      "validate-interval": 1000, "save-interval": 1000, "train-subset": "train",
                      "valid-subset": "test_fr_en", "num-workers": 0, "log-interval": 1, "cpu": True},
            # min-len: the random-init model must not stop at once, or every output would be empty
            "generate": {"beam": 2, "max-len-b": 6, "min-len": 2, "batch-size": 4, "cpu": True},
            "checkpoint": "checkpoint_last.pt",
            "tests": {"all": {"subset": "test"}, "fr-asr": {"subset": "test_fr_en", "asr": True}},
        },
        "variants": {"tiny": {"cascade": True}},
        "seeds": [1, 2],
    }
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


def wait_for(condition, what: str, timeout: float = 300):
    end = time.time() + timeout
    while not condition():
        assert time.time() < end, f"timed out waiting for {what}"
        time.sleep(0.1)


def processes_with(text: str) -> list:
    """PIDs whose command line holds ``text``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if text in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                found.append(int(pid))
        except OSError:
            pass
    return found


def hyps_refs(path: Path, rows: list, field: str = "tgt_text") -> dict:
    """{(src, tgt): (hypotheses, manifest references)} of a generate file's D- lines."""
    out = {}
    for i, _, hyp in read_generate_output(str(path)):
        row = rows[i]
        hyps, refs = out.setdefault((row["src_lang"], row["tgt_lang"]), ([], []))
        hyps.append(hyp)
        refs.append(row[field])
    return out


def test_grid_killed_resumed_shared_and_reported(tiny_corpus, tiny_models, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    grid_path = grid_file(tmp_path / "grid.yaml", tiny_corpus, tiny_models)
    out = tmp_path / "grid"
    seed1, seed2 = out / "tiny" / "seed1", out / "tiny" / "seed2"

    # runner B, a llast-experiment process, claims seed 1; this process (runner C) then shares the
    # directory and runs seed 2, while B is killed (SIGKILL) once seed 1 has its first checkpoint
    # (update 3 of 10); C then takes the killed cell over and its fairseq-train continues
    b = subprocess.Popen([str(BIN / "llast-experiment"), "run", str(grid_path), "--dir", str(out)], cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: any(json.loads(c.read_text() or "{}").get("pid") == b.pid for c in claims(seed1)),
             "runner B's claim on seed 1")
    killed = {}

    def kill_b():
        wait_for(lambda: (seed1 / "checkpoints" / "checkpoint_last.pt").exists(), "the first checkpoint")
        b.send_signal(signal.SIGKILL)
        killed["output"] = b.communicate()[0]
        killed["train"] = (seed1 / "train.done").exists()
        wait_for(lambda: not processes_with(str(seed1)), "fairseq-train to die with its runner", 10)

    killer = threading.Thread(target=kill_b)
    killer.start()
    said = []
    assert run_grid(load_grid(grid_path), out, say=said.append) == []
    killer.join()
    assert b.returncode == -signal.SIGKILL and not killed["train"], killed["output"][-3000:]
    assert "cell tiny seed 1 (1/2): running" in killed["output"] and "cell tiny seed 2" not in killed["output"]
    ran = [s.split(" (")[0] for s in said if s.startswith("cell ") and "): running" in s]
    assert ran == ["cell tiny seed 2", "cell tiny seed 1"], said
    assert any("tiny seed 1: taking over from a stale claim" in s for s in said)
    assert any("tiny seed 1: resuming" in s for s in said)
    assert any(s.startswith("cell tiny seed 2 done in") and "cells done" in s and "min left" in s for s in said)
    train_log = (seed1 / "train.log").read_text()
    first, second = train_log.split("# llast-experiment")[1:]  # the killed attempt and the resumed one
    resumed_at = re.search(r"Loaded checkpoint .*\(epoch \d+ @ (\d+) updates\)", second)
    assert "Loaded checkpoint" not in first and resumed_at and 3 <= int(resumed_at.group(1)) < MAX_UPDATE
    updates = [int(json.loads(line.split("| train_inner | ", 1)[1])["num_updates"])
               for line in second.splitlines() if "| train_inner | " in line]
    assert updates == list(range(int(resumed_at.group(1)) + 1, MAX_UPDATE + 1))  # continued, not started over
    for cell in (seed1, seed2):
        assert (cell / "done").exists() and (cell / "command.sh").read_text().startswith("#!/bin/sh")

    # the report, checked against the cells' outputs
    assert experiment_main(["report", str(grid_path), "--dir", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    rows = {r["decoding"]: r for r in report["rows"]}
    assert set(rows) == {"e2e", "cascade"} and rows["e2e"]["seeds"] == [1, 2]
    test_rows, asr_rows = load_manifest(str(tiny_corpus), "test"), load_manifest(str(tiny_corpus), "test_fr_en")
    for decoding, folder in (("e2e", "all"), ("cascade", "all-cascade")):
        per_seed = [hyps_refs(cell / folder / "generate-test.txt", test_rows) for cell in (seed1, seed2)]
        for (src, tgt), _ in per_seed[0].items():
            bleu = [sacrebleu.BLEU(lowercase=tgt == "en").corpus_score(o[src, tgt][0], [o[src, tgt][1]]).score
                    for o in per_seed]
            chrf = [sacrebleu.CHRF().corpus_score(o[src, tgt][0], [o[src, tgt][1]]).score for o in per_seed]
            got = rows[decoding]["tests"]["all"][f"{src}-{tgt}"]
            assert got["bleu"]["values"] == pytest.approx(bleu) and got["chrf"]["values"] == pytest.approx(chrf)
            assert got["bleu"]["mean"] == pytest.approx(statistics.mean(bleu))
            assert got["bleu"]["sd"] == pytest.approx(statistics.stdev(bleu))
            assert got["n"] == len(per_seed[0][src, tgt][0]) and got["bleu"]["n"] == 2
    asr = [hyps_refs(cell / "fr-asr" / "generate-test_fr_en.txt", asr_rows, "src_text")[("fr", "en")]
           for cell in (seed1, seed2)]
    assert rows["e2e"]["tests"]["fr-asr"]["fr"]["wer"]["values"] == pytest.approx([100 * wer(r, h) for h, r in asr])
    state = torch.load(seed1 / "checkpoints" / "checkpoint_last.pt")
    assert rows["e2e"]["trained_params"] == sum(t.numel() for t in state["model"].values())
    assert 0 < rows["e2e"]["train_seconds"]["mean"]
    for cell, seconds in zip((seed1, seed2), rows["e2e"]["seconds_per_utterance"]["all"]["values"]):
        translated = [line for line in (cell / "generate-all.log").read_text().splitlines() if "Translated 8 sentences" in line]
        assert seconds == pytest.approx(float(translated[-1].split(" in ")[1].split("s")[0]) / 8)
    assert rows["cascade"]["times_end_to_end"]["all"]["n"] == 2
    pairs = {(s["a_decoding"], s["b_decoding"], s["direction"]) for s in report["significance"]}
    assert pairs == {("e2e", "cascade", d) for d in ("fr-en", "de-en", "en-fr")}
    assert all(s["seeds"] == [1, 2] and all(0 < p <= 1 for p in s["p"]) for s in report["significance"])
    assert (out / "bleu_vs_params.png").stat().st_size > 0 and (out / "dev_curves.png").stat().st_size > 0
    dev = [{int(r["test_fr_en_num_updates"]): float(r["test_fr_en_bleu"]) for r in map(json.loads, (
        line.split("| test_fr_en | ", 1)[1] for line in (cell / "train.log").read_text().splitlines()
        if "| test_fr_en | " in line))} for cell in (seed1, seed2)]
    assert [p["update"] for p in rows["e2e"]["dev"]] == sorted(dev[1]) and max(dev[1]) == MAX_UPDATE
    assert rows["e2e"]["dev"][-1]["bleu"] == pytest.approx((dev[0][MAX_UPDATE] + dev[1][MAX_UPDATE]) / 2)
    assert "| tiny | cascade | 2 |" in (out / "report.md").read_text()

    # done cells are not run again; a changed command for a cell directory is an error
    mtime = (seed1 / "train.log").stat().st_mtime
    said.clear()
    assert run_grid(load_grid(grid_path), out, say=said.append) == []
    assert said == ["2/2 cells done"] and (seed1 / "train.log").stat().st_mtime == mtime
    capsys.readouterr()
    changed = grid_file(tmp_path / "changed.yaml", tiny_corpus, tiny_models, lr=5e-3)
    assert experiment_main(["run", str(changed), "--dir", str(out)]) == 1
    assert "command.sh holds other commands than the grid gives cell tiny seed 1" in capsys.readouterr().err
