"""Experiment grids in-process: the YAML schema and its errors, the cells' exact commands, the
claims that let several runners share a directory, and the check that a cell directory is not
reused for other commands. (tests/integration/test_experiment.py runs a grid for real.)"""
import json
import os
import socket
import subprocess
import sys
import time

import pytest
import yaml
from conftest import REPO

from llast_fairseq.experiments import runner
from llast_fairseq.experiments.grid import GridError, check_commands, load_grid
from llast_fairseq.experiments.runner import Heartbeat, check_cell_dirs, claims, fs_now, try_claim

RECIPE = {
    "data": "$GRID_DATA",
    "task": {"user-dir": str(REPO / "llast_fairseq"), "task": "llast_st", "llm-path": "models/llm",
             "prompt-template": "<audio>{src} to {tgt}:"},
    "train": {"arch": "llast_tiny", "whisper-path": "models/whisper.pt", "asr-augment": True,
              "criterion": "llast_cross_entropy", "optimizer": "adam", "lr": 0.001, "max-update": 10,
              "batch-size": 4, "cpu": True},
    "generate": {"beam": 2, "max-len-b": 8, "batch-size": 4, "scoring": "sacrebleu", "cpu": True},
    "tests": {"all": {"subset": "test"}, "fr-asr": {"subset": "test_fr_en", "asr": True},
              "other": {"subset": "test_x", "data": "/elsewhere"}},
}
GRID = {"recipe": RECIPE,
        "variants": {"base": {"cascade": True},
                     "r8": {"train": {"llm-lora-r": 8, "asr-augment": False, "lr": 0.002}, "seeds": [1]}},
        "seeds": [1, 2]}


