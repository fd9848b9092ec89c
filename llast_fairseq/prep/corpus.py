"""The demo's offline multilingual spoken translation corpus.

Sentences come from the synchronous grammar of :mod:`llast_fairseq.prep.grammar` over a lexicon
file (one meaning rendered in French, German, Spanish and English); the source side is spoken by
espeak-ng with many voice variants, resampled by the task's audio decoder and written as 16 kHz
mono 16-bit wav.

Layout of the output directory::

    audio/<src>_<tgt>/<id>.wav                 one file per utterance
    {train,dev,test}_<src>_<tgt>.tsv           fairseq speech-to-text manifests
    train_joint.tsv, dev.tsv                   all directions joined (train, dev)
    text.txt                                   train source + target sentences
    config.yaml                                audio_root for S2TDataConfig
    stats.json                                 counts, durations, held-out report
    corpus_stamp.json                          arguments + code digest (cache key)

Dev and test sentences never occur (in any language) in train, and dev/test are spoken only by
held-out voice variants. Output is deterministic for a seed. Building again with the same
arguments returns at once; an interrupted build resumes.
"""
import hashlib
import json
import multiprocessing
import os
import random
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Tuple

import numpy as np
import soundfile as sf

from ..data import audio, manifest
from ..data.audio import SAMPLE_RATE, to_mono_16k, write_pcm16
from ..data.manifest import JOINT_TRAIN, write_config, write_tsv
from . import grammar as grammar_module
from .grammar import LANGS, Grammar

VERSION = 2  # 2: trailing silence trimmed
STAMP_NAME = "corpus_stamp.json"
JOINT_DEV = "dev"  # all directions' dev rows: the demo's --valid-subset

ESPEAK_LANG = {"fr": "fr", "de": "de", "es": "es", "en": "en-us"}
TRAIN_VOICES = ("m1 m2 m4 m5 m6 m8 f1 f2 f3 f5 klatt klatt2 klatt4 "
                "Alicia Andy belinda benjamin david linda max paul robert steph travis").split()
HELD_OUT_VOICES = "m3 m7 f4 klatt3 Andrea Denis michel victor".split()
SPEED_RANGE = (130, 190)  # words per minute
PITCH_RANGE = (30, 70)
# espeak-ng ends every sentence with about 0.33 s of silence (13% of an utterance): keep 0.1 s
TRAILING_SILENCE = 0.1  # seconds kept after the last sample above SILENCE_LEVEL
SILENCE_LEVEL = 0.01

SPLITS = ("train", "dev", "test")
PRESETS = {"default": (4500, 100, 100), "small": (1000, 20, 20), "tiny": (40, 8, 8)}  # utterances per direction
DEFAULT_DIRECTIONS = "fr-en,de-en,es-en,en-fr"
MAX_REJECTIONS = 10000


class CorpusError(RuntimeError):
    """The corpus cannot be built: a missing tool, a foreign output directory, train overlapping
    dev/test, or a grammar too small for the sizes asked."""


def parse_directions(text: str):
    """Parse "fr-en,de-en" into [("fr", "en"), ("de", "en")]; ValueError names a bad pair."""
    directions = []
    for item in text.split(","):
        parts = item.strip().split("-")
        if len(parts) != 2 or any(p not in LANGS for p in parts) or parts[0] == parts[1]:
            raise ValueError(f"bad direction {item!r}: use SRC-TGT with two different languages from {LANGS}")
        if tuple(parts) in directions:
            raise ValueError(f"direction {item!r} given twice")
        directions.append(tuple(parts))
    return directions


