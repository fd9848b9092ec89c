"""The check of a split's manifests when it loads: every row, from the audio headers only (nothing
is decoded), before the first update. Bad rows are listed in one error, or skipped and listed in a
file with ``--skip-bad-rows``.

A row is good when

- ``audio`` names a file, or an entry of a zip as ``archive.zip:byte_offset:byte_length``
  (fairseq's syntax): the zip exists, the bytes lie inside it, start an entry's data (the zip's
  central directory is read once per zip) and the entry is stored uncompressed;
- soundfile opens the header, and the clip holds audio, not speech features (fairseq's own
  ``prep_*_data.py`` write fbank80.zip with .npy entries);
- ``n_frames`` agrees with the header's length, counted either at 16 kHz (what llast-prep-covost2
  and llast-prep-fleurs write: the decoded clip's length) or at the clip's own rate (what fairseq's
  ``get_zip_manifest`` writes: ``sf.info(clip).frames``), within
  :func:`~llast_fairseq.data.audio.length_tolerance`;
- the clip lasts at most 30 s (Whisper's window);
- the texts the split's tasks need (``tgt_text`` to translate, ``src_text`` to transcribe) are not
  empty, and ``src_lang`` and ``tgt_lang`` are codes the prompt builder can name.

The verdict of a manifest is cached beside it (``<split>.tsv.llast-check.json``, or under
``~/.cache/llast_fairseq/manifest-checks`` where the manifest's directory is read-only), keyed by
the manifest's path, size and mtime, the audio root and what the check needs: loading an unchanged
manifest again reads no header. Audio files changed after a check are not noticed then; the
decoder still compares each clip's decoded length with its row (see ``LlastDataset.waveform``).
"""
import fcntl
import hashlib
import json
import logging
import mmap
import os
import struct
import threading
import time
import zipfile
from array import array
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf
from fairseq.data.audio.audio_utils import parse_path

from .audio import SAMPLE_RATE, length_tolerance, resampled_length
from .manifest import clean_text, write_tsv
from .prompts import LANGUAGE_NAMES, language_base

logger = logging.getLogger(__name__)

MAX_SECONDS = 30  # Whisper's window
SHOWN = 20  # bad rows an error lists; it counts the rest
THREADS = 16  # header reads in flight: on a cold disk each one waits for a random read
CACHE_VERSION = 1  # bump when what the check accepts changes
PREP_SCRIPTS = "llast-prep-covost2 or llast-prep-fleurs (examples/speech_translation_llm/README.md)"
FEATURES = "speech features (.npy), not audio"
NUMPY_MAGIC = b"\x93NUMPY"
BAD_ROW_COLUMNS = ("manifest", "line", "id", "field", "reason")


@dataclass(frozen=True)
class Needs:
    """What a manifest's rows must hold for the tasks the split is loaded for."""

    texts: Tuple[str, ...]  # "tgt_text" to translate, "src_text" to transcribe
    src_lang: Optional[str] = None  # --src-lang: stands in where the column is absent
    tgt_lang: Optional[str] = None  # --tgt-lang: likewise


class Problem(NamedTuple):
    row: int  # 0-based, among the manifest's rows
    id: str
    field: str
    reason: str


@dataclass
class Verdict:
    """A manifest's problems, and the rate its good rows' n_frames count samples at."""

    rows: int
    problems: List[Problem]
    rate_runs: List[Tuple[int, int]]  # (rate, rows) runs over all rows, in order

    def bad_rows(self) -> set:
        return {p.row for p in self.problems}

    def samples_16k(self, n_frames: Sequence[int]) -> np.ndarray:
        """Each row's length at 16 kHz from its ``n_frames`` (all rows, bad ones meaningless)."""
        rates = np.repeat([r for r, _ in self.rate_runs], [n for _, n in self.rate_runs]).astype(np.int64)
        counts = np.asarray(n_frames, dtype=np.int64)
        return resampled_length(counts, rates)


