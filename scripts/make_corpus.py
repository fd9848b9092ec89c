#!/usr/bin/env python
"""Build the offline multilingual spoken translation corpus used by the LLaST demo.

Sentences come from the synchronous grammar in
examples/speech_translation_llm/corpus/lexicon.py (one meaning rendered in
French, German, Spanish and English); the source side is spoken by espeak-ng
with many voice variants and written as 16 kHz mono 16-bit wav.

Layout of --out DIR::

    audio/<src>_<tgt>/<id>.wav                 one file per utterance
    {train,dev,test}_<src>_<tgt>.tsv           fairseq speech-to-text manifests
    train.tsv, dev.tsv                         all directions joined
    text.txt                                   train source + target sentences
    config.yaml                                audio_root for S2TDataConfig
    stats.json                                 counts, durations, held-out report
    corpus_stamp.json                          arguments + code digest (cache key)

Dev and test sentences never occur (in any language) in train, and dev/test are
spoken only by held-out voice variants.  Output is deterministic for a seed.
Re-running with the same arguments exits at once; an interrupted run resumes.

    python scripts/make_corpus.py --out cache/corpus-default
    python scripts/make_corpus.py --out /tmp/c --preset tiny --directions fr-en,en-fr
"""

import argparse
import hashlib
import importlib.util
import json
import multiprocessing
import os
import random
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parent))
import s2t_manifest  # noqa: E402  (scripts/ is not a package)

VERSION = 2  # 2: trailing silence trimmed
REPO = Path(__file__).resolve().parents[1]
LEXICON_PATH = REPO / "examples" / "speech_translation_llm" / "corpus" / "lexicon.py"
STAMP_NAME = "corpus_stamp.json"

SAMPLE_RATE = 16000
ESPEAK_LANG = {"fr": "fr", "de": "de", "es": "es", "en": "en-us"}
TRAIN_VOICES = ("m1 m2 m4 m5 m6 m8 f1 f2 f3 f5 klatt klatt2 klatt4 "
                "Alicia Andy belinda benjamin david linda max paul robert steph travis").split()
HELD_OUT_VOICES = "m3 m7 f4 klatt3 Andrea Denis michel victor".split()
SPEED_RANGE = (130, 190)  # words per minute
# espeak-ng ends every sentence with about 0.33 s of silence (13% of an utterance): keep 0.1 s
TRAILING_SILENCE = 0.1  # seconds kept after the last sample above SILENCE_LEVEL
SILENCE_LEVEL = 0.01
PITCH_RANGE = (30, 70)

SPLITS = ("train", "dev", "test")
PRESETS = {"default": (4500, 100, 100), "tiny": (40, 8, 8)}
DEFAULT_DIRECTIONS = "fr-en,de-en,es-en,en-fr"
COLUMNS = ["id", "audio", "n_frames", "tgt_text", "src_text", "src_lang", "tgt_lang", "speaker"]
MAX_REJECTIONS = 10000


