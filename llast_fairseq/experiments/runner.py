"""Running a grid's cells with the real CLIs: resumable, and shared by several runners.

A cell directory (``DIR/<variant>/seed<k>/``) holds ``command.sh`` (its commands, shell-quoted),
one ``<step>.log`` per step (``train.log``, ``generate-<test>.log``, ...), the checkpoints, the
generate outputs per test (``<test>/generate-<subset>.txt``), ``scores.json`` and the ``done``
marker, written last.

- **Resume.** A cell with ``done`` is never run again. A step that ended writes ``<step>.done``;
  an interrupted cell runs its unfinished steps again with the same commands, so fairseq-train
  continues from ``checkpoint_last.pt`` and the decodes start over. A cell directory whose
  ``command.sh`` holds other commands than the grid now gives is an error, never reused.
- **Several runners** (GPUs, machines) may share ``DIR``. A runner claims a cell by creating
  ``claim.<n>`` with O_CREAT|O_EXCL (one creator wins) and touches it every ``stale_after / 10``
  seconds while it runs the cell. A claim whose file is older than ``stale_after`` seconds (its
  runner died), or whose runner was on this host and is gone, is stale: the next runner takes
  the cell over by creating ``claim.<n+1>``, and a runner that finds a newer claim than its own
  stops that cell. Ages are measured against the shared filesystem's clock (the modification
  time of a file the runner has just touched in ``DIR``), so the machines' clocks need not agree.
  A runner ends when every cell is done or failed on it, waiting meanwhile for cells that run
  elsewhere (looking every few seconds), to take them over if their runner dies.
"""
import ctypes
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, List, Optional

from .grid import Cell, Grid, GridError
from .report import TRAIN_TAGS, log_record, score_cell

BIN = Path(sys.executable).parent  # fairseq-train, fairseq-generate and llast-experiment of this environment
DONE = "done"


class CellFailed(Exception):
    """A step of a cell exited with an error; the message names its log."""


# ----------------------------------------------------------------------------- claims

def fs_now(out_dir: Path, owner: str) -> float:
    """The shared filesystem's current time: the mtime of a file this runner has just touched."""
    probe = out_dir / f".clock-{owner}"
    probe.touch()
    os.utime(probe)
    return probe.stat().st_mtime


def claims(cell_dir: Path) -> List[Path]:
    """The cell's claim files, oldest generation first."""
    found = [(int(p.name.split(".")[1]), p) for p in cell_dir.glob("claim.*") if p.name.split(".")[1].isdigit()]
    return [p for _, p in sorted(found)]


def holder(claim: Path, now: float, stale_after: float) -> Optional[dict]:
    """Who holds the cell through ``claim`` (its JSON: host, pid, ...), or None if it is stale."""
    try:
        age = now - claim.stat().st_mtime
        info = json.loads(claim.read_text() or "{}")
    except (FileNotFoundError, json.JSONDecodeError):  # released, or being written: ask again later
        return {"host": "?", "pid": 0} if claim.exists() else None
    if age > stale_after:
        return None
    if info.get("host") == socket.gethostname() and not _alive(int(info.get("pid", 0))):
        return None
    return info


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def try_claim(cell_dir: Path, owner: dict, now: float, stale_after: float) -> Optional[Path]:
    """Claim the cell (a new ``claim.<n>``) if no live runner holds it; None if another does."""
    cell_dir.mkdir(parents=True, exist_ok=True)
    held = claims(cell_dir)
    if held and holder(held[-1], now, stale_after) is not None:
        return None
    generation = int(held[-1].name.split(".")[1]) + 1 if held else 1
    path = cell_dir / f"claim.{generation}"
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:  # another runner was quicker
        return None
    with os.fdopen(fd, "w") as f:
        json.dump(owner, f)
    return path


