"""llast-evaluate: score fairseq-generate outputs of llast_st per language direction.

    llast-evaluate --data DATA RESULTS_SEED1 [RESULTS_SEED2 ...] [--asr RESULTS_ASR ...] [--json out.json]

Each RESULTS directory is one run (e.g. one seed) holding the generate-<subset>.txt files that
``fairseq-generate DATA --gen-subset <subset> --results-path RESULTS`` writes. Prints BLEU and chrF
per (subset, direction), WER per source language for --asr runs, as mean±std over the runs;
see llast_fairseq.evaluation for the metrics' definitions.
"""
import argparse
import json
import logging
import sys

from llast_fairseq.evaluation import EvalError, aggregate, evaluate_run, format_table, to_json


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="directory of the <subset>.tsv manifests that fairseq-generate read")
    parser.add_argument("results", nargs="*", help="translation results directories, one per run")
    parser.add_argument("--asr", nargs="+", default=[], help="transcription results directories, one per run")
    parser.add_argument("--json", help="also write the scores to this JSON file")
    args = parser.parse_args(argv)
    if not args.results and not args.asr:
        parser.error("give at least one results directory, or --asr with one")
    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.INFO)
    try:
        manifests = {}
        st_runs = [evaluate_run(args.data, d, False, manifests) for d in args.results]
        asr_runs = [evaluate_run(args.data, d, True, manifests) for d in args.asr]
        st_agg = aggregate(st_runs, args.results) if st_runs else {}
        asr_agg = aggregate(asr_runs, args.asr) if asr_runs else {}
    except EvalError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_table(st_agg, asr_agg))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(to_json(st_agg, asr_agg, args.results, args.asr, st_runs), f, indent=2, ensure_ascii=False)
    return 0