def load_lexicon():
    """Import the grammar module from its file (it lives outside any package)."""
    spec = importlib.util.spec_from_file_location("llast_corpus_lexicon", LEXICON_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


lexicon = load_lexicon()


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


# ---------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------

def parse_directions(text):
    """Parse "fr-en,de-en" into [("fr", "en"), ("de", "en")], rejecting bad pairs."""
    directions = []
    for item in text.split(","):
        parts = item.strip().split("-")
        if len(parts) != 2 or any(p not in lexicon.LANGS for p in parts) or parts[0] == parts[1]:
            raise argparse.ArgumentTypeError(
                f"bad direction {item!r}: use SRC-TGT with two different languages from {lexicon.LANGS}")
        if tuple(parts) in directions:
            raise argparse.ArgumentTypeError(f"direction {item!r} given twice")
        directions.append(tuple(parts))
    return directions


def _positive_int(text):
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parse_args(argv=None):
    """Command line -> namespace with train/dev/test counts resolved from the preset."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="corpus directory")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default",
                        help="per-direction sizes: default 4500/100/100, tiny 40/8/8")
    for split in SPLITS:
        parser.add_argument(f"--{split}-per-direction", type=_positive_int,
                            help=f"{split} utterances per direction (overrides --preset)")
    parser.add_argument("--directions", type=parse_directions, default=parse_directions(DEFAULT_DIRECTIONS),
                        help=f"comma-separated SRC-TGT pairs (default {DEFAULT_DIRECTIONS})")
    parser.add_argument("--workers", type=_positive_int, default=2, help="synthesis processes")
    args = parser.parse_args(argv)
    for split, size in zip(SPLITS, PRESETS[args.preset]):
        key = f"{split}_per_direction"
        if getattr(args, key) is None:
            setattr(args, key, size)
    return args


# ---------------------------------------------------------------------------
# Sentence plan
# ---------------------------------------------------------------------------

def normalize(text):
    """Lowercase, punctuation removed, single spaces: the key for overlap checks."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def plan_corpus(seed, directions, sizes):
    """Draw every utterance of the corpus, test first, then dev, then train.

    Each meaning is used once: it is rejected if its sentence in any language
    was already drawn, so no sentence repeats within or across splits.  Drawing
    test first keeps the test set unchanged when only the train size changes.
    """
    rng = random.Random(seed)
    seen = set()
    plan = []
    for split in ("test", "dev", "train"):
        voices = TRAIN_VOICES if split == "train" else HELD_OUT_VOICES
        for src, tgt in directions:
            for index in range(sizes[split]):
                texts = _draw_unseen(rng, seen)
                plan.append(Utterance(
                    id=f"{src}_{tgt}_{split}_{index:06d}", split=split, src_lang=src, tgt_lang=tgt,
                    src_text=texts[src], tgt_text=texts[tgt], voice=rng.choice(voices),
                    speed=rng.randint(*SPEED_RANGE), pitch=rng.randint(*PITCH_RANGE)))
    return plan


def _draw_unseen(rng, seen):
    """Sample a meaning none of whose sentences is in seen; add them to seen."""
    for _ in range(MAX_REJECTIONS):
        texts = lexicon.realize_all(lexicon.sample_clause(rng))
        keys = {(lang, normalize(text)) for lang, text in texts.items()}
        if not keys & seen:
            seen.update(keys)
            return texts
    raise RuntimeError("the grammar ran out of new sentences; request fewer utterances")


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


# ---------------------------------------------------------------------------
# Speech synthesis
# ---------------------------------------------------------------------------

def synthesize(job):
    """Speak one sentence into a 16 kHz wav unless the file exists; return its n_frames.

    job = (text, espeak voice spec, speed, pitch, output path).  The wav is
    written to a temporary name and renamed, so an existing file is complete.
    """
    text, voice, speed, pitch, path = job
    if os.path.exists(path):
        return sf.info(path).frames
    raw, tmp = path + ".espeak.tmp", path + ".tmp"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", raw, "--stdin"],
                   input=text.encode("utf-8"), check=True, capture_output=True)
    audio, rate = sf.read(raw, dtype="float32")
    os.remove(raw)
    audio = trim_trailing_silence(np.clip(soxr.resample(audio, rate, SAMPLE_RATE), -1.0, 1.0))
    sf.write(tmp, audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)
    return len(audio)


def trim_trailing_silence(audio):
    """``audio`` up to TRAILING_SILENCE seconds after its last sample louder than SILENCE_LEVEL."""
    loud = np.flatnonzero(np.abs(audio) > SILENCE_LEVEL)
    end = (loud[-1] + 1 if len(loud) else 0) + int(TRAILING_SILENCE * SAMPLE_RATE)
    return audio[:end]


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


# ---------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------