class ManifestError(ValueError):
    """Bad rows in a split's manifests, all listed."""


def value(row: Dict[str, str], name: str, default: Optional[str] = None) -> Optional[str]:
    """A row's field; ``default`` stands in only where the column is absent."""
    field = row.get(name)
    return default if field is None else field


def check_manifest(tsv: Path, rows: List[Dict[str, str]], audio_root: Path, needs: Needs,
                   threads: int = THREADS) -> Verdict:
    """The verdict on ``rows`` (read from ``tsv``), from the cache when ``tsv`` is unchanged.

    Processes that load the same manifest at once (torchrun) take turns: the first checks, the
    others then find its verdict in the cache."""
    key = _cache_key(tsv, audio_root, needs)
    with open(tsv, "rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for path in cache_paths(tsv):
            verdict = _read_cache(path, key, len(rows))
            if verdict is not None:
                logger.info(f"{tsv}: {verdict.rows} rows, {len(verdict.bad_rows())} bad, as checked "
                            f"before (verdict cached in {path})")
                return verdict
        verdict = check_rows(tsv, rows, audio_root, needs, threads)
        _write_cache(tsv, key, verdict)
    return verdict


def check_rows(tsv: Path, rows: List[Dict[str, str]], audio_root: Path, needs: Needs,
               threads: int = THREADS) -> Verdict:
    """Check every row (no cache): fields first, then the audio headers, ``threads`` at a time."""
    start = time.time()
    problems, jobs = [], []
    for i, row in enumerate(rows):
        row_id = row.get("id") or "?"
        for field, reason in _field_problems(row, needs):
            problems.append(Problem(i, row_id, field, reason))
        audio = value(row, "audio")
        if audio is not None and audio.strip():
            jobs.append((i, row_id, (audio_root / audio).as_posix(), _whole_number(row.get("n_frames"))))
    rates = np.full(len(rows), SAMPLE_RATE, dtype=np.int64)
    with ExitStack() as stack:
        zips = _ZipIndexes(stack)
        chunks = [jobs[i:i + 256] for i in range(0, len(jobs), 256)]
        done, reported = 0, time.time()
        with ThreadPoolExecutor(threads) as pool:
            for results in pool.map(lambda chunk: [_check_audio(path, n, zips) for _, _, path, n in chunk],
                                    chunks):
                for (i, row_id, _, _), (rate, found) in zip(jobs[done:done + len(results)], results):
                    rates[i] = rate
                    problems.extend(Problem(i, row_id, field, reason) for field, reason in found)
                done += len(results)
                if time.time() - reported > 10:
                    reported = time.time()
                    logger.info(f"{tsv}: checked {done}/{len(jobs)} audio headers ({reported - start:.0f} s)")
    problems.sort(key=lambda p: p.row)
    seconds = time.time() - start
    logger.info(f"{tsv}: checked {len(rows)} rows in {seconds:.1f} s ({len(rows) / max(seconds, 1e-9):.0f} "
                f"rows/s), {len({p.row for p in problems})} bad")
    runs = []
    for rate in rates.tolist():
        if runs and runs[-1][0] == rate:
            runs[-1][1] += 1
        else:
            runs.append([rate, 1])
    return Verdict(len(rows), problems, [tuple(r) for r in runs])


def _whole_number(field: Optional[str]) -> Optional[int]:
    try:
        return int(field)
    except (TypeError, ValueError):
        return None


def _field_problems(row: Dict[str, str], needs: Needs) -> List[Tuple[str, str]]:
    """(field, reason) for each problem of a row's text fields (the audio's are found later)."""
    found = []
    audio = value(row, "audio")
    if audio is None or not audio.strip():
        found.append(("audio", "missing" if audio is None else "empty"))
    n_frames = value(row, "n_frames")
    count = _whole_number(n_frames)
    if count is None or count <= 0:
        found.append(("n_frames", "missing" if n_frames is None else f"{n_frames!r} is not a positive whole "
                      "number of samples"))
    for name in needs.texts:
        text = value(row, name)
        if text is None or not text.strip():
            found.append((name, "missing" if text is None else "empty"))
    for name, default in (("src_lang", needs.src_lang), ("tgt_lang", needs.tgt_lang)):
        code = value(row, name, default)
        if code is None or not code.strip():
            found.append((name, f"{'missing' if code is None else 'empty'} (for a manifest of one direction "
                                f"without this column, pass --{name.replace('_', '-')})"))
        elif language_base(code) not in LANGUAGE_NAMES:
            found.append((name, f"unknown language code {code!r}: the prompt names "
                                f"{', '.join(sorted(LANGUAGE_NAMES))} (LANGUAGE_NAMES in "
                                "llast_fairseq/data/prompts.py)"))
    return found


class _Slice:
    """``length`` bytes of ``data`` (the zip's mmap) from ``offset``, as a read-only file object
    for soundfile: a header read touches only the pages it reads."""

    def __init__(self, data, offset: int, length: int):
        self.data, self.offset, self.length, self.pos = data, offset, length, 0

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self.pos = max(0, offset + (0, self.pos, self.length)[whence])
        return self.pos

    def tell(self) -> int:
        return self.pos

    def read(self, size: int = -1) -> bytes:
        end = self.length if size < 0 else min(self.pos + size, self.length)
        data = self.data[self.offset + self.pos:self.offset + max(end, self.pos)]
        self.pos += len(data)
        return data


class _BadAudio(Exception):
    """A reason why a row's audio cannot be used."""


class _ZipIndex:
    """One zip's entries by where their data starts, from its central directory and the local
    headers (name and extra-field lengths), read once."""

    def __init__(self, path: str, stack: ExitStack):
        self.path = path
        self.size = os.path.getsize(path)
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
        f = stack.enter_context(open(path, "rb"))
        self.data = stack.enter_context(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
        self.entries = {}
        for info in infos:
            h = info.header_offset
            if self.data[h:h + 4] == b"PK\x03\x04":
                name_len, extra_len = struct.unpack_from("<HH", self.data, h + 26)
                self.entries[h + 30 + name_len + extra_len] = info

    def open(self, offset: int, length: int) -> _Slice:
        info = self.entries.get(offset)
        if info is None and (offset < 0 or length <= 0 or offset + length > self.size):
            raise _BadAudio(f"bytes {offset} to {offset + length} lie outside {self.path} ({self.size} bytes): "
                            "the manifest is not from this zip; write it again with the zip")
        if info is None:
            raise _BadAudio(f"no entry of {self.path} starts at byte {offset}: the manifest is not from this "
                            "zip; write it again with the zip")
        if info.compress_type != zipfile.ZIP_STORED:
            method = zipfile.compressor_names.get(info.compress_type, info.compress_type)
            raise _BadAudio(f"entry {info.filename} of {self.path} is compressed ({method}): entries are read "
                            "in place, so the zip must be stored (zip -0, or --zip of llast-prep-covost2 / "
                            "llast-prep-fleurs)")
        if length != info.file_size:
            raise _BadAudio(f"{length} bytes, but entry {info.filename} of {self.path} holds {info.file_size}")
        if info.filename.endswith(".npy") or self.data[offset:offset + 6] == NUMPY_MAGIC:
            raise _BadAudio(FEATURES)
        return _Slice(self.data, offset, length)


class _ZipIndexes:
    """Zip path -> its :class:`_ZipIndex` (or why it cannot be read), built once per zip by the
    first thread that needs it."""

    def __init__(self, stack: ExitStack):
        self.stack, self.lock, self.indexes = stack, threading.Lock(), {}

    def __getitem__(self, path: str):
        with self.lock:
            if path not in self.indexes:
                try:
                    self.indexes[path] = _ZipIndex(path, self.stack)
                except (OSError, zipfile.BadZipFile) as e:
                    self.indexes[path] = f"{path} cannot be read as a zip: {e}"
            return self.indexes[path]


def _check_audio(path: str, n_frames: Optional[int], zips: _ZipIndexes):
    """``(rate n_frames counts at, [(field, reason), ...])`` for one row's audio."""
    try:
        frames, rate, fmt = _header(path, zips)
    except _BadAudio as e:
        return SAMPLE_RATE, [("audio", str(e))]
    found = []
    n16 = resampled_length(frames, rate)
    if frames == 0:
        found.append(("audio", f"{path}: the header holds no samples (an empty or cut-off file)"))
    elif n16 > MAX_SECONDS * SAMPLE_RATE:
        found.append(("audio", f"{n16 / SAMPLE_RATE:.1f} s long; Whisper reads at most {MAX_SECONDS} s: cut the "
                               "clip or leave the row out"))
    if n_frames is None or n_frames <= 0:
        return SAMPLE_RATE, found
    if abs(n_frames - n16) <= length_tolerance(fmt, rate, SAMPLE_RATE):
        return SAMPLE_RATE, found
    if abs(n_frames - frames) <= length_tolerance(fmt, rate, rate):
        return rate, found
    found.append(("n_frames", f"{n_frames} samples, but the header of {path} holds {frames} at {rate} Hz "
                              f"({n16} at 16 kHz): a cut-off or other clip, or a count from another file; "
                              "check the clip and write its sample count (at 16 kHz or at its own rate)"))
    return SAMPLE_RATE, found


def _header(path: str, zips: _ZipIndexes) -> Tuple[int, int, str]:
    """``(frames, sample rate, soundfile format)`` from the header of a file or zip entry."""
    try:
        file, slice_ptr = parse_path(path)
    except FileNotFoundError:
        raise _BadAudio(f"file not found: {path.split(':')[0]}")
    except (AssertionError, ValueError):
        raise _BadAudio(f"{path!r} is neither an audio file nor archive.zip:byte_offset:byte_length")
    if slice_ptr:
        index = zips[file]
        if isinstance(index, str):
            raise _BadAudio(index)
        source = index.open(*slice_ptr)
    elif file.endswith(".npy"):
        raise _BadAudio(FEATURES)
    else:
        source = file
    try:
        with sf.SoundFile(source) as f:
            return f.frames, f.samplerate, f.format
    except (sf.LibsndfileError, RuntimeError) as e:
        if not slice_ptr and not os.path.isfile(file):
            raise _BadAudio(f"file not found: {file}")
        if not slice_ptr and _starts_with(file, NUMPY_MAGIC):
            raise _BadAudio(FEATURES)
        raise _BadAudio(f"{path}: the header does not open as audio ({e})")


def _starts_with(file: str, magic: bytes) -> bool:
    with open(file, "rb") as f:
        return f.read(len(magic)) == magic


# ------------------------------------------------------------------------------------ reporting


class BadRow(NamedTuple):
    manifest: str
    line: int
    id: str
    field: str
    reason: str


def manifest_lines(tsv) -> List[int]:
    """The line number of each row of ``tsv`` as fairseq's reader returns them (the header and
    empty lines are not rows)."""
    with open(tsv, encoding="utf-8", newline="") as f:
        return [n for n, line in enumerate(f, 1) if line.strip("\r\n")][1:]


def bad_rows_of(checked: Sequence[Tuple[Path, Verdict]]) -> List[BadRow]:
    """Every problem of the checked manifests, with manifest file and line."""
    out = []
    for tsv, verdict in checked:
        if verdict.problems:
            lines = manifest_lines(tsv)
            out.extend(BadRow(str(tsv), lines[p.row], p.id, p.field, p.reason) for p in verdict.problems)
    return out


def error_text(split: str, bad: List[BadRow], total_rows: int) -> str:
    """One message for all of a split's bad rows: the first :data:`SHOWN`, the count of the rest
    and what to do."""
    n_rows = len({(b.manifest, b.line) for b in bad})
    lines = [f"split {split!r}: {n_rows} of {total_rows} manifest rows cannot be used (checked from the audio "
             "headers before training or decoding):"]
    if any(b.reason == FEATURES for b in bad):
        lines.append(f"  The manifest lists speech features (.npy, as fairseq's prep_*_data.py write them in "
                     f"fbank80.zip), but LLaST runs Whisper on raw audio: prepare the data with {PREP_SCRIPTS}.")
    lines += [f"  {b.manifest}:{b.line} id {b.id!r} field {b.field!r}: {b.reason}" for b in bad[:SHOWN]]
    if len(bad) > SHOWN:
        lines.append(f"  ... and {len(bad) - SHOWN} more problems; --skip-bad-rows writes them all to a file")
    lines.append("Fix these rows (or prepare the data again with llast-prep-covost2 / llast-prep-fleurs), or pass "
                 "--skip-bad-rows to leave them out: their list is then written to --save-dir as "
                 "bad_rows_<split>.tsv.")
    return "\n".join(lines)


def write_bad_rows(path: Path, bad: List[BadRow]):
    """The list of skipped rows as a TSV (manifest, line, id, field, reason), renamed into place
    from a name of this process's own (every rank of a distributed run writes the same list)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}")
    write_tsv(str(tmp), [dict(b._asdict(), reason=clean_text(b.reason), id=clean_text(b.id)) for b in bad],
              BAD_ROW_COLUMNS)
    os.replace(tmp, path)


class RowOrigins:
    """The manifest file and row of each dataset row, to name it in errors at decode time."""

    def __init__(self):
        self.files: List[str] = []
        self.file_of, self.row_of = array("i"), array("i")

    def add(self, tsv, rows: Sequence[int]):
        self.files.append(str(tsv))
        self.file_of.extend([len(self.files) - 1] * len(rows))
        self.row_of.extend(rows)

    def __call__(self, row: int) -> str:
        tsv = self.files[self.file_of[row]]
        return f"{tsv}:{manifest_lines(tsv)[self.row_of[row]]}"


# ---------------------------------------------------------------------------------------- cache


def _cache_key(tsv: Path, audio_root: Path, needs: Needs) -> dict:
    stat = os.stat(tsv)
    return json.loads(json.dumps({"version": CACHE_VERSION, "manifest": str(Path(tsv).resolve()), "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns, "audio_root": str(audio_root), "needs": asdict(needs),
            "max_seconds": MAX_SECONDS, "languages": sorted(LANGUAGE_NAMES)}))  # as JSON reads it back


def cache_paths(tsv: Path) -> List[Path]:
    """Beside the manifest, then in the user's cache directory (for read-only data)."""
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha1(str(Path(tsv).resolve()).encode()).hexdigest()[:16]
    return [Path(f"{tsv}.llast-check.json"),
            home / "llast_fairseq" / "manifest-checks" / f"{Path(tsv).name}.{digest}.json"]


def _read_cache(path: Path, key: dict, rows: int) -> Optional[Verdict]:
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if stored.get("key") != key or stored.get("rows") != rows:
        return None
    return Verdict(rows, [Problem(*p) for p in stored["problems"]], [tuple(r) for r in stored["rate_runs"]])


def _write_cache(tsv: Path, key: dict, verdict: Verdict):
    """Write the verdict where it can be written (renamed into place); log when nowhere."""
    text = json.dumps({"key": key, "rows": verdict.rows, "problems": [list(p) for p in verdict.problems],
                       "rate_runs": [list(r) for r in verdict.rate_runs]})
    errors = []
    for path in cache_paths(tsv):
        tmp = path.with_name(f"{path.name}.{os.getpid()}.part")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(text)
            os.replace(tmp, path)
            return
        except OSError as e:
            errors.append(f"{path}: {e}")
            with suppress(OSError):
                tmp.unlink(missing_ok=True)
    logger.warning(f"{tsv}: the check's verdict is not cached ({'; '.join(errors)}): the next load checks again")