class Heartbeat(threading.Thread):
    """Touches a claim every ``interval`` seconds; if a newer claim of the cell appears (another
    runner took it over), sets ``lost`` and kills the running step."""

    def __init__(self, claim: Path, interval: float):
        super().__init__(daemon=True)
        self.claim, self.interval = claim, interval
        self.lost = False
        self.proc: Optional[subprocess.Popen] = None
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.wait(self.interval):
            if claims(self.claim.parent)[-1:] != [self.claim]:
                self.lost = True
                if self.proc is not None and self.proc.poll() is None:
                    self.proc.kill()
                return
            os.utime(self.claim)

    def stop(self):
        self.stopped.set()
        self.join()


# ----------------------------------------------------------------------------- cells

def command_lines(script: str) -> List[str]:
    return [line for line in script.splitlines() if line and not line.startswith("#")]


def check_cell_dirs(cells: List[Cell]):
    """Every existing cell directory holds the commands the grid gives it now."""
    for cell in cells:
        path = cell.dir / "command.sh"
        if not path.exists():
            continue
        old, new = command_lines(path.read_text(encoding="utf-8")), command_lines(cell.script())
        if old != new:
            diff = next(((a, b) for a, b in zip(old, new) if a != b), (len(old), len(new)))
            raise GridError(f"{path} holds other commands than the grid gives cell {cell.name} now "
                            f"(first difference: {diff[0]!r} -> {diff[1]!r}); to keep that run, pass "
                            f"another --dir; to run the cell again, delete {cell.dir}")


def _die_with_parent():
    """In the child: SIGKILL when the runner dies, so no orphan keeps writing into a cell that
    another runner takes over (Linux prctl PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)


def run_step(argv: List[str], log: Path, env: dict, heartbeat: Heartbeat, on_line: Callable[[str], None]) -> int:
    """Run one command, appending its output to ``log``; returns its exit code."""
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"# llast-experiment {time.strftime('%Y-%m-%d %H:%M:%S')}: {shlex.join(argv)}\n")
        f.flush()
        with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                              preexec_fn=_die_with_parent) as proc:
            heartbeat.proc = proc
            for line in proc.stdout:
                f.write(line)
                f.flush()
                on_line(line)
    return proc.returncode


class StepProgress:
    """Condensed progress lines from a step's output: dev results, resumes, and the training
    update at most once a minute."""

    def __init__(self, say: Callable[[str], None], cell: Cell, max_update: Optional[str]):
        self.say, self.cell, self.max_update = say, cell, max_update
        self.last = 0.0

    def __call__(self, line: str):
        if "Loaded checkpoint" in line:
            self.say(f"  {self.cell.name}: resuming: {line.rsplit(' | ', 1)[-1].strip()}")
            return
        tag, rec = log_record(line)
        if tag is None:
            return
        if tag == "train_inner" and time.time() - self.last >= 60:
            self.last = time.time()
            self.say(f"  {self.cell.name}: update {rec.get('num_updates')}/{self.max_update or '?'}, "
                     f"loss {rec.get('loss')}")
        elif tag not in TRAIN_TAGS and f"{tag}_num_updates" in rec:
            bleu = f", BLEU {rec[tag + '_bleu']}" if f"{tag}_bleu" in rec else ""
            self.say(f"  {self.cell.name}: {tag} at update {rec[tag + '_num_updates']}: loss {rec.get(tag + '_loss')}{bleu}")


def write_atomic(path: Path, text: str):
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def run_cell(grid: Grid, cell: Cell, heartbeat: Heartbeat, env: dict, say: Callable[[str], None]) -> dict:
    """Run the cell's unfinished steps, then score it; returns its scores."""
    start = time.time()
    if not (cell.dir / "command.sh").exists():
        write_atomic(cell.dir / "command.sh", cell.script())
    max_update = {**grid.recipe.train, **grid.variants[cell.variant].train}.get("max-update")
    for name, argv in cell.steps:
        if (cell.dir / f"{name}.done").exists():
            continue
        log = cell.dir / f"{name}.log"
        say(f"  {cell.name}: {name} (log: {log})")
        code = run_step(argv, log, env, heartbeat, StepProgress(say, cell, max_update))
        if heartbeat.lost:
            return {}
        if code != 0:
            tail = "".join(log.read_text(encoding="utf-8", errors="replace").splitlines(True)[-15:])
            raise CellFailed(f"{cell.name}: {argv[0]} exited with {code}; full log {log}; its end:\n{tail}")
        (cell.dir / f"{name}.done").touch()
    scores = score_cell(cell, time.time() - start)
    write_atomic(cell.dir / "scores.json", json.dumps(scores, indent=1, ensure_ascii=False) + "\n")
    write_atomic(cell.dir / DONE, "")
    return scores


