#!/usr/bin/env python
"""Cost of the load-time manifest check (llast_fairseq/data/manifest_check.py) on a generated
manifest, first check and cached second load.

    .venv/bin/python scripts/bench_manifest_check.py --rows 24000 --work-dir /tmp/bench-check

Speaks a few sentences with espeak-ng and writes each as 22.05 kHz wav, 16 kHz flac and 22.05 kHz
mp3, and as entries of a stored zip (one entry per row up to --zip-entries, reused after), then a
manifest of --rows rows cycling through wav, flac, mp3 and zip entries (the files are reused many
times, so their headers are in the page cache: on a cold disk each clip costs a random read
more). It times fairseq's TSV reader, the check with each --threads setting (cache removed
first), and the cached check (median of 5 loads), and prints rows per second and the cost per
100,000 rows.
"""
import argparse
import gc
import json
import logging
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import soundfile as sf

from llast_fairseq.data.audio import SAMPLE_RATE, to_mono_16k
from llast_fairseq.data.manifest import write_config, write_tsv
from llast_fairseq.data.manifest_check import Needs, cache_paths, check_manifest
from llast_fairseq.prep.pipeline import zip_manifest

SENTENCES = ["Le chat mange une pomme.", "Der Mann trinkt Wasser.", "La femme lit un livre.",
             "Die Frau kauft Brot.", "Les enfants jouent au parc.", "El perro duerme en el jardín."]
VOICES = ["fr", "de", "fr", "de", "fr", "es"]
KINDS = ("wav", "flac", "mp3", "zip")


def make_data(root: Path, rows: int, zip_entries: int) -> Path:
    """The clips, the zip and ``train.tsv`` under ``root``; returns the manifest's path."""
    root.mkdir(parents=True, exist_ok=True)
    clips = []
    for i, (text, voice) in enumerate(zip(SENTENCES, VOICES)):
        wav = subprocess.run(["espeak-ng", "-v", voice, "--stdout", text], check=True, capture_output=True).stdout
        (root / f"s{i}.wav").write_bytes(wav)
        speech, rate = sf.read(root / f"s{i}.wav")
        sf.write(root / f"s{i}.flac", to_mono_16k(speech, rate), SAMPLE_RATE, subtype="PCM_16")
        sf.write(root / f"s{i}.mp3", speech, rate)
        clips.append({"wav": (f"s{i}.wav", len(speech)), "mp3": (f"s{i}.mp3", len(speech)),
                      "flac": (f"s{i}.flac", sf.info(root / f"s{i}.flac").frames), "text": text, "lang": voice})
    with zipfile.ZipFile(root / "audio.zip", "w", zipfile.ZIP_STORED) as zf:
        for k in range(zip_entries):
            zf.write(root / f"s{k % len(clips)}.flac", f"e{k}.flac")
    slices = zip_manifest(root / "audio.zip")
    manifest = []
    for r in range(rows):
        clip, kind = clips[r % len(clips)], KINDS[r % len(KINDS)]
        if kind == "zip":
            k = (r // len(KINDS)) % zip_entries
            offset, length = slices[f"e{k}.flac"]
            audio, n_frames = f"audio.zip:{offset}:{length}", clips[k % len(clips)]["flac"][1]
            clip = clips[k % len(clips)]
        else:
            audio, n_frames = clip[kind]
        manifest.append({"id": f"r{r}", "audio": audio, "n_frames": n_frames, "tgt_text": "A sentence.",
                         "src_text": clip["text"], "src_lang": clip["lang"], "tgt_lang": "en", "speaker": "espeak"})
    write_tsv(root / "train.tsv", manifest)
    write_config(root)
    return root / "train.tsv"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=24000, help="manifest rows (wav, flac, mp3, zip in turn)")
    parser.add_argument("--zip-entries", type=int, default=2000, help="entries of the stored zip")
    parser.add_argument("--threads", type=int, nargs="+", default=[16, 1], help="header-reading threads to time")
    parser.add_argument("--work-dir", default="bench-manifest-check", help="where the clips and manifest go")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stdout)
    from fairseq.data.audio.speech_to_text_dataset import SpeechToTextDatasetCreator

    root = Path(args.work_dir).resolve()
    if root.exists():
        shutil.rmtree(root)
    start = time.perf_counter()
    tsv = make_data(root, args.rows, args.zip_entries)
    print(f"wrote {args.rows} rows and {args.zip_entries} zip entries in {time.perf_counter() - start:.0f} s", flush=True)
    start = time.perf_counter()
    rows = SpeechToTextDatasetCreator._load_samples_from_tsv(str(root), "train")
    figures = {"rows": len(rows), "read_tsv_s": time.perf_counter() - start}
    needs = Needs(("tgt_text", "src_text"))
    for threads in args.threads:
        for path in cache_paths(tsv):
            path.unlink(missing_ok=True)
        gc.collect()  # a full collection over the rows' dicts would otherwise land in some timings
        start = time.perf_counter()
        verdict = check_manifest(tsv, rows, root, needs, threads)
        figures[f"first_check_s_{threads}_threads"] = time.perf_counter() - start
        assert not verdict.problems, verdict.problems[:3]
    cached = []
    for _ in range(5):
        gc.collect()
        start = time.perf_counter()
        check_manifest(tsv, rows, root, needs)
        cached.append(time.perf_counter() - start)
    figures["cached_check_s"] = sorted(cached)[2]
    print(f"fairseq's reader: {figures['read_tsv_s']:.2f} s for {len(rows)} rows")
    for threads in args.threads:
        seconds = figures[f"first_check_s_{threads}_threads"]
        print(f"first check, {threads} threads: {seconds:.2f} s = {len(rows) / seconds:,.0f} rows/s = "
              f"{seconds * 100000 / len(rows):.1f} s per 100,000 rows")
    print(f"cached check (median of 5): {figures['cached_check_s'] * 1000:.0f} ms "
          f"({figures['cached_check_s'] * 100000 / len(rows):.2f} s per 100,000 rows)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
