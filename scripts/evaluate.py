#!/usr/bin/env python3
"""Score fairseq-generate outputs of llast_st per language direction.

    scripts/evaluate.py --data DATA_DIR RES_SEED1 [RES_SEED2 ...] [--asr RES_ASR ...] [--json out.json]

Every RESULTS_DIR is one run (e.g. one seed) and holds generate-<subset>.txt files as written by
`fairseq-generate DATA --gen-subset <subset> --results-path RESULTS_DIR`. Row <i> of a file (S-/T-/D-
lines) is row <i> of DATA_DIR/<subset>.tsv; rows are grouped by (subset, src_lang->tgt_lang).

ST runs: hypothesis = first D- line (detokenized), reference = T- line, which must equal the
manifest's tgt_text (whitespace-normalised), otherwise the wrong data dir / manifest is in use.
  BLEU: sacrebleu, tokenize 13a + lowercase for X->en, "zh" for ->zh, "ja-mecab" for ->ja,
        13a cased otherwise.   chrF: sacrebleu CHRF with its defaults (chrF2, cased).
ASR runs (--asr): references are checked against src_text; WER per (subset, source language),
  corpus-level (total edits / total reference words) over lowercased, punctuation-stripped words,
  computed by the small edit-distance function `wer` below (no extra dependency); `wer` returns a
  fraction, tables and JSON show it in percent like BLEU/chrF.
Several runs of the same subsets: mean and sample std (ddof=1) per metric and direction.
"""
import argparse
import glob
import json
import os
import statistics
import sys
import unicodedata

import sacrebleu

GEN_PREFIX, GEN_SUFFIX = "generate-", ".txt"


class EvalError(Exception):
    """A user-facing problem with the inputs (missing file, wrong manifest, ...)."""


# ----------------------------------------------------------------------------- reading

