"""Training as it runs for days: killed and started again with the same command, and data-parallel
across processes under torchrun (gloo on CPU), with the real fairseq-train and fairseq-generate.

Every run here uses the same recipe: the Whisper state cache, --eval-bleu, a mid-epoch checkpoint
every 3 updates, 8 updates of 4 examples (16 examples with ASR twins: 4 updates per epoch). The
reference run is one process with --batch-size 2 --update-freq 2.
"""
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO

BIN = Path(sys.executable).parent  # fairseq-train, fairseq-generate and torchrun of this environment
# one thread per process, as torchrun sets for its workers: the tiny models gain nothing from more,
# and on a busy machine idle OpenMP threads spinning for a core made training 20x slower here
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
MAX_UPDATE = 8
SAVE_EVERY = 3

# fairseq-train, killed by the kernel half-way through its second write of checkpoint_last.pt (or
# of a file beside it whose name starts so): at that open, the process's file-size limit is set to
# half the existing checkpoint_last.pt, and SIGXFSZ (ignored by Python) is given its default
# action, which ends the process with no chance to clean up, like a kill -9 at that moment.
KILL_MID_WRITE = """
import os, resource, signal, sys
def kill_half_way_through_rewriting_checkpoint_last(event, args):
    if event != "open" or not isinstance(args[0], str) or "w" not in (args[1] or ""):
        return
    last = os.path.join(os.path.dirname(args[0]), "checkpoint_last.pt")
    if os.path.basename(args[0]).startswith("checkpoint_last") and os.path.exists(last):
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file
        limit = os.path.getsize(last) // 2
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.addaudithook(kill_half_way_through_rewriting_checkpoint_last)
from fairseq_cli.train import cli_main
cli_main()
"""


def train_args(corpus: Path, models: Path, save_dir: Path, *extra) -> list:
    """fairseq-train's arguments for the recipe above."""
    return [str(a) for a in (
        corpus, "--user-dir", REPO / "llast_fairseq", "--task", "llast_st", "--llm-path", models / "llm",
        "--asr-augment", "--arch", "llast_tiny", "--whisper-path", models / "whisper.pt",
        "--cache-whisper-states", "--eval-bleu", "--eval-bleu-args", '{"beam": 1, "max_len_b": 20}',
        "--criterion", "llast_cross_entropy", "--label-smoothing", "0.1", "--optimizer", "adam",
        "--lr", "1e-2", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "2", "--clip-norm", "1.0",
        "--max-update", MAX_UPDATE, "--save-interval-updates", SAVE_EVERY,
        "--save-interval", 1000, "--validate-interval", 1000,  # no end-of-epoch saves in between
        "--train-subset", "train", "--valid-subset", "test_fr_en", "--save-dir", save_dir,
        "--log-format", "json", "--log-interval", "1", "--num-workers", "0", "--cpu", "--seed", "1",
        *extra,
    )]


def run(argv, cwd) -> str:
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, f"{argv[0]} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout + proc.stderr


def train_losses(log: str) -> dict:
    """{update: training loss} from fairseq-train's json log (--log-interval 1)."""
    rows = [json.loads(line.split("| train_inner | ", 1)[1]) for line in log.splitlines()
            if "| train_inner | " in line]
    return {int(row["num_updates"]): float(row["loss"]) for row in rows}


def valid_bleu(log: str) -> dict:
    """{update: dev BLEU} from fairseq-train's json log."""
    rows = [json.loads(line.split("| test_fr_en | ", 1)[1]) for line in log.splitlines()
            if "| test_fr_en | " in line]
    return {int(row["test_fr_en_num_updates"]): float(row["test_fr_en_bleu"]) for row in rows}


def checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu")  # torch's weights_only default


def updates_in(path: Path) -> int:
    return checkpoint(path)["optimizer_history"][-1]["num_updates"]