def run_grid(grid: Grid, out_dir, gpu: Optional[str] = None, stale_after: float = 600,
             say: Callable[[str], None] = print) -> List[str]:
    """Run every cell of ``grid`` under ``out_dir`` that is not done or run by another runner;
    returns the names of the cells that failed here."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cells = grid.cells(out_dir)
    check_cell_dirs(cells)
    # the CLIs of this environment first; their log lines as they come, not when a buffer fills
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    host = socket.gethostname()
    owner = {"host": host, "pid": os.getpid(), "cwd": os.getcwd(), "gpu": gpu}
    me = f"{host}-{os.getpid()}"
    interval = max(stale_after / 10, 0.1)
    failed, waiting = [], None
    try:
        while True:
            todo = [c for c in cells if not (c.dir / DONE).exists() and c.name not in failed]
            if not todo:
                break
            now = fs_now(out_dir, me)
            cell = claim = None
            for c in todo:
                claim = try_claim(c.dir, owner, now, stale_after)
                if claim:
                    cell = c
                    break
            if cell is None:
                if waiting != len(todo):
                    say(f"waiting: {len(todo)} cell(s) run by other runners ({', '.join(c.name for c in todo)}); "
                        f"a runner silent for {stale_after:.0f} s is taken over")
                    waiting = len(todo)
                time.sleep(min(interval, 5.0))
                continue
            waiting = None
            if claim.name != "claim.1":
                say(f"{cell.name}: taking over from a stale claim ({claim.parent / claims(claim.parent)[-2].name})")
            done = sum((c.dir / DONE).exists() for c in cells)
            say(f"cell {cell.name} ({done + 1}/{len(cells)}): running in {cell.dir}")
            heartbeat = Heartbeat(claim, interval)
            heartbeat.start()
            try:
                scores = run_cell(grid, cell, heartbeat, env, say)
            except CellFailed as e:
                say(f"FAILED {e}")
                failed.append(cell.name)
                scores = None
            finally:
                heartbeat.stop()
                if not heartbeat.lost:
                    claim.unlink(missing_ok=True)
            if heartbeat.lost:
                say(f"{cell.name}: another runner took this cell over; leaving it to that runner")
            elif scores:
                say(progress_line(cells, cell, scores, fs_now(out_dir, me), stale_after))
    finally:
        (out_dir / f".clock-{me}").unlink(missing_ok=True)
    done = sum((c.dir / DONE).exists() for c in cells)
    say(f"{done}/{len(cells)} cells done" + (f"; failed here: {', '.join(failed)}" if failed else ""))
    return failed


def progress_line(cells: List[Cell], cell: Cell, scores: dict, now: float, stale_after: float) -> str:
    """'cell X done in N min: k/n cells done; M min per cell; about T min left with R runner(s)'."""
    seconds = [json.loads((c.dir / "scores.json").read_text())["cell_seconds"]
               for c in cells if (c.dir / DONE).exists()]
    left = len(cells) - len(seconds)
    runners = {json.dumps(h, sort_keys=True) for c in cells if not (c.dir / DONE).exists()
               for claim in claims(c.dir)[-1:] for h in [holder(claim, now, stale_after)] if h}
    per_cell = sum(seconds) / len(seconds)
    eta = left * per_cell / max(1, len(runners) + 1)
    return (f"cell {cell.name} done in {scores['cell_seconds'] / 60:.1f} min: {len(seconds)}/{len(cells)} cells "
            f"done, {per_cell / 60:.1f} min per cell, about {eta / 60:.0f} min left "
            f"with {len(runners) + 1} runner(s)")