def read_generate_output(path):
    """Parse a fairseq-generate output file.

    Returns a list of (index, reference, hypothesis) sorted by index; reference is the T- line
    (None when the file has none), hypothesis the first D- line (detokenized, top of the n-best).
    Log lines and the final "Generate ... BLEU" line are ignored.
    """
    refs, hyps = {}, {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            tag, _, rest = line.partition("\t")
            if len(tag) < 3 or tag[1] != "-" or tag[0] not in "TD" or not tag[2:].isdigit():
                continue
            idx = int(tag[2:])
            if tag[0] == "T":
                refs[idx] = rest
            elif idx not in hyps:  # D-<i>\t<score>\t<text>; keep the 1-best only
                parts = rest.split("\t", 1)
                if len(parts) != 2:
                    raise EvalError(f"{path}:{lineno}: malformed D- line: {line!r}")
                hyps[idx] = parts[1]
    if not hyps:
        raise EvalError(f"{path}: no D-<i> hypothesis lines found (was it run with --quiet?)")
    return [(i, refs.get(i), hyps[i]) for i in sorted(hyps)]


def load_manifest(data_dir, subset):
    """Rows (list of dicts) of DATA_DIR/<subset>.tsv, read like fairseq's S2T dataset does.

    A comma-joined subset (``test_fr_en,test_de_en``) is the rows of each in turn, as the
    llast_st task reads it for ``--gen-subset``.
    """
    from fairseq.data.audio.speech_to_text_dataset import SpeechToTextDatasetCreator

    rows = []
    for name in subset.split(","):
        try:
            rows += SpeechToTextDatasetCreator._load_samples_from_tsv(data_dir, name)
        except FileNotFoundError:
            raise EvalError(
                f"unknown subset {name!r}: no manifest {os.path.join(data_dir, name + '.tsv')}"
            ) from None
    return rows


def _norm_ws(s):
    return " ".join(s.split())


def align_with_manifest(gen_path, rows, asr=False):
    """Group a generate file's rows by direction and check its references against the manifest.

    Returns {key: (hyps, refs)}; key is (src_lang, tgt_lang) for ST, src_lang for ASR.
    """
    field = "src_text" if asr else "tgt_text"
    groups = {}
    for idx, ref, hyp in read_generate_output(gen_path):
        if idx >= len(rows):
            raise EvalError(
                f"{gen_path}: row {idx} does not exist in the manifest ({len(rows)} rows); "
                "wrong --data dir or manifest?"
            )
        row = rows[idx]
        expected = row.get(field) or ""
        if ref is None:
            ref = expected
        elif _norm_ws(ref) != _norm_ws(expected):
            raise EvalError(
                f"{gen_path}: row {idx} (id {row.get('id')}): reference T-{idx} {ref!r} differs from "
                f"manifest {field} {expected!r}; wrong --data dir or manifest"
                + ("" if asr else " (or an ASR run passed without --asr?)")
            )
        src, tgt = row.get("src_lang", ""), row.get("tgt_lang", "")
        if not src or (not asr and not tgt):
            raise EvalError(f"{gen_path}: manifest row {idx} has no src_lang/tgt_lang")
        key = src if asr else (src, tgt)
        hyps, refs = groups.setdefault(key, ([], []))
        hyps.append(hyp)
        refs.append(ref)
    n_done = sum(len(h) for h, _ in groups.values())
    if n_done < len(rows):
        print(f"WARNING: {gen_path} covers {n_done} of {len(rows)} manifest rows", file=sys.stderr)
    return groups


# ----------------------------------------------------------------------------- metrics

def bleu_settings(tgt):
    """sacrebleu BLEU keyword arguments for target language `tgt`."""
    tgt = tgt.lower().replace("_", "-").split("-")[0]  # "zh-CN" -> "zh"
    if tgt == "en":
        return {"tokenize": "13a", "lowercase": True}
    if tgt == "zh":
        return {"tokenize": "zh", "lowercase": False}
    if tgt == "ja":
        try:
            import ipadic  # noqa: F401
            import MeCab  # noqa: F401
        except ImportError:
            raise EvalError(
                "BLEU for ->ja needs MeCab: pip install 'sacrebleu[ja]==2.5.1' "
                "(installs mecab-python3 and ipadic)"
            ) from None
        return {"tokenize": "ja-mecab", "lowercase": False}
    return {"tokenize": "13a", "lowercase": False}


def score_direction(src, tgt, hyps, refs):
    """BLEU/chrF of one direction: {'n', 'bleu', 'chrf', 'bleu_signature'}."""
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses vs {len(refs)} references")
    bleu = sacrebleu.metrics.BLEU(**bleu_settings(tgt))
    chrf = sacrebleu.metrics.CHRF()
    return {
        "n": len(hyps),
        "bleu": bleu.corpus_score(hyps, [refs]).score,
        "chrf": chrf.corpus_score(hyps, [refs]).score,
        "bleu_signature": str(bleu.get_signature()),
    }


def normalize_words(text):
    """Lowercase, turn every Unicode punctuation character into a space, split on whitespace."""
    chars = [" " if unicodedata.category(c).startswith("P") else c for c in text.lower()]
    return "".join(chars).split()


def edit_distance(a, b):
    """Levenshtein distance between two sequences (substitution = insertion = deletion = 1)."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def wer(refs, hyps):
    """Corpus WER as a fraction: sum of word edit distances / number of reference words."""
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses vs {len(refs)} references")
    errors = words = 0
    for r, h in zip(refs, hyps):
        rw = normalize_words(r)
        errors += edit_distance(rw, normalize_words(h))
        words += len(rw)
    if words == 0:
        return 0.0 if errors == 0 else float("inf")
    return errors / words


# ----------------------------------------------------------------------------- runs

def gen_files(results_dir):
    """{subset: path} of the generate-<subset>.txt files in results_dir."""
    if not os.path.isdir(results_dir):
        raise EvalError(f"results dir not found: {results_dir}")
    files = {}
    for p in sorted(glob.glob(os.path.join(results_dir, GEN_PREFIX + "*" + GEN_SUFFIX))):
        files[os.path.basename(p)[len(GEN_PREFIX):-len(GEN_SUFFIX)]] = p
    if not files:
        raise EvalError(f"no {GEN_PREFIX}<subset>{GEN_SUFFIX} file in {results_dir}")
    return files


def evaluate_run(data_dir, results_dir, asr=False, _manifests=None):
    """Scores of one run: {(subset, key): metrics}; key 'src-tgt' (ST) or 'src' (ASR).

    ST metrics: n, bleu, chrf, bleu_signature; ASR metrics: n, wer (percent).
    """
    manifests = {} if _manifests is None else _manifests
    out = {}
    for subset, path in gen_files(results_dir).items():
        if subset not in manifests:
            manifests[subset] = load_manifest(data_dir, subset)
        for key, (hyps, refs) in align_with_manifest(path, manifests[subset], asr).items():
            if asr:
                out[(subset, key)] = {"n": len(hyps), "wer": 100.0 * wer(refs, hyps)}
            else:
                out[(subset, "-".join(key))] = score_direction(*key, hyps, refs)
    return out


def aggregate(runs, run_names):
    """Combine per-run scores of the same subsets: {(subset, key): {'n', metric: [values]}}."""
    keys = set(runs[0])
    for name, run in zip(run_names, runs):
        if set(run) != keys:
            raise EvalError(
                f"runs do not cover the same subsets/directions: {run_names[0]} has "
                f"{sorted(keys)}, {name} has {sorted(run)}"
            )
    agg = {}
    for k in sorted(keys):
        ns = {run[k]["n"] for run in runs}
        if len(ns) != 1:
            raise EvalError(f"{k[0]} {k[1]}: runs scored different numbers of sentences {sorted(ns)}")
        metrics = [m for m in ("bleu", "chrf", "wer") if m in runs[0][k]]
        agg[k] = {"n": ns.pop(), **{m: [run[k][m] for run in runs] for m in metrics}}
    return agg


def mean_std(values):
    """(mean, sample std); std is None for a single value."""
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _fmt(values):
    if not values:
        return "-"
    m, s = mean_std(values)
    return f"{m:.2f}" if s is None else f"{m:.2f}±{s:.2f}"


def format_table(st_agg, asr_agg):
    """One plain aligned table: subset, direction, n, runs, BLEU, chrF, WER."""
    header = ["subset", "direction", "n", "runs", "BLEU", "chrF", "WER%"]
    rows = []
    for (subset, key), a in sorted(st_agg.items()):
        rows.append([subset, key, str(a["n"]), str(len(a["bleu"])), _fmt(a["bleu"]),
                     _fmt(a["chrf"]), "-"])
    for (subset, key), a in sorted(asr_agg.items()):
        rows.append([subset, f"asr:{key}", str(a["n"]), str(len(a["wer"])), "-", "-",
                     _fmt(a["wer"])])
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = []
    for r in [header] + rows:
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def to_json(st_agg, asr_agg, st_dirs, asr_dirs, st_runs):
    entries = []
    for task, agg in (("st", st_agg), ("asr", asr_agg)):
        for (subset, key), a in sorted(agg.items()):
            e = {"task": task, "subset": subset, "direction": key, "n": a["n"]}
            for m in ("bleu", "chrf", "wer"):
                if m in a:
                    mean, std = mean_std(a[m])
                    e[m] = {"values": a[m], "mean": mean, "std": std}
            if task == "st":
                e["bleu_signature"] = st_runs[0][(subset, key)]["bleu_signature"]
            entries.append(e)
    return {"st_runs": st_dirs, "asr_runs": asr_dirs, "results": entries}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="data dir holding the <subset>.tsv manifests")
    p.add_argument("results", nargs="*", help="ST results dirs (one per run/seed)")
    p.add_argument("--asr", nargs="+", default=[], help="ASR results dirs (one per run/seed)")
    p.add_argument("--json", help="also write the scores to this JSON file")
    args = p.parse_args(argv)
    if not args.results and not args.asr:
        p.error("give at least one ST results dir or --asr results dir")
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
            json.dump(to_json(st_agg, asr_agg, args.results, args.asr, st_runs), f,
                      indent=2, ensure_ascii=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
