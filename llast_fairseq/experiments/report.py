"""A grid's results: each cell scored from its outputs, then per variant over seeds, paired
significance tests between variants, pictures, a Markdown table and JSON.

- Per cell (``scores.json``, written by the runner when the cell ends): BLEU and chrF per
  direction of every translation test and WER per source language of every ASR test (scored as
  ``llast-evaluate`` scores: hypotheses from the D- lines, references checked against the
  manifest), the same for the cascade's outputs; trained parameters (fairseq-train's ``num.
  trained`` log line); training time (fairseq's cumulative training time, kept in
  ``checkpoint_last.pt``: the time of every attempt up to its last checkpoint); decoding seconds
  per utterance (fairseq-generate's own timer, "Translated N sentences ... in Xs": beam search
  with Whisper, without loading the audio; the cascade's and its same-process end-to-end time
  from ``seconds.json``); the dev curve (the validation records of the json log).
- Per variant (and decoding: end-to-end or cascade): every metric as mean and sample standard
  deviation over the seeds that are done, with their number.
- Significance: sacrebleu's paired bootstrap resampling (1,000 resamples, sacrebleu's fixed seed)
  of each variant against the baseline variant, and of each cascade against its own end-to-end
  decoding, on the test outputs of every seed both have, per direction.
"""
import json
import re
from pathlib import Path
from typing import Dict, List, Optional

from ..evaluation import (EvalError, aggregate, align_with_manifest, bleu_settings, evaluate_run, gen_files,
                          load_manifest, mean_std)
from .grid import Cell, Grid

DECODINGS = {"e2e": "end-to-end", "cascade": "cascade"}
BOOTSTRAP_SAMPLES = 1000
TRAINED = re.compile(r"num\. shared model params: [\d,]+ \(num\. trained: ([\d,]+)\)")
TRAIN_TAGS = ("train", "train_inner")  # fairseq's json log tags that are not validation
TRANSLATED = re.compile(r"Translated ([\d,]+) sentences \([\d,]+ tokens\) in ([\d.]+)s")


# ----------------------------------------------------------------------------- one cell

def trained_params(log: str, where: str) -> int:
    """fairseq-train's count of trained parameters (the last attempt's line)."""
    found = TRAINED.findall(log)
    if not found:
        raise EvalError(f"{where}: no 'num. trained' line from fairseq-train")
    return int(found[-1].replace(",", ""))


def training_seconds(checkpoint: Path) -> float:
    """fairseq's cumulative training time saved in a checkpoint (``previous_training_time``)."""
    import torch

    if not checkpoint.is_file():
        raise EvalError(f"{checkpoint}: not found; the training time is read from it")
    state = torch.load(checkpoint, map_location="cpu", mmap=True)  # torch's weights_only default
    return round(float(state["extra_state"]["previous_training_time"]), 1)


def log_record(line: str):
    """``(tag, record)`` of a fairseq ``--log-format json`` line (``... | tag | {...}``), or
    ``(None, None)`` for any other line."""
    if " | {" not in line:
        return None, None
    tag = line[:line.index(" | {")].rsplit(" | ", 1)[-1]
    try:
        return tag, json.loads(line[line.index(" | {") + 3:])
    except json.JSONDecodeError:
        return None, None


def dev_curve(log: str) -> List[dict]:
    """The validation records of a fairseq json log: ``[{subset, update, loss, bleu?}]``, one per
    subset and update (the last, where a resumed run validated the same update again)."""
    points = {}
    for line in log.splitlines():
        tag, rec = log_record(line)
        if tag is None:
            continue
        if tag not in TRAIN_TAGS and f"{tag}_num_updates" in rec:
            point = {"subset": tag, "update": int(rec[f"{tag}_num_updates"]), "loss": float(rec[f"{tag}_loss"])}
            if f"{tag}_bleu" in rec:
                point["bleu"] = float(rec[f"{tag}_bleu"])
            points[(tag, point["update"])] = point
    return [points[k] for k in sorted(points)]