def assert_identical(a, b, where="checkpoint"):
    """Nested dicts/lists of tensors and numbers, equal bit for bit."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    elif torch.is_tensor(a):
        assert torch.equal(a, b), f"{where} differs by up to {(a.double() - b.double()).abs().max():.3g}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_training_state(a: Path, b: Path):
    """The trained weights, Adam's moments and steps, the lr scheduler, the update count and the
    data position, bit for bit."""
    sa, sb = checkpoint(a), checkpoint(b)
    assert_identical(sa["model"], sb["model"], "model")
    assert_identical(sa["last_optimizer_state"], sb["last_optimizer_state"], "optimizer")
    assert_identical(sa["optimizer_history"][-1], sb["optimizer_history"][-1], "optimizer_history")
    assert_identical(sa["extra_state"]["train_iterator"], sb["extra_state"]["train_iterator"], "iterator")


def hypotheses(corpus: Path, models: Path, ckpt: Path, out: Path) -> list:
    """fairseq-generate --beam 5 on the test set: [(score, detokenized hypothesis)] by row."""
    run([BIN / "fairseq-generate", corpus, "--user-dir", REPO / "llast_fairseq", "--task", "llast_st",
         "--llm-path", models / "llm", "--path", ckpt, "--gen-subset", "test", "--beam", "5",
         "--max-len-b", "20", "--batch-size", "4", "--results-path", out, "--cpu"], cwd=out)
    rows = [line.split("\t") for line in (out / "generate-test.txt").read_text().splitlines()
            if line.startswith("D-")]
    return [(float(score), text) for _, score, text in sorted(rows, key=lambda r: int(r[0][2:]))]


@pytest.fixture(scope="module")
def reference(tiny_corpus, tiny_models, tmp_path_factory):
    """The uninterrupted single-process run: its save dir and log."""
    save = tmp_path_factory.mktemp("reference")
    log = run([BIN / "fairseq-train", *train_args(tiny_corpus, tiny_models, save, "--batch-size", "2",
                                                 "--update-freq", "2")], cwd=save)
    assert sorted(train_losses(log)) == list(range(1, MAX_UPDATE + 1))
    return save, log


def test_sigkill_between_checkpoints_then_the_same_command_resumes_exactly(
        reference, tiny_corpus, tiny_models, tmp_path):
    ref_save, ref_log = reference
    argv = [BIN / "fairseq-train", *train_args(tiny_corpus, tiny_models, tmp_path, "--batch-size", "2",
                                               "--update-freq", "2")]
    proc = subprocess.Popen([str(a) for a in argv], cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    first = []
    for line in proc.stdout:  # kill -9 as soon as the first checkpoint is saved
        first.append(line)
        if "Saved checkpoint" in line:
            proc.kill()
            break
    assert proc.wait() == -signal.SIGKILL, "".join(first)[-4000:]
    proc.stdout.close()
    assert updates_in(tmp_path / "checkpoint_last.pt") == SAVE_EVERY  # killed before the next one

    log = run(argv, cwd=tmp_path)
    assert f"(epoch 1 @ {SAVE_EVERY} updates)" in log  # mid-epoch: the iterator position came back
    loaded = log.index("Loaded checkpoint")
    assert "Whisper states: encoding 8 utterances" in log[loaded:]  # the cache refilled
    ref_losses = train_losses(ref_log)
    assert train_losses(log) == {u: ref_losses[u] for u in range(SAVE_EVERY + 1, MAX_UPDATE + 1)}
    assert_same_training_state(ref_save / "checkpoint_last.pt", tmp_path / "checkpoint_last.pt")


def test_a_kill_while_checkpoint_last_is_rewritten_leaves_the_previous_one(
        reference, tiny_corpus, tiny_models, tmp_path):
    ref_save, _ = reference
    args = train_args(tiny_corpus, tiny_models, tmp_path, "--batch-size", "2", "--update-freq", "2")
    killed = subprocess.run([sys.executable, "-c", KILL_MID_WRITE, *args], cwd=tmp_path, env=ENV,
                            capture_output=True, text=True)
    assert killed.returncode == -signal.SIGXFSZ, killed.stdout[-4000:] + killed.stderr[-4000:]
    assert (tmp_path / f"checkpoint_2_{2 * SAVE_EVERY}.pt").exists()  # killed at the second save
    assert updates_in(tmp_path / "checkpoint_last.pt") == SAVE_EVERY  # the first one, whole

    log = run([BIN / "fairseq-train", *args], cwd=tmp_path)
    assert f"(epoch 1 @ {SAVE_EVERY} updates)" in log
    assert_same_training_state(ref_save / "checkpoint_last.pt", tmp_path / "checkpoint_last.pt")


@pytest.fixture(scope="module")
def reference_hypotheses(reference, tiny_corpus, tiny_models, tmp_path_factory):
    save, _ = reference
    return hypotheses(tiny_corpus, tiny_models, save / "checkpoint_last.pt", tmp_path_factory.mktemp("generate"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("nodes", [1, 2], ids=["one node, 2 processes", "two nodes, 1 process each"])
def test_torchrun_two_processes_match_one_process_with_update_freq_2(
        nodes, reference, reference_hypotheses, tiny_corpus, tiny_models, tmp_path):
    """torchrun, 2 processes (gloo), --batch-size 2 each: the global batch of the reference, whose
    update accumulates the same two batches. Bit for bit: every gradient element is the sum of the
    same two numbers either way, and DDP's division by 2 and fairseq's multiplication by 2 are
    exact. (With more processes the order of the sum, and so the last bits, may differ.)"""
    ref_save, ref_log = reference
    save = tmp_path / "save"
    train = [BIN / "fairseq-train", *train_args(tiny_corpus, tiny_models, save, "--batch-size", "2",
                                                "--distributed-backend", "gloo")]
    if nodes == 1:
        launches = [[BIN / "torchrun", "--standalone", "--nproc-per-node", "2"]]
    else:  # as on two machines: the head node's address and a port, each node its rank
        port = free_port()
        launches = [[BIN / "torchrun", "--nnodes", "2", "--node-rank", rank, "--nproc-per-node", "1",
                     "--master-addr", "127.0.0.1", "--master-port", port] for rank in range(nodes)]
    logs = [tmp_path / f"node{rank}.log" for rank in range(nodes)]
    procs = []
    for launch, log in zip(launches, logs):
        with log.open("w") as out:
            procs.append(subprocess.Popen([str(a) for a in launch + train], cwd=tmp_path, env=ENV,
                                          stdout=out, stderr=subprocess.STDOUT))
    for proc, log in zip(procs, logs):
        assert proc.wait(timeout=600) == 0, log.read_text()[-4000:]
    log = logs[0].read_text()  # rank 0 logs at INFO, the others at WARNING
    assert "distributed init (rank 0): env://" in log and "training on 2 devices (GPUs/TPUs)" in log
    assert "Whisper states: encoding 8 utterances" in log

    assert train_losses(log) == train_losses(ref_log)
    assert valid_bleu(log) == valid_bleu(ref_log)
    state, ref_state = checkpoint(save / "checkpoint_last.pt"), checkpoint(ref_save / "checkpoint_last.pt")
    assert all("lora_" in key or key.startswith("encoder.adaptor.") for key in state["model"])  # trained only
    assert_identical(state["model"], ref_state["model"], "model")
    assert_identical(state["last_optimizer_state"], ref_state["last_optimizer_state"], "optimizer")
    assert hypotheses(tiny_corpus, tiny_models, save / "checkpoint_last.pt", tmp_path) == reference_hypotheses