def write(tmp_path, grid, name="grid.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


@pytest.fixture(autouse=True)
def data_env(monkeypatch):
    monkeypatch.setenv("GRID_DATA", "/data/corpus")


def test_cells_and_their_exact_commands(tmp_path):
    grid = load_grid(write(tmp_path, GRID))
    cells = grid.cells(tmp_path / "out")
    assert [(c.variant, c.seed) for c in cells] == [("base", 1), ("base", 2), ("r8", 1)]
    base1, r8 = cells[0], cells[2]
    assert base1.dir == tmp_path / "out" / "base" / "seed1"
    steps = dict(base1.steps)
    assert list(steps) == ["train", "generate-all", "generate-fr-asr", "generate-other", "cascade-all", "cascade-other"]
    ckpt = str(base1.dir / "checkpoints" / "checkpoint_best.pt")
    task = ["--user-dir", str(REPO / "llast_fairseq"), "--task", "llast_st", "--llm-path", "models/llm",
            "--prompt-template", "<audio>{src} to {tgt}:"]
    assert steps["train"] == [
        "fairseq-train", "/data/corpus", *task, "--arch", "llast_tiny", "--whisper-path", "models/whisper.pt",
        "--asr-augment", "--criterion", "llast_cross_entropy", "--optimizer", "adam", "--lr", "0.001",
        "--max-update", "10", "--batch-size", "4", "--cpu",
        "--seed", "1", "--save-dir", str(base1.dir / "checkpoints"), "--log-format", "json"]
    generate = ["--beam", "2", "--max-len-b", "8", "--batch-size", "4", "--scoring", "sacrebleu", "--cpu"]
    assert steps["generate-fr-asr"] == [
        "fairseq-generate", "/data/corpus", *task, *generate, "--path", ckpt, "--gen-subset", "test_fr_en",
        "--results-path", str(base1.dir / "fr-asr"), "--eval-task", "asr"]
    assert steps["generate-other"][1] == "/elsewhere"
    # the cascade decodes with fairseq-generate's decoding flags, not its scoring ones
    assert steps["cascade-all"] == [
        "llast-experiment", "cascade", "/data/corpus", "--subset", "test", "--checkpoint", ckpt,
        "--out", str(base1.dir / "all-cascade"), "--llm-path", "models/llm",
        "--beam", "2", "--max-len-b", "8", "--batch-size", "4", "--cpu"]
    # a variant's value replaces the recipe's in place; false drops the flag
    train = dict(r8.steps)["train"]
    assert "--asr-augment" not in train
    assert train[train.index("--lr") + 1] == "0.002" and train[-8:-6] == ["--llm-lora-r", "8"]
    assert all(not name.startswith("cascade") for name, _ in r8.steps)
    assert base1.script().splitlines()[-1] == (
        "llast-experiment cascade /data/corpus --subset test_x --checkpoint " + ckpt
        + f" --out {base1.dir / 'other-cascade'} --llm-path models/llm --beam 2 --max-len-b 8 --batch-size 4 --cpu"
        ).replace("/data/corpus", "/elsewhere")
    assert "'<audio>{src} to {tgt}:'" in base1.script()  # shell-quoted
    assert grid.baseline_variant == "base"


def test_a_recipe_file_beside_the_grid(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", RECIPE, "recipe.yaml")
    grid = load_grid(write(tmp_path / "sub", {**GRID, "recipe": "recipe.yaml"}))
    assert grid.recipe.tests["all"].subset == "test" and grid.recipe.data == "/data/corpus"


def with_(path, value, base=GRID):
    """A copy of ``base`` with the key at ``path`` (a tuple) set to ``value`` (None: deleted)."""
    grid = json.loads(json.dumps(base))
    node = grid
    for key in path[:-1]:
        node = node[key]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return grid


@pytest.mark.parametrize("grid, message", [
    (with_(("recipe", "tests"), None), r"recipe\.tests: missing"),
    (with_(("recipe", "tset"), {}), r"recipe: unknown key 'tset'"),
    (with_(("variants", "r8", "train", "seed"), 3), r"variants\.r8\.train\.seed: the runner sets --seed"),
    (with_(("recipe", "generate", "results-path"), "x"), r"recipe\.generate\.results-path: the runner sets"),
    (with_(("recipe", "train", "--lr"), 0.1), r"recipe\.train: flag '--lr': write flags as fairseq spells them"),
    (with_(("recipe", "train", "eval-bleu-args"), {"beam": 1}), r"recipe\.train\.eval-bleu-args: .*quote JSON"),
    (with_(("recipe", "data"), "$NOT_SET_ANYWHERE/x"), r"recipe\.data: environment variable \$NOT_SET_ANYWHERE is not set"),
    (with_(("recipe", "tests", "all", "asr"), "yes"), r"recipe\.tests\.all\.asr: expected true or false"),
    (with_(("variants", "a/b"), {}), r"variants: name 'a/b'"),
    (with_(("seeds",), [1, 1]), r"seeds: \[1, 1\] repeats a seed"),
    (with_(("seeds",), ["1"]), r"seeds\[0\]: expected a whole number"),
    (with_(("baseline",), "r16"), r"baseline: 'r16' is not one of the variants"),
    (with_(("recipe", "tests", "all-cascade"), {"subset": "x"}), r"recipe\.tests\.all-cascade: names ending in -cascade"),
    (with_(("variants", "base", "generate"), {"nbest": 2}), r"variants\.base: the cascade decodes with .* --nbest"),
])
def test_errors_name_the_file_and_the_key(tmp_path, grid, message):
    path = write(tmp_path, grid)
    with pytest.raises(GridError, match=message) as e:
        load_grid(path)
    assert str(path) in str(e.value)


def test_fairseq_parsers_check_every_flag(tmp_path):
    check_commands(load_grid(write(tmp_path, GRID)), tmp_path / "out")
    typo = with_(("variants", "r8", "train", "llm-lora-rr"), 8)
    with pytest.raises(GridError, match=r"variant r8: fairseq-train does not know --llm-lora-rr 8"):
        check_commands(load_grid(write(tmp_path, typo)), tmp_path / "out")


def test_a_cell_directory_with_other_commands_is_an_error(tmp_path):
    grid = load_grid(write(tmp_path, GRID))
    cell = grid.cells(tmp_path / "out")[0]
    cell.dir.mkdir(parents=True)
    (cell.dir / "command.sh").write_text(cell.script())
    check_cell_dirs(grid.cells(tmp_path / "out"))  # the same commands: reused
    changed = load_grid(write(tmp_path, with_(("recipe", "train", "lr"), 0.01)))
    with pytest.raises(GridError, match=r"command\.sh holds other commands .* delete .*base/seed1"):
        check_cell_dirs(changed.cells(tmp_path / "out"))


def test_claims_heartbeat_and_takeover(tmp_path, monkeypatch):
    cell, out = tmp_path / "cell", tmp_path
    me = {"host": socket.gethostname(), "pid": os.getpid()}
    now = fs_now(out, "test")
    first = try_claim(cell, me, now, stale_after=60)
    assert first == cell / "claim.1" and json.loads(first.read_text()) == me
    assert try_claim(cell, {"host": "other", "pid": 1}, now, stale_after=60) is None  # held, and fresh

    # the holder is alive but silent: after stale_after its claim is taken over (claim.2)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    beat = Heartbeat(first, interval=0.05)
    beat.proc = sleeper
    os.utime(first, (time.time() - 120, time.time() - 120))
    second = try_claim(cell, {"host": "other", "pid": 1}, fs_now(out, "test"), stale_after=60)
    assert second == cell / "claim.2"
    beat.start()
    beat.join(timeout=10)
    assert beat.lost and sleeper.wait(timeout=10) != 0  # it saw claim.2 and stopped its step
    assert claims(cell) == [first, second]

    # two runners that both saw claim.2 stale: the one creating claim.3 second gets nothing
    listing = claims(cell)
    assert try_claim(cell, me, fs_now(out, "test") + 1000, stale_after=60) == cell / "claim.3"
    with monkeypatch.context() as m:
        m.setattr(runner, "claims", lambda d: listing)  # the listing it took before
        assert try_claim(cell, {"host": "other", "pid": 1}, fs_now(out, "test") + 1000, stale_after=60) is None
    (cell / "claim.3").unlink()

    # a claim of a process of this host that has ended is stale at once
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    second.write_text(json.dumps({"host": socket.gethostname(), "pid": int(ended.stdout)}))
    assert try_claim(cell, me, fs_now(out, "test"), stale_after=60) == cell / "claim.3"


def test_heartbeat_keeps_a_claim_fresh(tmp_path):
    now = fs_now(tmp_path, "test")
    claim = try_claim(tmp_path / "cell", {"host": "h", "pid": 1}, now, stale_after=60)
    os.utime(claim, (now - 50, now - 50))
    beat = Heartbeat(claim, interval=0.05)
    beat.start()
    time.sleep(0.3)
    beat.stop()
    assert not beat.lost and claim.stat().st_mtime > now - 5
    assert try_claim(tmp_path / "cell", {"host": "other", "pid": 2}, fs_now(tmp_path, "test"), 60) is None