def generate_seconds(path: Path) -> dict:
    """fairseq-generate's timer from its log (the last run's): ``{utterances, seconds}``."""
    with open(path, encoding="utf-8", errors="replace") as f:
        found = TRANSLATED.findall(f.read())
    if not found:
        raise EvalError(f"{path}: no 'Translated N sentences ... in Xs' line from fairseq-generate")
    n, seconds = found[-1]
    return {"utterances": int(n.replace(",", "")), "seconds": float(seconds)}


def single_output(results_dir: Path) -> str:
    files = gen_files(str(results_dir))
    if len(files) != 1:
        raise EvalError(f"{results_dir}: expected one generate-<subset>.txt, found {sorted(files)}")
    return next(iter(files.values()))


def score_cell(cell: Cell, seconds: float) -> dict:
    """A finished cell's scores (``scores.json``), from its logs and outputs."""
    log_path = cell.dir / "train.log"
    log = log_path.read_text(encoding="utf-8", errors="replace")
    scores = {"variant": cell.variant, "seed": cell.seed, "cell_seconds": round(seconds, 1),
              "trained_params": trained_params(log, str(log_path)),
              "train_seconds": training_seconds(cell.dir / "checkpoints" / "checkpoint_last.pt"),
              "dev": dev_curve(log), "e2e": {}, "cascade": {}}
    manifests = {}
    for name, test in cell.tests.items():
        for decoding in ("e2e", "cascade") if cell.cascade and not test.asr else ("e2e",):
            out = cell.dir / (name if decoding == "e2e" else f"{name}-cascade")
            run = evaluate_run(test.data, str(out), test.asr, manifests.setdefault(test.data, {}))
            entry = {"directions": {direction: metrics for (_, direction), metrics in run.items()}}
            if decoding == "e2e":
                entry["time"] = generate_seconds(cell.dir / f"generate-{name}.log")
            else:
                t = json.loads((out / "seconds.json").read_text())
                entry["time"] = {"utterances": t["utterances"], "seconds": t["asr_seconds"] + t["mt_seconds"],
                                 "e2e_seconds": t["e2e_seconds"]}
            scores[decoding][name] = entry
    return scores


# ----------------------------------------------------------------------------- over seeds

def summary(values: List[float]) -> dict:
    mean, sd = mean_std(values)
    return {"values": values, "mean": mean, "sd": sd, "n": len(values)}


def aggregate_rows(cell_scores: List[dict], variants: List[str]) -> List[dict]:
    """One row per (variant, decoding) with done cells: every metric over seeds (:func:`summary`)."""
    rows = []
    for variant in variants:
        for decoding in DECODINGS:
            cells = sorted((s for s in cell_scores if s["variant"] == variant and s[decoding]),
                           key=lambda s: s["seed"])
            if not cells:
                continue
            names = [f"{variant} seed {s['seed']}" for s in cells]
            params = sorted({s["trained_params"] for s in cells})
            if len(params) != 1:
                raise EvalError(f"variant {variant}: its seeds trained different numbers of parameters {params}")
            row = {"variant": variant, "decoding": decoding, "seeds": [s["seed"] for s in cells],
                   "trained_params": params[0], "train_seconds": summary([s["train_seconds"] for s in cells]),
                   "tests": {}, "seconds_per_utterance": {}}
            for test in cells[0][decoding]:
                runs = [{(test, d): m for d, m in s[decoding][test]["directions"].items()} for s in cells]
                row["tests"][test] = {
                    direction: {"n": a["n"], **{m: summary(a[m]) for m in ("bleu", "chrf", "wer") if m in a}}
                    for (_, direction), a in aggregate(runs, names).items()}
                times = [s[decoding][test]["time"] for s in cells]
                row["seconds_per_utterance"][test] = summary([t["seconds"] / t["utterances"] for t in times])
                if decoding == "cascade":
                    row.setdefault("times_end_to_end", {})[test] = summary(
                        [t["seconds"] / t["e2e_seconds"] for t in times])
            row["dev"] = mean_dev_curve([s["dev"] for s in cells])
            rows.append(row)
    return rows


