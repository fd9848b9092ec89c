"""Scoring: the one BLEU definition per target language, and fairseq-generate outputs per direction.

BLEU is sacrebleu's, with the settings of :func:`bleu_settings` (LLaST's: 13a lowercased for
X->en, the ``zh`` tokenizer for ->zh, ``ja-mecab`` for ->ja, 13a cased otherwise). The task's
``--eval-bleu`` scores its validation set with them (:func:`bleu_statistics`), and so do
``llast-evaluate`` and the text-prompt measure; ``fairseq-generate --scoring sacrebleu`` prints
the same BLEU with ``--sacrebleu-tokenizer`` / ``--sacrebleu-lowercase`` set to them.

``llast-evaluate`` reads the ``generate-<subset>.txt`` files that ``fairseq-generate
--results-path`` writes: row ``i`` (its S-/T-/D- lines) is row ``i`` of ``<subset>.tsv``, and the
rows are grouped by direction (``src_lang-tgt_lang``), so one manifest may mix directions.

- ST: hypothesis = the first D- line (detokenized), reference = the T- line, which must equal the
  manifest's ``tgt_text`` up to whitespace; BLEU and chrF (sacrebleu's defaults: chrF2, cased).
- ASR (``eval_task asr`` outputs): references are checked against ``src_text``; WER per source
  language, corpus-level (word edits / reference words) over lowercased words without punctuation.
- Several runs of the same subsets (e.g. seeds): mean and sample standard deviation per metric.
"""
import glob
import logging
import os
import statistics
import unicodedata
from typing import Dict, List, Sequence

import sacrebleu

from .data.prompts import language_base

logger = logging.getLogger(__name__)

GEN_PREFIX, GEN_SUFFIX = "generate-", ".txt"
# sacrebleu tokenizer by base language code (FLEURS writes Mandarin as cmn); 13a for the others
BLEU_TOKENIZERS = {"zh": "zh", "cmn": "zh", "ja": "ja-mecab"}
# BLEU's sufficient statistics, as plain-integer keys (fairseq logs them and sums them over batches)
BLEU_STATISTICS = ("sys_len", "ref_len", *(f"{kind}_{n}" for kind in ("counts", "totals") for n in range(4)))


class EvalError(Exception):
    """A problem with the inputs (missing file, wrong manifest, ...), said for the user."""


# ----------------------------------------------------------------------------- BLEU

def bleu_settings(lang: str) -> Dict:
    """sacrebleu's BLEU settings for text in language ``lang`` (``en``, ``zh-CN``, ``ja_jp``, ...)."""
    base = language_base(lang)
    return {"tokenize": BLEU_TOKENIZERS.get(base, "13a"), "lowercase": base == "en"}


def bleu_statistics(hyps: Sequence[str], refs: Sequence[str], langs: Sequence[str]) -> Dict[str, int]:
    """BLEU's sufficient statistics (:data:`BLEU_STATISTICS`) of sentences that may differ in
    language, each scored with its own language's settings; sums of them over batches give the
    corpus BLEU through :func:`bleu_from_statistics`."""
    groups = {}
    for hyp, ref, lang in zip(hyps, refs, langs, strict=True):
        group = groups.setdefault(tuple(bleu_settings(lang).values()), ([], [], lang))
        group[0].append(hyp)
        group[1].append(ref)
    stats = dict.fromkeys(BLEU_STATISTICS, 0)
    for group_hyps, group_refs, lang in groups.values():
        score = sacrebleu.BLEU(**bleu_settings(lang)).corpus_score(group_hyps, [group_refs])
        stats["sys_len"] += score.sys_len
        stats["ref_len"] += score.ref_len
        for n in range(4):
            stats[f"counts_{n}"] += score.counts[n]
            stats[f"totals_{n}"] += score.totals[n]
    return stats


def bleu_from_statistics(stats: Dict[str, int]) -> float:
    """Corpus BLEU from summed :func:`bleu_statistics` (sacrebleu's default exp smoothing)."""
    return sacrebleu.BLEU.compute_bleu(
        correct=[stats[f"counts_{n}"] for n in range(4)], total=[stats[f"totals_{n}"] for n in range(4)],
        sys_len=stats["sys_len"], ref_len=stats["ref_len"], smooth_method="exp").score