@dataclass(frozen=True)
class CorpusConfig:
    """What a corpus is made of: everything that changes its content (its cache key)."""

    seed: int = field(default=1, metadata={"help": "random seed of the sentences, voices, speeds and pitches"})
    directions: Tuple[Tuple[str, str], ...] = field(
        default=tuple(parse_directions(DEFAULT_DIRECTIONS)),
        metadata={"help": "(src, tgt) language pairs, each a direction of the corpus"})
    train_per_direction: int = field(default=PRESETS["default"][0], metadata={"help": "train utterances per direction"})
    dev_per_direction: int = field(default=PRESETS["default"][1], metadata={"help": "dev utterances per direction"})
    test_per_direction: int = field(default=PRESETS["default"][2], metadata={"help": "test utterances per direction"})

    def __post_init__(self):
        for split in SPLITS:
            if getattr(self, f"{split}_per_direction") < 1:
                raise ValueError(f"{split}_per_direction must be >= 1, got {getattr(self, f'{split}_per_direction')}")
        object.__setattr__(self, "directions", tuple(tuple(d) for d in self.directions))

    @property
    def sizes(self):
        """{split: utterances per direction}."""
        return {split: getattr(self, f"{split}_per_direction") for split in SPLITS}


@dataclass(frozen=True)
class Utterance:
    """One planned corpus row: sentence pair plus the voice that speaks the source."""

    id: str
    split: str
    src_lang: str
    tgt_lang: str
    src_text: str
    tgt_text: str
    voice: str
    speed: int
    pitch: int

    @property
    def direction(self):
        return f"{self.src_lang}_{self.tgt_lang}"

    @property
    def audio(self):
        """Path of the wav file relative to the corpus root."""
        return f"audio/{self.direction}/{self.id}.wav"

    @property
    def speaker(self):
        """espeak-ng voice spec, e.g. fr+f3."""
        return f"{ESPEAK_LANG[self.src_lang]}+{self.voice}"


# ------------------------------------------------------------------------------ sentence plan