def mean_dev_curve(curves: List[List[dict]]) -> List[dict]:
    """Mean over seeds of the first validation subset's points, at updates every seed has."""
    if not curves or not curves[0]:
        return []
    subset = curves[0][0]["subset"]
    by_update = [{p["update"]: p for p in c if p["subset"] == subset} for c in curves]
    out = []
    for update in sorted(set.intersection(*(set(b) for b in by_update))):
        points = [b[update] for b in by_update]
        point = {"subset": subset, "update": update, "loss": mean_std([p["loss"] for p in points])[0]}
        if all("bleu" in p for p in points):
            point["bleu"] = mean_std([p["bleu"] for p in points])[0]
        out.append(point)
    return out


# ----------------------------------------------------------------------------- significance

def paired_bootstrap(baseline: List[str], system: List[str], refs: List[str], tgt_lang: str,
                     samples: int = BOOTSTRAP_SAMPLES) -> dict:
    """sacrebleu's paired bootstrap test of ``system`` against ``baseline`` on the same sentences,
    BLEU with ``tgt_lang``'s settings: ``{"bleu_a", "bleu_b", "p"}`` (p: probability of a
    difference this large by chance).

    sacrebleu counts the resamples whose centred difference is strictly above the observed one,
    so where every resample differs by exactly as much as the corpus (identical outputs, or both
    at BLEU 0) it returns its smallest p, 1/(samples+1); an observed difference of 0 is no
    evidence of a difference, and its p is 1 here."""
    import sacrebleu
    from sacrebleu.significance import PairedTest

    if not len(baseline) == len(system) == len(refs):
        raise EvalError(f"paired test on {len(baseline)} and {len(system)} hypotheses, {len(refs)} references")
    test = PairedTest([("a", list(baseline)), ("b", list(system))],
                      {"BLEU": sacrebleu.BLEU(**bleu_settings(tgt_lang))}, [list(refs)],
                      test_type="bs", n_samples=samples)
    _, results = test()
    a, b = results["BLEU"]
    return {"bleu_a": a.score, "bleu_b": b.score, "p": b.p_value if a.score != b.score else 1.0}


def outputs(cell: Cell, test: str, decoding: str, manifests: Dict) -> Dict:
    """``{(src_lang, tgt_lang): (hypotheses, references)}`` of a cell's test output."""
    t = cell.tests[test]
    path = single_output(cell.dir / (test if decoding == "e2e" else f"{test}-cascade"))
    key = (t.data, t.subset)
    if key not in manifests:
        manifests[key] = load_manifest(t.data, t.subset)
    return align_with_manifest(path, manifests[key])


def comparisons(grid: Grid) -> List[tuple]:
    """``[((variant, decoding), (variant, decoding))]``: each variant against the baseline, each
    cascade against its end-to-end decoding."""
    base = grid.baseline_variant
    pairs = [((base, "e2e"), (v, "e2e")) for v in grid.variants if v != base]
    return pairs + [((v, "e2e"), (v, "cascade")) for v, var in grid.variants.items() if var.cascade]


def significance(grid: Grid, out_dir, done: set, samples: int = BOOTSTRAP_SAMPLES) -> List[dict]:
    """Paired bootstrap of every :func:`comparisons` pair per translation test and direction, on
    each seed both sides have done."""
    manifests, found = {}, []
    for a, b in comparisons(grid):
        seeds = [s for s in grid.seeds_of(a[0]) if (a[0], s) in done and (b[0], s) in done]
        for test, t in grid.recipe.tests.items():
            if t.asr or not seeds:
                continue
            per_seed = {}
            for seed in seeds:
                side_a = outputs(grid.cell(out_dir, a[0], seed), test, a[1], manifests)
                side_b = outputs(grid.cell(out_dir, b[0], seed), test, b[1], manifests)
                for direction, (hyps_a, refs) in side_a.items():
                    hyps_b, refs_b = side_b[direction]
                    if refs != refs_b:
                        raise EvalError(f"{test} {'-'.join(direction)} seed {seed}: {a[0]} and {b[0]} "
                                        "decoded other references")
                    per_seed.setdefault(direction, []).append(
                        paired_bootstrap(hyps_a, hyps_b, refs, direction[1], samples))
            for direction, results in per_seed.items():
                found.append({"a": a[0], "a_decoding": a[1], "b": b[0], "b_decoding": b[1], "test": test,
                              "direction": "-".join(direction), "seeds": seeds,
                              "bleu_a": [r["bleu_a"] for r in results], "bleu_b": [r["bleu_b"] for r in results],
                              "p": [r["p"] for r in results]})
    return found


