"""The preparation pipeline shared by the CoVoST 2 and FLEURS readers.

A reader turns its corpus into *items* (one per usable row and direction) and *rejections*, then
calls :func:`run_pipeline`, which

1. converts every distinct source clip once to 16 kHz mono PCM-16 flac/wav under
   ``<out>/audio/<src_lang>/<clip>.<fmt>`` with the task's own decoder
   (:mod:`llast_fairseq.data.audio`), in parallel and resumably: a clip already written, or already
   stored in ``audio.zip``, is not converted again; writes go to ``*.part`` and are renamed,
2. optionally packs the clips into an uncompressed ``audio.zip`` (built as ``audio.zip.part`` and
   renamed, so an interrupted run never leaves a broken archive),
3. writes fairseq S2T manifests ``<split>_<direction>.tsv``, one joint multilingual train TSV
   (optionally temperature-upsampled), ``config.yaml`` with ``audio_root``, and ``rejected.tsv``
   listing every row that could not be used, with its reason
   (:mod:`llast_fairseq.data.manifest` writes them all).
"""
import os
import random
import shutil
import struct
import sys
import zipfile
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from multiprocessing import Pool

import soundfile as sf
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from tqdm import tqdm

from ..data.audio import SAMPLE_RATE, decode_audio, write_pcm16
from ..data.manifest import JOINT_TRAIN, clean_text, write_config, write_tsv

SPLITS = ("train", "dev", "test")
REJECTED_COLUMNS = ("direction", "split", "id", "reason", "detail")
ZIP_NAME = "audio.zip"
AUDIO_DIR = "audio"


@dataclass
class PrepConfig(FairseqDataclass):
    """How the clips are stored and how the joint train TSV is made (both readers take it)."""

    audio_format: ChoiceEnum(["flac", "wav"]) = field(
        default="flac", metadata={"help": "format of the converted 16 kHz mono PCM-16 clips"})
    zip: bool = field(
        default=False, metadata={"help": "pack the clips into an uncompressed audio.zip and list them "
                                          "in the manifests as audio.zip:byte_offset:byte_length"})
    keep_files: bool = field(
        default=False, metadata={"help": "with --zip, keep the loose clip files after packing them"})
    jobs: int = field(
        default_factory=lambda: os.cpu_count() or 1,
        metadata={"help": "parallel audio conversion processes, one per core unless set"})
    max_seconds: float = field(
        default=30.0, metadata={"help": "reject clips longer than this many seconds, in every split "
                                        "(30 s is the Whisper encoder window; 0 disables)"})
    temperature: float = field(
        default=1.0, metadata={"help": "temperature T of the joint train TSV: direction i is upsampled "
                                       "by repetition to p_i proportional to (n_i/N)^(1/T); 1 concatenates"})
    seed: int = field(
        default=1, metadata={"help": "random seed for picking the partial copy when upsampling"})
    joint_name: str = field(
        default=JOINT_TRAIN, metadata={"help": "split name of the joint multilingual train TSV"})

    def __post_init__(self):
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {self.jobs}")
        if self.max_seconds < 0:
            raise ValueError(f"max_seconds must be >= 0 (0 disables the limit), got {self.max_seconds}")


# ----------------------------------------------------------------------------------------- audio


def audio_name(key, fmt):
    """Relative name of a converted clip, both under ``<out>/audio`` and inside ``audio.zip``."""
    return f"{key}.{fmt}"


def convert_clip(task):
    """Decode one clip as the task does (mono, 16 kHz) and write it; runs in a worker process.

    ``task`` is ``(key, src_path, dst_path, fmt)``. Returns ``(key, n_frames, error)`` where
    ``error`` is None on success, else a one-line message (nothing is written then).
    """
    key, src, dst, fmt = task
    try:
        mono = decode_audio(src)
    except Exception as e:  # libsndfile raises several types for corrupt or unknown data
        return key, None, clean_text(f"{type(e).__name__}: {e}")
    if len(mono) == 0:
        return key, 0, None
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    write_pcm16(dst, mono, fmt)
    return key, len(mono), None


def zipped_names(out_dir):
    """Names stored in ``<out>/audio.zip`` (empty if there is none yet)."""
    zip_path = os.path.join(out_dir, ZIP_NAME)
    if not os.path.isfile(zip_path):
        return set()
    with zipfile.ZipFile(zip_path) as zf:
        return set(zf.namelist())


def stored_clips(out_dir, cfg):
    """Names in ``audio.zip`` when ``cfg.zip`` is on; else empty (only loose files count then)."""
    return zipped_names(os.path.abspath(out_dir)) if cfg.zip else set()