def normalize(text):
    """Lowercase, punctuation removed, single spaces: the key for overlap checks."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def plan_corpus(grammar: Grammar, seed, directions, sizes):
    """Draw every utterance of the corpus, test first, then dev, then train.

    Each meaning is used once: it is rejected if its sentence in any language was already drawn,
    so no sentence repeats within or across splits. Drawing test first keeps the test set
    unchanged when only the train size changes.
    """
    rng = random.Random(seed)
    seen = set()
    plan = []
    for split in ("test", "dev", "train"):
        voices = TRAIN_VOICES if split == "train" else HELD_OUT_VOICES
        for src, tgt in directions:
            for index in range(sizes[split]):
                texts = _draw_unseen(grammar, rng, seen)
                plan.append(Utterance(
                    id=f"{src}_{tgt}_{split}_{index:06d}", split=split, src_lang=src, tgt_lang=tgt,
                    src_text=texts[src], tgt_text=texts[tgt], voice=rng.choice(voices),
                    speed=rng.randint(*SPEED_RANGE), pitch=rng.randint(*PITCH_RANGE)))
    return plan


def _draw_unseen(grammar, rng, seen):
    """Sample a meaning none of whose sentences is in seen; add them to seen."""
    for _ in range(MAX_REJECTIONS):
        texts = grammar.realize_all(grammar.sample_clause(rng))
        keys = {(lang, normalize(text)) for lang, text in texts.items()}
        if not keys & seen:
            seen.update(keys)
            return texts
    raise CorpusError("the grammar ran out of new sentences; request fewer utterances")


def held_out_report(plan):
    """Count dev/test sentences (source or target) and voice variants that also occur in train."""
    train = [u for u in plan if u.split == "train"]
    train_texts = {normalize(t) for u in train for t in (u.src_text, u.tgt_text)}
    train_voices = {u.voice for u in train}
    report = {}
    for split in ("dev", "test"):
        rows = [u for u in plan if u.split == split]
        report[f"{split}_sentences_in_train"] = sum(
            normalize(u.src_text) in train_texts or normalize(u.tgt_text) in train_texts for u in rows)
        report[f"{split}_voices_in_train"] = len({u.voice for u in rows} & train_voices)
    return report


# ---------------------------------------------------------------------------- speech synthesis


def synthesize(job):
    """Speak one sentence into a 16 kHz wav unless the file exists; return its n_frames.

    job = (text, espeak voice spec, speed, pitch, output path). The wav is written to a temporary
    name and renamed, so an existing file is complete.
    """
    text, voice, speed, pitch, path = job
    if os.path.exists(path):
        return sf.info(path).frames
    raw = path + ".espeak.tmp"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", raw, "--stdin"],
                   input=text.encode("utf-8"), check=True, capture_output=True)
    samples, rate = sf.read(raw, dtype="float32")
    os.remove(raw)
    samples = trim_trailing_silence(to_mono_16k(samples, rate))
    write_pcm16(path, samples)  # clipped to [-1, 1]
    return len(samples)


def trim_trailing_silence(samples):
    """``samples`` up to TRAILING_SILENCE seconds after the last one louder than SILENCE_LEVEL."""
    loud = np.flatnonzero(np.abs(samples) > SILENCE_LEVEL)
    end = (loud[-1] + 1 if len(loud) else 0) + int(TRAILING_SILENCE * SAMPLE_RATE)
    return samples[:end]


def synthesize_all(plan, out, workers):
    """Synthesize every utterance with a process pool; return {id: n_frames}."""
    for direction in sorted({u.direction for u in plan}):
        (out / "audio" / direction).mkdir(parents=True, exist_ok=True)
    jobs = [(u.src_text, u.speaker, u.speed, u.pitch, str(out / u.audio)) for u in plan]
    frames, start, step = [], time.time(), max(1, len(jobs) // 20)
    with multiprocessing.Pool(workers) as pool:
        for n_frames in pool.imap(synthesize, jobs, chunksize=8):
            frames.append(n_frames)
            if len(frames) % step == 0 or len(frames) == len(jobs):
                print(f"  synthesized {len(frames)}/{len(jobs)} ({time.time() - start:.0f} s)", flush=True)
    return {u.id: n for u, n in zip(plan, frames)}


# ------------------------------------------------------------------------------------ outputs


def manifest_rows(plan, frames):
    """Manifest rows (:data:`llast_fairseq.data.manifest.MANIFEST_COLUMNS`) of utterances."""
    return [{"id": u.id, "audio": u.audio, "n_frames": frames[u.id], "tgt_text": u.tgt_text,
             "src_text": u.src_text, "src_lang": u.src_lang, "tgt_lang": u.tgt_lang, "speaker": u.speaker}
            for u in plan]


def write_outputs(out, plan, frames, directions):
    """Write manifests, text.txt and config.yaml; return {manifest name: sha256}."""
    subsets = {f"{split}_{src}_{tgt}": [u for u in plan if u.split == split and u.direction == f"{src}_{tgt}"]
               for split in SPLITS for src, tgt in directions}
    subsets[JOINT_TRAIN] = [u for u in plan if u.split == "train"]
    subsets[JOINT_DEV] = [u for u in plan if u.split == "dev"]
    for name, rows in subsets.items():
        write_tsv(out / f"{name}.tsv", manifest_rows(rows, frames))
    with open(out / "text.txt", "w", encoding="utf-8") as f:
        for u in subsets[JOINT_TRAIN]:
            f.write(f"{u.src_text}\n{u.tgt_text}\n")
    write_config(out)
    return {f"{name}.tsv": hashlib.sha256((out / f"{name}.tsv").read_bytes()).hexdigest()
            for name in sorted(subsets)}


def corpus_stats(grammar, plan, frames, directions, report, digests):
    """Counts, durations and distinct pairs per split and direction, plus grammar size."""
    splits = {}
    for split in SPLITS:
        for direction in ("_".join(d) for d in directions):
            rows = [u for u in plan if u.split == split and u.direction == direction]
            seconds = [frames[u.id] / SAMPLE_RATE for u in rows]
            splits.setdefault(split, {})[direction] = {
                "utterances": len(rows),
                "distinct_pairs": len({(u.src_text, u.tgt_text) for u in rows}),
                "hours": round(sum(seconds) / 3600, 3),
                "mean_seconds": round(sum(seconds) / len(seconds), 2),
                "max_seconds": round(max(seconds), 2),
                "voices": len({u.voice for u in rows}),
            }
    meanings = grammar.count_meanings()
    return {
        "utterances": len(plan),
        "hours": round(sum(frames.values()) / SAMPLE_RATE / 3600, 3),
        "splits": splits,
        "held_out": report,
        "voices": {"train": TRAIN_VOICES, "held_out": HELD_OUT_VOICES},
        "grammar_meanings": {**meanings, "total": sum(meanings.values())},
        "manifest_sha256": digests,
    }


# -------------------------------------------------------------------------------- cache stamp


def make_stamp(cfg: CorpusConfig, lexicon: str):
    """The cache key: version, digest of the lexicon and the code, every setting of ``cfg``."""
    code = hashlib.sha256(Path(lexicon).read_bytes())
    for module in (grammar_module, audio, manifest):
        code.update(Path(module.__file__).read_bytes())
    code.update(Path(__file__).read_bytes())
    return {"version": VERSION, "code_sha256": code.hexdigest(), "seed": cfg.seed,
            "directions": ["-".join(d) for d in cfg.directions], "sizes": cfg.sizes}


def read_stamp(out):
    """The stamp stored in out, or None."""
    path = out / STAMP_NAME
    return json.loads(path.read_text()) if path.is_file() else None


def write_stamp(out, stamp, complete):
    """Store the stamp with a completion flag."""
    (out / STAMP_NAME).write_text(json.dumps({**stamp, "complete": complete}, indent=1) + "\n")


def prepare_out_dir(out, stamp):
    """Create out; clear a corpus made with other arguments; refuse foreign directories.

    Returns True if out already holds the complete corpus for this stamp.
    """
    previous = read_stamp(out)
    if previous is not None:
        complete = previous.pop("complete", False)
        if previous == stamp:
            return complete
        print(f"{out} holds a corpus made with other arguments or code; rebuilding it")
        shutil.rmtree(out / "audio", ignore_errors=True)
        for path in out.glob("*.tsv"):
            path.unlink()
        for name in ("text.txt", "config.yaml", "stats.json", STAMP_NAME):
            (out / name).unlink(missing_ok=True)
    elif out.exists() and any(out.iterdir()):
        raise CorpusError(f"{out} is not empty and has no {STAMP_NAME}; choose another output directory")
    out.mkdir(parents=True, exist_ok=True)
    return False


def build_corpus(out, lexicon: str, cfg: CorpusConfig = CorpusConfig(), workers: int = 2):
    """Build (or resume, or reuse) the corpus ``cfg`` describes in ``out``, its sentences drawn
    from the grammar over the ``lexicon`` file, with ``workers`` synthesis processes.

    Returns the stats (``stats.json``), or None when ``out`` already held this corpus.
    """
    if shutil.which("espeak-ng") is None:
        raise CorpusError("espeak-ng not found on PATH (apt-get install espeak-ng)")
    grammar = Grammar(lexicon)
    out = Path(out).resolve()
    stamp = make_stamp(cfg, lexicon)
    if prepare_out_dir(out, stamp):
        print(f"corpus in {out} is up to date ({STAMP_NAME} matches); nothing to do")
        return None
    write_stamp(out, stamp, complete=False)
    start = time.time()
    plan = plan_corpus(grammar, cfg.seed, cfg.directions, cfg.sizes)
    report = held_out_report(plan)
    print("held-out check (all must be 0):", json.dumps(report))
    if any(report.values()):
        raise CorpusError("dev/test overlaps train")
    print(f"synthesizing {len(plan)} utterances with {workers} processes into {out}")
    frames = synthesize_all(plan, out, workers)
    digests = write_outputs(out, plan, frames, cfg.directions)
    stats = corpus_stats(grammar, plan, frames, cfg.directions, report, digests)
    stats["build_seconds"] = round(time.time() - start, 1)
    (out / "stats.json").write_text(json.dumps(stats, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    write_stamp(out, stamp, complete=True)
    manifest_hash = hashlib.sha256("".join(digests.values()).encode()).hexdigest()[:16]
    print(f"done in {stats['build_seconds']} s: {stats['utterances']} utterances, {stats['hours']} h, "
          f"manifest hash {manifest_hash}")
    return stats