def score_translations(hyps: Sequence[str], refs: Sequence[str], tgt_lang: str) -> Dict:
    """BLEU and chrF of translations into ``tgt_lang``: {'n', 'bleu', 'chrf', 'bleu_signature'}."""
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses vs {len(refs)} references")
    bleu = sacrebleu.BLEU(**bleu_settings(tgt_lang))
    return {
        "n": len(hyps),
        "bleu": bleu.corpus_score(list(hyps), [list(refs)]).score,
        "chrf": sacrebleu.CHRF().corpus_score(list(hyps), [list(refs)]).score,
        "bleu_signature": str(bleu.get_signature()),
    }


# ----------------------------------------------------------------------------- WER

def normalize_words(text: str) -> List[str]:
    """Lowercase, turn every Unicode punctuation character into a space, split on whitespace."""
    chars = [" " if unicodedata.category(c).startswith("P") else c for c in text.lower()]
    return "".join(chars).split()


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance between two sequences (substitution = insertion = deletion = 1)."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus WER as a fraction: word edit distances summed over sentences / reference words."""
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


# ----------------------------------------------------------------------------- reading

def read_generate_output(path: str):
    """``[(index, reference, hypothesis)]`` of a fairseq-generate output file, sorted by index.

    reference is the T- line (None where the file has none), hypothesis the first D- line (the
    detokenized 1-best). Log lines and the closing "Generate ... BLEU" line are skipped.
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
            elif idx not in hyps:  # D-<i>\t<score>\t<text>; the n-best list follows its best
                parts = rest.split("\t", 1)
                if len(parts) != 2:
                    raise EvalError(f"{path}:{lineno}: malformed D- line (want D-<i>, score, text "
                                    f"separated by tabs): {line!r}")
                hyps[idx] = parts[1]
    if not hyps:
        raise EvalError(f"{path}: no D-<i> hypothesis lines; run fairseq-generate without --quiet")
    return [(i, refs.get(i), hyps[i]) for i in sorted(hyps)]


def load_manifest(data_dir: str, subset: str) -> List[Dict]:
    """Rows of ``<data_dir>/<subset>.tsv``, read with fairseq's S2T reader; a comma-joined subset
    (``test_fr_en,test_de_en``) is the rows of each in turn, as the task reads ``--gen-subset``."""
    from fairseq.data.audio.speech_to_text_dataset import SpeechToTextDatasetCreator

    rows = []
    for name in subset.split(","):
        try:
            rows += SpeechToTextDatasetCreator._load_samples_from_tsv(data_dir, name)
        except FileNotFoundError:
            raise EvalError(f"unknown subset {name!r}: no manifest {os.path.join(data_dir, name + '.tsv')}; "
                            "pass the --data directory that fairseq-generate read") from None
    return rows


def align_with_manifest(gen_path: str, rows: List[Dict], asr: bool = False) -> Dict:
    """A generate file's (hypotheses, references) grouped by direction, its references checked
    against the manifest rows: {(src_lang, tgt_lang): (hyps, refs)}, or {src_lang: ...} for ASR."""
    field = "src_text" if asr else "tgt_text"
    groups = {}
    for idx, ref, hyp in read_generate_output(gen_path):
        if idx >= len(rows):
            raise EvalError(f"{gen_path}: row {idx} does not exist in the manifest ({len(rows)} rows); "
                            "pass the --data directory that fairseq-generate read")
        row = rows[idx]
        where = f"{gen_path}: row {idx} (manifest id {row.get('id')!r})"
        expected = row.get(field) or ""
        if ref is None:
            ref = expected
        elif " ".join(ref.split()) != " ".join(expected.split()):
            raise EvalError(
                f"{where}: reference T-{idx} {ref!r} differs from the manifest's {field} {expected!r}; "
                "pass the --data directory that fairseq-generate read"
                + (" (or pass transcription outputs with --asr)" if not asr else ""))
        for lang in ("src_lang",) if asr else ("src_lang", "tgt_lang"):
            if not row.get(lang):
                raise EvalError(f"{where}: the manifest's field {lang!r} is empty; fill it in")
        key = row["src_lang"] if asr else (row["src_lang"], row["tgt_lang"])
        hyps, refs = groups.setdefault(key, ([], []))
        hyps.append(hyp)
        refs.append(ref)
    covered = sum(len(h) for h, _ in groups.values())
    if covered < len(rows):
        logger.warning(f"{gen_path} covers {covered} of {len(rows)} manifest rows")
    return groups


# ----------------------------------------------------------------------------- runs

def gen_files(results_dir: str) -> Dict[str, str]:
    """{subset: path} of the generate-<subset>.txt files in ``results_dir``."""
    if not os.path.isdir(results_dir):
        raise EvalError(f"results dir not found: {results_dir}")
    files = {}
    for p in sorted(glob.glob(os.path.join(results_dir, GEN_PREFIX + "*" + GEN_SUFFIX))):
        files[os.path.basename(p)[len(GEN_PREFIX):-len(GEN_SUFFIX)]] = p
    if not files:
        raise EvalError(f"no {GEN_PREFIX}<subset>{GEN_SUFFIX} file in {results_dir}; "
                        "pass the --results-path of fairseq-generate")
    return files


def evaluate_run(data_dir: str, results_dir: str, asr: bool = False, manifests: Dict = None) -> Dict:
    """Scores of one run: {(subset, direction): metrics}; direction 'src-tgt' (ST) or 'src' (ASR).

    ST metrics: n, bleu, chrf, bleu_signature; ASR metrics: n, wer (percent). ``manifests``
    keeps the manifests read, by subset, for the next run over the same data.
    """
    manifests = {} if manifests is None else manifests
    out = {}
    for subset, path in gen_files(results_dir).items():
        if subset not in manifests:
            manifests[subset] = load_manifest(data_dir, subset)
        for key, (hyps, refs) in align_with_manifest(path, manifests[subset], asr).items():
            if asr:
                out[(subset, key)] = {"n": len(hyps), "wer": 100.0 * wer(refs, hyps)}
            else:
                out[(subset, "-".join(key))] = score_translations(hyps, refs, tgt_lang=key[1])
    return out


def aggregate(runs: List[Dict], run_names: List[str]) -> Dict:
    """Per-run scores of the same subsets combined: {(subset, direction): {'n', metric: [values]}}."""
    keys = set(runs[0])
    for name, run in zip(run_names, runs):
        if set(run) != keys:
            raise EvalError(f"runs do not cover the same subsets/directions: {run_names[0]} has "
                            f"{sorted(keys)}, {name} has {sorted(run)}")
    agg = {}
    for k in sorted(keys):
        ns = {run[k]["n"] for run in runs}
        if len(ns) != 1:
            raise EvalError(f"{k[0]} {k[1]}: runs scored different numbers of sentences {sorted(ns)}")
        metrics = [m for m in ("bleu", "chrf", "wer") if m in runs[0][k]]
        agg[k] = {"n": ns.pop(), **{m: [run[k][m] for run in runs] for m in metrics}}
    return agg


def mean_std(values: Sequence[float]):
    """(mean, sample std); std is None for a single value."""
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _fmt(values):
    m, s = mean_std(values)
    return f"{m:.2f}" if s is None else f"{m:.2f}±{s:.2f}"


def format_table(st_agg: Dict, asr_agg: Dict) -> str:
    """One aligned table: subset, direction, n, runs, BLEU, chrF, WER%."""
    header = ["subset", "direction", "n", "runs", "BLEU", "chrF", "WER%"]
    rows = []
    for (subset, key), a in sorted(st_agg.items()):
        rows.append([subset, key, str(a["n"]), str(len(a["bleu"])), _fmt(a["bleu"]), _fmt(a["chrf"]), "-"])
    for (subset, key), a in sorted(asr_agg.items()):
        rows.append([subset, f"asr:{key}", str(a["n"]), str(len(a["wer"])), "-", "-", _fmt(a["wer"])])
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = []
    for r in [header] + rows:
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def to_json(st_agg: Dict, asr_agg: Dict, st_dirs: List[str], asr_dirs: List[str], st_runs: List[Dict]) -> Dict:
    """The scores as a JSON-ready dict: the runs' directories and one entry per (task, subset,
    direction) with each metric's values, mean and std, and the BLEU signature."""
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