def audio_done(out_dir, key, fmt, zipped):
    """Whether clip ``key`` was already converted (as a loose file, or in the zip's ``zipped``)."""
    name = audio_name(key, fmt)
    return name in zipped or os.path.isfile(os.path.join(out_dir, AUDIO_DIR, name))


def existing_n_frames(out_dir, keys, fmt):
    """``{key: n_frames}`` of clips converted by an earlier run, read from their headers."""
    frames, in_zip = {}, []
    for key in keys:
        path = os.path.join(out_dir, AUDIO_DIR, audio_name(key, fmt))
        if os.path.isfile(path):
            frames[key] = sf.info(path).frames
        else:
            in_zip.append(key)
    if in_zip:
        with zipfile.ZipFile(os.path.join(out_dir, ZIP_NAME)) as zf:
            for key in in_zip:
                with zf.open(audio_name(key, fmt)) as f, sf.SoundFile(f) as snd:
                    frames[key] = snd.frames
    return frames


def convert_all(out_dir, sources, fmt, jobs, zipped):
    """Convert every clip of ``sources`` (``{key: src_path}``) not converted yet (neither a loose
    file nor one of the ``zipped`` names).

    Returns ``(n_frames, errors, stats)``: ``{key: n_frames}`` for all usable clips (new and
    earlier), ``{key: message}`` for undecodable ones, and ``{"converted": .., "reused": ..}``.
    """
    done = [k for k in sources if audio_done(out_dir, k, fmt, zipped)]
    done_set = set(done)
    tasks = [
        (k, sources[k], os.path.join(out_dir, AUDIO_DIR, audio_name(k, fmt)), fmt)
        for k in sources if k not in done_set
    ]
    n_frames = existing_n_frames(out_dir, tqdm(done, desc="reused", unit="clip", file=sys.stderr,
                                               disable=not done), fmt)
    errors = {}
    results = _map_with_progress(convert_clip, tasks, jobs)
    for key, frames, error in results:
        if error is None:
            n_frames[key] = frames
        else:
            errors[key] = error
    return n_frames, errors, {"converted": len(tasks), "reused": len(done)}


def _map_with_progress(func, tasks, jobs):
    """``func`` over ``tasks`` in ``jobs`` processes (in-process for one job), with a tqdm bar."""
    bar = dict(total=len(tasks), desc="audio", unit="clip", file=sys.stderr, disable=not tasks)
    if jobs <= 1 or len(tasks) <= 1:
        return [func(t) for t in tqdm(tasks, **bar)]
    with Pool(jobs) as pool:
        return list(tqdm(pool.imap_unordered(func, tasks, chunksize=4), **bar))


# ------------------------------------------------------------------------------------------- zip


def build_zip(out_dir, keys, fmt, keep_files):
    """Make sure ``<out>/audio.zip`` (ZIP_STORED) holds every clip of ``keys``.

    Clips converted since the last build are added by writing a complete new archive to
    ``audio.zip.part`` (entries of the old archive copied over) and renaming it, so an interrupted
    build leaves the previous archive intact. Loose files now stored in the archive are deleted
    unless ``keep_files``. Returns ``{key: "audio.zip:offset:length"}``.
    """
    zip_path = os.path.join(out_dir, ZIP_NAME)
    zipped = zipped_names(out_dir)
    names = [audio_name(k, fmt) for k in keys]
    loose = [n for n in names if n not in zipped]
    if loose or not os.path.isfile(zip_path):
        tmp = f"{zip_path}.part"
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zout:
            if zipped:
                with zipfile.ZipFile(zip_path) as zin:
                    for info in zin.infolist():
                        with zin.open(info) as src, zout.open(info.filename, "w") as dst:
                            shutil.copyfileobj(src, dst)
            for name in tqdm(sorted(loose), desc="zip", unit="clip", file=sys.stderr):
                zout.write(os.path.join(out_dir, AUDIO_DIR, name), arcname=name)
        os.replace(tmp, zip_path)
    if not keep_files:
        for name in names:
            path = os.path.join(out_dir, AUDIO_DIR, name)
            if os.path.isfile(path):
                os.remove(path)
        remove_empty_dirs(os.path.join(out_dir, AUDIO_DIR))
    slices = zip_manifest(zip_path)
    return {k: f"{ZIP_NAME}:{slices[n][0]}:{slices[n][1]}" for k, n in zip(keys, names)}


def remove_empty_dirs(root):
    """Remove the empty directories under ``root``, and ``root`` if it ends up empty."""
    for path, _, _ in sorted(os.walk(root), reverse=True):
        if not os.listdir(path):
            os.rmdir(path)


