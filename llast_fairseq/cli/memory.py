"""llast-memory: GPU memory per training process for the paper's 2B and 8B presets, computed from
the model configs (weights, trained parameters with gradients and Adam, activations at a batch),
and the largest batch that fits 24, 40 and 80 GB; --validate checks the estimator against the
measured peak of real training steps on the CPU."""
import argparse
import time
from pathlib import Path

from ..memory import DTYPE_BYTES, FIT_MARGIN, PRESETS, Batch, Recipe, measure, preset_table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS), help="model sizes")
    parser.add_argument("--batch-size", type=int, default=8, help="utterances per GPU (--batch-size of fairseq-train)")
    parser.add_argument("--audio-seconds", type=float, default=30.0,
                        help="clip length the batch is padded to (Whisper always runs on 30 s)")
    parser.add_argument("--prompt-tokens", type=int, default=20, help="prompt tokens around the audio (LLaST's Llama-2 prompt: 20)")
    parser.add_argument("--target-tokens", type=int, default=64, help="target tokens with EOS, padded length in the batch")
    parser.add_argument("--llm-dtype", default="bfloat16", choices=list(DTYPE_BYTES), help="--llm-dtype of fairseq-train")
    parser.add_argument("--frame-stack", type=int, default=1, help="--frame-stack of fairseq-train")
    parser.add_argument("--llm-lora-r", type=int, default=512, help="--llm-lora-r of fairseq-train (paper: 512)")
    parser.add_argument("--whisper-lora-r", type=int, default=128,
                        help="--whisper-lora-r of fairseq-train (paper: 128; 0: Whisper frozen)")
    parser.add_argument("--processes", type=int, default=8,
                        help="data-parallel processes (more than 1 adds DDP's gradient buckets)")
    parser.add_argument("--validate", action="store_true",
                        help="also measure real training steps of scaled-down models on the CPU (about 3 min)")
    parser.add_argument("--work-dir", help="where --validate writes its models and clips (default: a temporary directory)")
    args = parser.parse_args(argv)
    recipe = Recipe(whisper_lora_r=args.whisper_lora_r, llm_lora_r=args.llm_lora_r, llm_dtype=args.llm_dtype,
                    frame_stack=args.frame_stack)
    batch = Batch(args.batch_size, round(args.audio_seconds * 50), args.prompt_tokens, args.target_tokens)
    for name in args.presets:
        print(preset_table(name, recipe, batch, args.processes) + "\n", flush=True)
    print(f"GB = 10^9 bytes. \"fits\": the estimate is at most {FIT_MARGIN:.0%} of the card (the CUDA context "
          "and the allocator's fragmentation are not counted).", flush=True)
    if args.validate:
        start = time.perf_counter()
        print("\nthe estimator against measured peaks (CPU, one forward and backward pass, peak RSS above "
              "the memory before it):", flush=True)
        rows = measure(Path(args.work_dir) if args.work_dir else None)
        print("\n| variant | measured MB | estimated MB | error |\n|---|---|---|---|")
        for r in rows:
            print(f"| {r['variant']} | {r['measured_mb']:.0f} | {r['estimated_mb']:.0f} | {r['error']:+.1%} |")
        print(f"\n({time.perf_counter() - start:.0f} s)", flush=True)