def write_tsv(path, plan, frames):
    """Write a manifest that fairseq's S2T reader returns byte-exact (see s2t_manifest.write_tsv)."""
    s2t_manifest.write_tsv(path, COLUMNS, [
        {"id": u.id, "audio": u.audio, "n_frames": frames[u.id], "tgt_text": u.tgt_text,
         "src_text": u.src_text, "src_lang": u.src_lang, "tgt_lang": u.tgt_lang, "speaker": u.speaker}
        for u in plan])


def write_outputs(out, plan, frames, directions):
    """Write manifests, text.txt and config.yaml; return {manifest name: sha256}."""
    names = []
    for split in SPLITS:
        for src, tgt in directions:
            name = f"{split}_{src}_{tgt}.tsv"
            write_tsv(out / name, [u for u in plan if u.split == split and u.direction == f"{src}_{tgt}"],
                      frames)
            names.append(name)
    for split in ("train", "dev"):
        write_tsv(out / f"{split}.tsv", [u for u in plan if u.split == split], frames)
        names.append(f"{split}.tsv")
    with open(out / "text.txt", "w", encoding="utf-8") as f:
        for u in plan:
            if u.split == "train":
                f.write(f"{u.src_text}\n{u.tgt_text}\n")
    (out / "config.yaml").write_text(f"audio_root: {json.dumps(str(out))}\n", encoding="utf-8")
    return {name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in sorted(names)}


def corpus_stats(plan, frames, directions, report, digests):
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
    meanings = lexicon.count_meanings()
    return {
        "utterances": len(plan),
        "hours": round(sum(frames.values()) / SAMPLE_RATE / 3600, 3),
        "splits": splits,
        "held_out": report,
        "voices": {"train": TRAIN_VOICES, "held_out": HELD_OUT_VOICES},
        "grammar_meanings": {**meanings, "total": sum(meanings.values())},
        "manifest_sha256": digests,
    }


# ---------------------------------------------------------------------------
# Cache stamp
# ---------------------------------------------------------------------------

def make_stamp(args):
    """The cache key: version, code digest and every argument that changes the output."""
    code = hashlib.sha256(LEXICON_PATH.read_bytes() + Path(__file__).read_bytes()).hexdigest()
    return {"version": VERSION, "code_sha256": code, "seed": args.seed,
            "directions": ["-".join(d) for d in args.directions],
            "sizes": {split: getattr(args, f"{split}_per_direction") for split in SPLITS}}


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
        raise SystemExit(f"error: {out} is not empty and has no {STAMP_NAME}; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    return False


def main(argv=None):
    """Build (or resume, or reuse) the corpus described by the command line."""
    args = parse_args(argv)
    if shutil.which("espeak-ng") is None:
        raise SystemExit("error: espeak-ng not found on PATH (apt-get install espeak-ng)")
    out = Path(args.out).resolve()
    stamp = make_stamp(args)
    if prepare_out_dir(out, stamp):
        print(f"corpus in {out} is up to date ({STAMP_NAME} matches); nothing to do")
        return 0
    write_stamp(out, stamp, complete=False)
    start = time.time()
    sizes = {split: getattr(args, f"{split}_per_direction") for split in SPLITS}
    plan = plan_corpus(args.seed, args.directions, sizes)
    report = held_out_report(plan)
    print("held-out check (all must be 0):", json.dumps(report))
    if any(report.values()):
        raise SystemExit("error: dev/test overlaps train")
    print(f"synthesizing {len(plan)} utterances with {args.workers} processes into {out}")
    frames = synthesize_all(plan, out, args.workers)
    digests = write_outputs(out, plan, frames, args.directions)
    stats = corpus_stats(plan, frames, args.directions, report, digests)
    stats["build_seconds"] = round(time.time() - start, 1)
    (out / "stats.json").write_text(json.dumps(stats, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    write_stamp(out, stamp, complete=True)
    manifest_hash = hashlib.sha256("".join(digests.values()).encode()).hexdigest()[:16]
    print(f"done in {stats['build_seconds']} s: {stats['utterances']} utterances, {stats['hours']} h, "
          f"manifest hash {manifest_hash}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