def zip_manifest(zip_path):
    """``{name: (byte_offset, byte_length)}`` of each entry's data in a stored zip.

    Like fairseq's ``get_zip_manifest`` (``header_offset + 30 + len(filename)``), but reads the
    file-name and extra-field lengths from each local header, so non-ASCII names and extra fields
    are right too. Checks that every entry is uncompressed and starts like a wav/flac file.
    """
    slices = {}
    with zipfile.ZipFile(zip_path) as zf, open(zip_path, "rb") as f:
        for info in zf.infolist():
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(f"{zip_path}: {info.filename} is compressed")
            f.seek(info.header_offset)
            header = f.read(30)
            if header[:4] != b"PK\x03\x04":
                raise ValueError(f"{zip_path}: bad local header for {info.filename}")
            name_len, extra_len = struct.unpack("<HH", header[26:30])
            offset = info.header_offset + 30 + name_len + extra_len
            f.seek(offset)
            if f.read(4) not in (b"RIFF", b"fLaC"):
                raise ValueError(f"{zip_path}: {info.filename} is not wav/flac data")
            slices[info.filename] = (offset, info.file_size)
    return slices


# -------------------------------------------------------------------------------------- sampling


def temperature_counts(sizes, temperature):
    """Rows per direction in the joint train TSV for ``sizes`` (``{direction: n_i}``).

    p_i is proportional to (n_i/N)^(1/T); the counts keep those proportions while never
    dropping data: the largest direction keeps its n_max rows and direction i gets
    round(n_max * (n_i/n_max)^(1/T)) rows, which is >= n_i for T >= 1 (T < 1 would downsample the
    small directions instead). T = 1 leaves every n_i unchanged.
    """
    n_max = max(sizes.values(), default=0)
    if n_max == 0:
        return {d: 0 for d in sizes}
    return {d: round(n_max * (n / n_max) ** (1.0 / temperature)) for d, n in sizes.items()}


def sampling_probabilities(sizes, temperature):
    """``{direction: p_i}`` with p_i proportional to (n_i/N)^(1/T), summing to 1."""
    total = sum(sizes.values())
    if total == 0:
        return {d: 0.0 for d in sizes}
    weights = {d: (n / total) ** (1.0 / temperature) if n else 0.0 for d, n in sizes.items()}
    norm = sum(weights.values()) or 1.0
    return {d: w / norm for d, w in weights.items()}


def upsample(rows, count, rng):
    """``count`` rows: whole copies of ``rows`` plus a random subset for the remainder.

    Repeated rows get ids suffixed ``_r1``, ``_r2``, ... so ids stay unique.
    """
    if not rows:
        return []
    copies, rest = divmod(count, len(rows))
    out = []
    for k in range(copies):
        out.extend(_renamed(r, k) for r in rows)
    picked = sorted(rng.sample(range(len(rows)), rest))
    out.extend(_renamed(rows[i], copies) for i in picked)
    return out


def _renamed(row, copy):
    """``row``, with ``_r<copy>`` appended to its id for copies after the first."""
    return row if copy == 0 else dict(row, id=f"{row['id']}_r{copy}")


# -------------------------------------------------------------------------------------- pipeline


def reject(rejected, direction, split, utt_id, reason, detail=""):
    """Record one unusable row in the list ``rejected`` (written to rejected.tsv)."""
    rejected.append({"direction": direction, "split": split, "id": utt_id,
                     "reason": reason, "detail": clean_text(str(detail))})


def reject_item(rejected, item, reason, detail=""):
    """:func:`reject` for a prepared item."""
    reject(rejected, item["direction"], item["split"], item["id"], reason, detail)