# ----------------------------------------------------------------------------- the report

def collect(grid: Grid, out_dir) -> tuple:
    """(scores of the done cells, names of the cells not done)."""
    scores, missing = [], []
    for cell in grid.cells(out_dir):
        if (cell.dir / "done").exists():
            scores.append(json.loads((cell.dir / "scores.json").read_text(encoding="utf-8")))
        else:
            missing.append(cell.name)
    return scores, missing


def build_report(grid: Grid, out_dir, samples: int = BOOTSTRAP_SAMPLES) -> dict:
    scores, missing = collect(grid, out_dir)
    if not scores:
        raise EvalError(f"{out_dir}: no cell is done yet; run llast-experiment run first")
    done = {(s["variant"], s["seed"]) for s in scores}
    return {"dir": str(out_dir), "cells_done": len(scores), "cells_missing": missing,
            "baseline": grid.baseline_variant, "bootstrap_samples": samples,
            "rows": aggregate_rows(scores, list(grid.variants)),
            "significance": significance(grid, out_dir, done, samples)}


def fmt(s: Optional[dict], digits: int = 2) -> str:
    if not s:
        return "-"
    return f"{s['mean']:.{digits}f}" if s["sd"] is None else f"{s['mean']:.{digits}f} ± {s['sd']:.{digits}f}"


def fmt_seconds(s: dict) -> str:
    m = s["mean"]
    return f"{m / 3600:.1f} h" if m >= 7200 else f"{m / 60:.1f} min" if m >= 120 else f"{m:.0f} s"


def markdown(report: dict, title: str) -> str:
    rows = report["rows"]
    st_cols = sorted({(t, d) for r in rows for t, ds in r["tests"].items() for d, m in ds.items() if "bleu" in m})
    asr_cols = sorted({(t, d) for r in rows for t, ds in r["tests"].items() for d, m in ds.items() if "wer" in m})
    tests = sorted({t for r in rows for t in r["seconds_per_utterance"]})

    def table(header, lines):
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return out + ["| " + " | ".join(line) + " |" for line in lines] + [""]

    def cell(row, test, direction, metric):
        return fmt(row["tests"].get(test, {}).get(direction, {}).get(metric))

    def name(row):
        return [row["variant"], DECODINGS[row["decoding"]], str(len(row["seeds"]))]

    lines = [f"# {title}", ""]
    if report["cells_missing"]:
        lines += [f"Not done yet (left out): {', '.join(report['cells_missing'])}.", ""]
    lines += ["Mean ± sample standard deviation over n seeds. Trained parameters: fairseq-train's count; "
              "training: fairseq's cumulative training time.", "", "BLEU:", ""]
    lines += table(["variant", "decoding", "n", "trained params", "training", *(f"{t} {d}" for t, d in st_cols)],
                   [name(r) + [f"{r['trained_params']:,}", fmt_seconds(r["train_seconds"])]
                    + [cell(r, t, d, "bleu") for t, d in st_cols] for r in rows])
    lines += ["chrF:", ""]
    lines += table(["variant", "decoding", "n", *(f"{t} {d}" for t, d in st_cols)],
                   [name(r) + [cell(r, t, d, "chrf") for t, d in st_cols] for r in rows])
    if asr_cols:
        lines += ["WER (%) of the transcripts:", ""]
        lines += table(["variant", "decoding", "n", *(f"{t} {d}" for t, d in asr_cols)],
                       [name(r) + [cell(r, t, d, "wer") for t, d in asr_cols] for r in rows if r["decoding"] == "e2e"])
    lines += ["Decoding, seconds per utterance (end-to-end: fairseq-generate's timer; cascade: transcribe + "
              "translate, and its time over end-to-end decoding of the same audio in the same process):", ""]
    lines += table(["variant", "decoding", "n", *tests],
                   [name(r) + [fmt(r["seconds_per_utterance"].get(t), 3)
                               + (f" ({fmt(r['times_end_to_end'][t])}x)" if t in r.get("times_end_to_end", {}) else "")
                               for t in tests] for r in rows])
    if report["significance"]:
        lines += [f"Paired bootstrap ({report['bootstrap_samples']} resamples, sacrebleu) of B against A, "
                  "BLEU on the same test sentences, per seed:", ""]
        lines += table(["A", "B", "test", "direction", "seeds", "BLEU A", "BLEU B", "B - A", "p per seed"],
                       [[f"{s['a']} ({DECODINGS[s['a_decoding']]})", f"{s['b']} ({DECODINGS[s['b_decoding']]})",
                         s["test"], s["direction"], ",".join(map(str, s["seeds"])),
                         f"{mean_std(s['bleu_a'])[0]:.2f}", f"{mean_std(s['bleu_b'])[0]:.2f}",
                         f"{mean_std(s['bleu_b'])[0] - mean_std(s['bleu_a'])[0]:+.2f}",
                         ", ".join(f"{p:.3f}" for p in s["p"])] for s in report["significance"]])
    return "\n".join(lines)


