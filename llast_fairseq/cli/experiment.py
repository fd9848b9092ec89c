"""llast-experiment: run an experiment grid (variants x seeds) with fairseq-train and
fairseq-generate, and report it.

    llast-experiment run GRID.yaml --dir DIR [--gpu 0] [--stale-after 600]
    llast-experiment report GRID.yaml --dir DIR

``run`` runs every cell of the grid not yet done (resumable: run it again after a stop); several
runners may share DIR, on other GPUs or machines (a cell is claimed atomically).
``report`` writes DIR/report.md, report.json, bleu_vs_params.png and dev_curves.png from the
cells done so far. The grid format: llast_fairseq/experiments/grid.py; the runner:
llast_fairseq/experiments/runner.py; the report: llast_fairseq/experiments/report.py.

``cascade`` is the step the runner writes into a cascade variant's command.sh: it decodes a
test set through LlastTranslator.cascade (llast_fairseq/experiments/cascade.py).
"""
import argparse
import sys
import time

from ..evaluation import EvalError
from ..experiments.grid import GridError, check_commands, load_grid


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="llast-experiment", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("run", "run the grid's cells that are not done"),
                       ("report", "tables, significance tests and pictures of the cells done")):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("grid", help="grid YAML file")
        p.add_argument("--dir", required=True, help="the grid's directory: one subdirectory per cell")
    run = sub.choices["run"]
    run.add_argument("--gpu", help="CUDA_VISIBLE_DEVICES for this runner's commands (e.g. 0, or 0,1)")
    run.add_argument("--stale-after", type=float, default=600,
                     help="seconds without a heartbeat after which another runner's claim on a cell is "
                          "taken over (default 600; give every runner sharing a directory the same)")
    cascade = sub.add_parser("cascade", help="decode a test set through the cascade (a cell's step)")
    cascade.add_argument("data", help="manifest directory")
    cascade.add_argument("--subset", required=True, help="manifest name(s), comma-joined")
    cascade.add_argument("--checkpoint", required=True, help="fairseq-train checkpoint")
    cascade.add_argument("--out", required=True, help="output directory (generate-<subset>.txt, seconds.json)")
    cascade.add_argument("--llm-path", help="base LLM directory, if not where the checkpoint's config says")
    cascade.add_argument("--beam", type=int, default=5, help="beam size")
    cascade.add_argument("--max-len-a", type=float, default=0, help="most new tokens: a * source length + b")
    cascade.add_argument("--max-len-b", type=int, default=200, help="most new tokens: a * source length + b")
    cascade.add_argument("--min-len", type=int, default=1, help="fewest new tokens")
    cascade.add_argument("--lenpen", type=float, default=1, help="length penalty")
    cascade.add_argument("--batch-size", type=int, default=8, help="utterances decoded together")
    cascade.add_argument("--cpu", action="store_true", help="decode on the CPU even where CUDA is available")
    args = parser.parse_args(argv)

    try:
        if args.command == "cascade":
            return cascade_main(args)
        grid = load_grid(args.grid)
        if args.command == "run":
            from ..experiments.runner import run_grid

            check_commands(grid, args.dir)
            start = time.time()

            def say(msg: str):
                minutes, seconds = divmod(int(time.time() - start), 60)
                print(f"[llast-experiment {minutes // 60:d}:{minutes % 60:02d}:{seconds:02d}] {msg}", flush=True)

            return 1 if run_grid(grid, args.dir, args.gpu, args.stale_after, say) else 0
        from ..experiments.report import write_report

        report = write_report(grid, args.grid, args.dir)
        print(report["markdown"])
        print(f"\nwrote {args.dir}/report.md, report.json, " + ", ".join(report["pictures"]), flush=True)
        return 0
    except (GridError, EvalError) as e:
        print(f"llast-experiment: error: {e}", file=sys.stderr)
        return 1


def cascade_main(args) -> int:
    import torch

    from ..experiments.cascade import decode_cascade

    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    seconds = decode_cascade(args.data, args.subset, args.checkpoint, args.out, args.llm_path, args.batch_size,
                             device, beam=args.beam, max_len_a=args.max_len_a, max_len_b=args.max_len_b,
                             min_len=args.min_len, lenpen=args.lenpen)
    n = seconds["utterances"]
    print(f"cascade: {n} utterances, {(seconds['asr_seconds'] + seconds['mt_seconds']) / n:.3f} s each "
          f"(end to end {seconds['e2e_seconds'] / n:.3f} s) -> {args.out}", flush=True)
    return 0