def run_pipeline(out_dir, items, rejected, directions, cfg):
    """Convert audio and write all outputs for ``items`` into ``out_dir`` as ``cfg``
    (a :class:`PrepConfig`) says; returns a summary dict.

    ``items`` are dicts with ``direction, split, id, src_lang, tgt_lang, src_text, tgt_text,
    speaker, audio_key, audio_src``; rows whose clip file is missing, undecodable, empty or too
    long are added to ``rejected`` (a list of :func:`reject` records) here.
    """
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    fmt = cfg.audio_format
    zipped = stored_clips(out_dir, cfg)
    usable, sources = [], OrderedDict()
    for item in items:
        key = item["audio_key"]
        if key in sources or audio_done(out_dir, key, fmt, zipped) or \
                os.path.isfile(item["audio_src"]):
            sources[key] = item["audio_src"]
            usable.append(item)
        else:
            reject_item(rejected, item, "missing clip", item["audio_src"])
    n_frames, errors, stats = convert_all(out_dir, sources, fmt, cfg.jobs, zipped)
    max_frames = int(cfg.max_seconds * SAMPLE_RATE)
    kept = []
    for item in usable:
        key = item["audio_key"]
        if key in errors:
            reject_item(rejected, item, "undecodable audio", errors[key])
        elif n_frames[key] == 0:  # nothing was written, so not in `converted` below
            reject_item(rejected, item, "empty audio")
        elif max_frames > 0 and n_frames[key] > max_frames:
            seconds = n_frames[key] / SAMPLE_RATE
            reject_item(rejected, item, "too long", f"{seconds:.2f} s > {cfg.max_seconds:g} s")
        else:
            kept.append(item)
    converted = [k for k in sources if n_frames.get(k)]  # too long ones too: kept for resuming
    if cfg.zip:
        audio = build_zip(out_dir, converted, fmt, cfg.keep_files)
    else:
        audio = {k: f"{AUDIO_DIR}/{audio_name(k, fmt)}" for k in converted}
    tables = manifest_tables(kept, audio, n_frames, directions)
    for (split, direction), rows in tables.items():
        path = os.path.join(out_dir, f"{split}_{direction}.tsv")
        if rows:
            write_tsv(path, rows)
        else:  # fairseq refuses header-only manifests
            print(f"[warning] no {split} rows for {direction}: {path} not written", file=sys.stderr)
            if os.path.isfile(path):
                os.remove(path)
    sampling = write_joint_train(out_dir, tables, directions, cfg)
    write_tsv(os.path.join(out_dir, "rejected.tsv"), rejected, REJECTED_COLUMNS)
    write_config(out_dir)
    summary = {
        "rows": {f"{s}_{d}": len(r) for (s, d), r in tables.items()},
        "rejected": dict(Counter(r["reason"] for r in rejected)),
        "audio": stats,
        "sampling": sampling,
    }
    print_summary(summary, out_dir)
    return summary


def manifest_tables(kept, audio, n_frames, directions):
    """``{(split, direction): [manifest row, ...]}`` for all splits and directions."""
    tables = OrderedDict(((s, d), []) for d in directions for s in SPLITS)
    for item in kept:
        key = item["audio_key"]
        tables[(item["split"], item["direction"])].append({
            "id": item["id"],
            "audio": audio[key],
            "n_frames": n_frames[key],
            "tgt_text": clean_text(item["tgt_text"]),
            "src_text": clean_text(item["src_text"]),
            "src_lang": item["src_lang"],
            "tgt_lang": item["tgt_lang"],
            "speaker": item["speaker"],
        })
    return tables


def write_joint_train(out_dir, tables, directions, cfg):
    """Write ``<joint-name>.tsv`` (all directions' train rows, temperature-upsampled) and
    ``<joint-name>.sampling.tsv`` documenting n_i, p_i and the resulting counts; returns them."""
    sizes = OrderedDict((d, len(tables[("train", d)])) for d in directions)
    counts = temperature_counts(sizes, cfg.temperature)
    probs = sampling_probabilities(sizes, cfg.temperature)
    rng = random.Random(cfg.seed)
    rows = []
    for d in directions:
        rows.extend(upsample(tables[("train", d)], counts[d], rng))
    write_tsv(os.path.join(out_dir, f"{cfg.joint_name}.tsv"), rows)
    sampling = [
        {"direction": d, "n_rows": sizes[d], "p": f"{probs[d]:.6f}", "count": counts[d],
         "temperature": f"{cfg.temperature:g}"}
        for d in directions
    ]
    write_tsv(os.path.join(out_dir, f"{cfg.joint_name}.sampling.tsv"), sampling,
              ("direction", "n_rows", "p", "count", "temperature"))
    return {d: counts[d] for d in directions}


def print_summary(summary, out_dir):
    """Print a one-line summary (kept rows, rejections by reason, audio work) and the sampling."""
    kept = ", ".join(f"{k}={n}" for k, n in summary["rows"].items())
    rejected = summary["rejected"]
    reasons = ", ".join(f"{r}: {n}" for r, n in sorted(rejected.items())) or "none"
    audio = summary["audio"]
    print(f"[summary] kept {kept}; rejected {sum(rejected.values())} ({reasons}), see "
          f"{os.path.join(out_dir, 'rejected.tsv')}; audio converted {audio['converted']}, "
          f"reused {audio['reused']}")
    print("[summary] joint train rows per direction: "
          + ", ".join(f"{d}={n}" for d, n in summary["sampling"].items()))