def plot(report: dict, out_dir: Path) -> List[Path]:
    """bleu_vs_params.png (end-to-end rows: BLEU averaged over each test's directions, against
    trained parameters, with the sd over seeds) and dev_curves.png (mean over seeds)."""
    import logging

    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["rows"] if r["decoding"] == "e2e"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    tests = sorted({t for r in rows for t, ds in r["tests"].items() if any("bleu" in m for m in ds.values())})
    for test in tests:
        xs, ys, errs, labels = [], [], [], []
        for r in sorted(rows, key=lambda r: r["trained_params"]):
            ds = [m for m in r["tests"].get(test, {}).values() if "bleu" in m]
            if not ds:
                continue
            per_seed = [sum(m["bleu"]["values"][i] for m in ds) / len(ds) for i in range(len(r["seeds"]))]
            mean, sd = mean_std(per_seed)
            xs.append(r["trained_params"]), ys.append(mean), errs.append(sd or 0.0), labels.append(r["variant"])
        ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=test)
        for x, y, label in zip(xs, ys, labels):
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if rows and max(r["trained_params"] for r in rows) > 10 * min(r["trained_params"] for r in rows):
        ax.set_xscale("log")
    ax.set_xlabel("trained parameters")
    ax.set_ylabel("BLEU (mean over directions and seeds)")
    ax.legend()
    fig.tight_layout()
    paths = [out_dir / "bleu_vs_params.png"]
    fig.savefig(paths[0], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        curve = r["dev"]
        if curve:
            metric = "bleu" if all("bleu" in p for p in curve) else "loss"
            ax.plot([p["update"] for p in curve], [p[metric] for p in curve], "o-", label=f"{r['variant']} ({metric})")
    ax.set_xlabel("updates")
    ax.set_ylabel("dev BLEU (or loss), mean over seeds")
    ax.legend()
    fig.tight_layout()
    paths.append(out_dir / "dev_curves.png")
    fig.savefig(paths[1], dpi=100)
    plt.close(fig)
    return paths


def write_report(grid: Grid, grid_path: str, out_dir, samples: int = BOOTSTRAP_SAMPLES) -> dict:
    """Write report.md, report.json and the two PNGs into ``out_dir``; returns the report."""
    out_dir = Path(out_dir)
    report = build_report(grid, out_dir, samples)
    report["grid"] = str(grid_path)
    text = markdown(report, f"{Path(grid_path).name}: {report['cells_done']} cells")
    (out_dir / "report.md").write_text(text + "\n", encoding="utf-8")
    (out_dir / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    report["pictures"] = [str(p) for p in plot(report, out_dir)]
    report["markdown"] = text
    return report
