"""llast-benchmark: decoding, encoding, training, cascade and data-check costs as ratios against baselines
run in the same process; prints Markdown tables and writes JSON."""
import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from ..benchmark import DEFAULT_SECTIONS, GENERATE_ROWS, PRESETS, SECTIONS, run, table
from ..models import autocast


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS),
                        help="model sizes, smallest first (training and cascade use the last)")
    parser.add_argument("--sections", nargs="+", default=DEFAULT_SECTIONS, choices=SECTIONS,
                        help=f"what to measure (default: {' '.join(DEFAULT_SECTIONS)})")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per measurement (the median is kept)")
    parser.add_argument("--training-steps", type=int, default=2, help="timed training steps per variant")
    parser.add_argument("--data-check-rows", type=int, default=24000,
                        help="manifest rows for the data_check section (wav, flac, mp3 and zip entries in turn)")
    parser.add_argument("--generate-rows", nargs=2, type=int, default=GENERATE_ROWS,
                        help="generate_memory: the two manifest sizes whose peak RSS is compared")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads per process (1: ratios stay stable on a shared machine)")
    parser.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)),
                        help="measurements run at once, each in a process of its own (default: one per core)")
    parser.add_argument("--work-dir", help="where the random-init models and clips are written (default: a temporary directory)")
    parser.add_argument("--json", default="benchmark.json", help="output file")
    args = parser.parse_args(argv)
    if "decoding_bf16" in args.sections and not autocast.bf16_autocast_pays("cpu"):
        parser.error(f"decoding_bf16: this CPU ({autocast.cpu_name()}) has no native bfloat16 (AVX512-BF16 or "
                     f"AMX): bf16 matrix products run {1 / autocast.cpu_bf16_speedup():.0f}x slower than "
                     f"float32 here, so --autocast-bf16 stays off; leave decoding_bf16 out")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rows = run(Path(args.work_dir or tmp), args.presets, args.sections, args.jobs, args.repeats,
                   args.training_steps, args.data_check_rows, args.generate_rows)
    Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    print(table(rows), flush=True)
    print(f"\nwrote {args.json} ({time.perf_counter() - start:.0f} s)", flush=True)

