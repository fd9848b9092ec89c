"""Speed and memory of decoding, encoding and training, each figure a ratio against a baseline
measured in the same process (``llast-benchmark``; the README's "Performance" shows a run), and
fairseq-generate's peak memory on a large test set against a small one.

Models are random-init, saved in the real formats and loaded the way a user's are (fairseq
options, ``task.build_model``): ``tiny`` (the tests' sizes) and ``mid`` (an encoder of
Whisper-base's size and a Llama of about 100M parameters with Llama-2's 32,000-row vocabulary).
The clips are 5 s of seeded noise written as wav files and read through the task's loader: what
the audio says does not change the work, and a random LLM rarely stops early, so every beam search
runs its full 64 steps.
"""
import contextlib
import gc
import json
import multiprocessing
import os
import random
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np
import soundfile as sf
import torch

from .data.audio import SAMPLE_RATE, to_mono_16k
from .data.manifest import write_config, write_tsv
from .models.autocast import bf16_autocast
from .tiny_models import make_tiny_llm, make_tiny_whisper

PRESETS = {
    "tiny": dict(whisper=dict(n_state=64, n_head=2, n_layer=2),
                 llm=dict(hidden=64, layers=2, heads=4, intermediate=256, lm_head_rows=0)),
    "mid": dict(whisper=dict(n_state=512, n_head=8, n_layer=6),  # Whisper base
                llm=dict(hidden=768, layers=8, heads=12, intermediate=2048, lm_head_rows=32000)),
}
PADDING = {"30 s": [], "trimmed": ["--trim-audio-padding"]}
CLIPS = {"30 s": 30.0, "5 s": 5.0}  # manifest test_<key>.tsv: 1,500 and 250 Whisper positions
BEAM, BATCH, NEW_TOKENS = 5, 8, 64
SYLLABLES = "ka to mi re su na lo pe di gu ba che vo ri za mu fe ho".split()


def log(message: str):
    print(message, flush=True)


def make_inputs(root: Path, presets: List[str]) -> Dict[str, Path]:
    """Models per preset under ``root/<preset>`` and a manifest root ``root/data`` with 8 clips
    of 30 s (test_30s.tsv) and of 5 s (test_5s.tsv)."""
    rng = random.Random(0)
    texts = [" ".join("".join(rng.choices(SYLLABLES, k=rng.randint(1, 3))) for _ in range(12))
             for _ in range(2000)]
    for name in presets:
        out = root / name
        if not (out / "llm" / "config.json").exists():
            log(f"  writing the {name} models")
            out.mkdir(parents=True, exist_ok=True)
            make_tiny_whisper(str(out / "whisper.pt"), **PRESETS[name]["whisper"])
            make_tiny_llm(str(out / "llm"), texts, vocab_size=1000, **PRESETS[name]["llm"])
    data = root / "data"
    (data / "audio").mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(0)
    for clips, seconds in CLIPS.items():
        rows = ["id\taudio\tn_frames\ttgt_text\tsrc_text\tsrc_lang\ttgt_lang"]
        for i in range(BATCH):
            n, name = int(seconds * SAMPLE_RATE), f"audio/{clips.replace(' ', '')}_{i}.wav"
            envelope = 0.5 + 0.5 * np.sin(np.linspace(0, 4 * seconds * np.pi, n))  # syllable-rate loudness
            sf.write(data / name, (0.1 * envelope * noise.standard_normal(n)).astype(np.float32), SAMPLE_RATE)
            rows.append(f"{clips}_{i}\t{name}\t{n}\t{texts[2 * i]}\t{texts[2 * i + 1]}\tfr\ten")
        (data / split_name(clips)).with_suffix(".tsv").write_text("\n".join(rows) + "\n")
    (data / "config.yaml").write_text(f"audio_root: {data}\n")
    return {"data": data, **{name: root / name for name in presets}}


def split_name(clips: str) -> str:
    return "test_" + clips.replace(" ", "")


def build(data: Path, models: Path, clips: str, *extra: str):
    """cfg, task and model as fairseq-train builds them from these options."""
    from fairseq import options, tasks, utils
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    argv = [str(data), "--user-dir", str(Path(__file__).parent), "--task", "llast_st",
            "--llm-path", str(models / "llm"), "--arch", "llast", "--whisper-path", str(models / "whisper.pt"),
            "--whisper-lora-r", "0", "--criterion", "llast_cross_entropy", "--cpu", *extra]
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), argv))
    utils.import_user_module(cfg.common)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    task.load_dataset(split_name(clips))
    return cfg, task, model


def clip_batch(task):
    dataset = next(iter(task.datasets.values()))
    return dataset.collater([dataset[i] for i in range(len(dataset))])


def timed(fn: Callable, repeats: int):
    """(the last result, the median wall time over ``repeats`` calls)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, float(np.median(times))


@contextlib.contextmanager
def patched(obj, name: str, value):
    old = obj.__dict__.get(name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        if old is None:
            delattr(obj, name)
        else:
            setattr(obj, name, old)


def beams(hypos, eos: int) -> List[List[List[int]]]:
    """Per sentence, the finished hypotheses best first, without EOS."""
    return [[[t for t in h["tokens"].tolist() if t != eos] for h in nbest] for nbest in hypos]


def hf_beams(sequences: torch.Tensor, eos: int) -> List[List[List[int]]]:
    rows = [row[: row.index(eos)] if eos in row else row for row in sequences.tolist()]
    return [rows[i: i + BEAM] for i in range(0, len(rows), BEAM)]


def agreement(ours, theirs) -> Dict[str, str]:
    """Best hypotheses identical, and the same final beams as sets. At the forced stop after 64
    tokens the two rank the beams differently (fairseq adds the forced EOS's log-probability and
    counts it in the length), so the sets say whether the searches themselves agree."""
    best = sum(a[0] == b[0] for a, b in zip(ours, theirs))
    same = sum(sorted(a) == sorted(b) for a, b in zip(ours, theirs))
    return {"best_identical": f"{best}/{len(ours)}", "same_beams": f"{same}/{len(ours)}"}


def decoding(inputs, preset: str, clips: str, dtype: str, repeats: int, recompute: bool) -> Dict:
    """Beam 5, batch 8, 64 new tokens from the same prefix embeddings: ours (SequenceGenerator,
    the prefix once per sentence) against HF generate(num_beams=5, early_stopping=True) and
    against recomputing the whole sequence at every step (on 5 s clips: at 1,500 positions it
    takes too long). 30 s clips give the paper's 1,500 audio positions: ``--arch llast`` runs
    Whisper on 30 s for every clip, but the LLM sees only the positions that hold the clip.
    ``dtype`` bf16: ours with ``--autocast-bf16``, HF generate under the same autocast."""
    from fairseq.sequence_generator import SequenceGenerator

    bf16 = dtype == "bf16"
    _, task, model = build(inputs["data"], inputs[preset], clips, "--llm-training", "frozen",
                           *(["--autocast-bf16"] if bf16 else []))
    model.eval()
    sample = clip_batch(task)
    d = task.target_dictionary
    with torch.no_grad():
        encoder_out = model.encoder(**sample["net_input"])
        embeds, valid, _ = model.decoder.prefix(encoder_out)
    generator = SequenceGenerator([model], d, beam_size=BEAM, max_len_a=0, max_len_b=NEW_TOKENS)

    def ours():
        with torch.no_grad(), patched(model.encoder, "forward", lambda **_: encoder_out):
            return beams(generator.generate([model], sample), d.eos())

    def hf():
        with torch.no_grad(), bf16_autocast("cpu", bf16):
            return hf_beams(model.decoder.llm.generate(
                inputs_embeds=embeds, attention_mask=valid.long(), num_beams=BEAM, early_stopping=True,
                num_return_sequences=BEAM, max_new_tokens=NEW_TOKENS, do_sample=False,
                eos_token_id=d.eos(), pad_token_id=d.pad()), d.eos())

    def full():
        forward_full = lambda prev, encoder_out, incremental_state=None, **_: \
            model.decoder.forward_full(prev, encoder_out)
        with patched(model.decoder, "forward", forward_full):
            return ours()

    log(f"  decoding, {preset}, {clips} clips, {dtype}: prefix {embeds.size(1)} positions")
    ours_tokens, base = timed(ours, repeats)
    hf_out, hf_time = timed(hf, repeats)
    row = dict(section="decoding", preset=preset, clips=clips, dtype=dtype, prefix_positions=embeds.size(1),
               ours_s=base, hf_generate_s=hf_time, ours_vs_hf=base / hf_time,
               **{f"hf_{k}": v for k, v in agreement(ours_tokens, hf_out).items()})
    if recompute:
        full_tokens, full_time = timed(full, 1)
        row.update(recompute_s=full_time, recompute_vs_ours=full_time / base,
                   **{f"recompute_{k}": v for k, v in agreement(ours_tokens, full_tokens).items()})
    log(f"    {json.dumps(row)}")
    return row


def encoding(inputs, preset: str, repeats: int) -> Dict:
    """Whisper + adaptor on 8 clips of 5 s: padded to 30 s against trimmed to each clip."""
    times = {}
    for padding, flags in PADDING.items():
        _, task, model = build(inputs["data"], inputs[preset], "5 s", "--llm-training", "frozen", *flags)
        sample = clip_batch(task)
        with torch.no_grad():
            _, times[padding] = timed(lambda: model.encoder(**sample["net_input"]), repeats)
    row = dict(section="encoding", preset=preset, padded_30s_s=times["30 s"], trimmed_s=times["trimmed"],
               padded_vs_trimmed=times["30 s"] / times["trimmed"])
    log(f"    {json.dumps(row)}")
    return row


def memory_kb(field: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak since the last reset) of this process."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def train_steps(data: str, models: str, flags: List[str], steps: int, threads: int) -> Dict:
    """``steps`` timed training steps of one variant (run in a process of its own by
    :func:`training`, so that peak memory is this variant's)."""
    torch.set_num_threads(threads)
    cfg, task, model = build(Path(data), Path(models), "5 s", "--trim-audio-padding", *flags)
    criterion = task.build_criterion(cfg.criterion)
    sample = clip_batch(task)
    sample = {**sample, "net_input": {k: v[:4] for k, v in sample["net_input"].items()},
              "target": sample["target"][:4], "ntokens": int(sample["target"][:4].ne(task.target_dictionary.pad()).sum())}
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    model.train()
    before = memory_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM: the peak below is the steps', not the model loading's
    times = []
    for _ in range(steps + 1):  # the first step allocates the optimizer state: not timed
        start = time.perf_counter()
        optimizer.zero_grad()
        loss, _, _ = criterion(model, sample)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    peak = memory_kb("VmHWM")
    state = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values()
                if torch.is_tensor(t))
    trainable = sum(p.numel() for p in params)
    return dict(trainable_params=trainable, trainable_share=trainable / sum(p.numel() for p in model.parameters()),
                optimizer_state_mb=state / 2**20, step_s=float(np.median(times[1:])),
                peak_rss_mb=peak / 2**10, peak_above_model_mb=(peak - before) / 2**10)


TRAINING = {
    "LoRA r=64": ["--llm-training", "lora", "--llm-lora-r", "64", "--llm-lora-alpha", "128"],
    "LoRA r=64, checkpointing": ["--llm-training", "lora", "--llm-lora-r", "64", "--llm-lora-alpha", "128",
                                 "--gradient-checkpointing"],
    "full": ["--llm-training", "full"],
    "full, checkpointing": ["--llm-training", "full", "--gradient-checkpointing"],
}


def training(inputs, preset: str, steps: int) -> List[Dict]:
    """A training step (batch 4 of 5 s clips, trimmed, AdamW) for LoRA and full fine-tuning of the
    LLM, with and without gradient checkpointing; each variant in its own process."""
    rows, base = [], None
    for name, flags in TRAINING.items():
        log(f"  training step, {preset}, {name}")
        call = json.dumps([str(inputs["data"]), str(inputs[preset]), flags, steps, torch.get_num_threads()])
        child = subprocess.run(
            [sys.executable, "-c", "import json, sys; from llast_fairseq.benchmark import train_steps; "
                                   "print(json.dumps(train_steps(*json.loads(sys.argv[1]))))", call],
            stdout=subprocess.PIPE, text=True, check=True)
        result = json.loads(child.stdout.strip().splitlines()[-1])
        base = base or result
        row = dict(section="training", preset=preset, variant=name, **result,
                   step_vs_lora=result["step_s"] / base["step_s"],
                   peak_above_model_vs_lora=result["peak_above_model_mb"] / base["peak_above_model_mb"])
        log(f"    {json.dumps(row)}")
        rows.append(row)
    return rows


def cascade(inputs, preset: str) -> Dict:
    """Time per utterance: end-to-end translation against the cascade (transcribe with the same
    model, then translate the transcript from a text prompt), beam 5, batches of 8."""
    from .api import LlastTranslator

    _, task, model = build(inputs["data"], inputs[preset], "5 s", "--llm-training", "frozen", "--trim-audio-padding")
    translator = LlastTranslator(model, task, beam=BEAM, max_len_b=NEW_TOKENS)
    paths = [str(inputs["data"] / "audio" / f"5s_{i}.wav") for i in range(BATCH)]
    e2e = translator.generate(paths, "fr", "en", batch_size=BATCH)
    steps = translator.cascade(paths, "fr", "en", batch_size=BATCH)
    e2e_s = sum(r["seconds"] for r in e2e) / BATCH
    cascade_s = sum(r["asr_seconds"] + r["mt_seconds"] for r in steps) / BATCH
    row = dict(section="cascade", preset=preset, end_to_end_s_per_utt=e2e_s, cascade_s_per_utt=cascade_s,
               cascade_vs_end_to_end=cascade_s / e2e_s)
    log(f"    {json.dumps(row)}")
    return row


CHECK_SENTENCES = [("Le chat mange une pomme.", "fr"), ("Der Mann trinkt Wasser.", "de"),
                   ("La femme lit un livre.", "fr"), ("Die Frau kauft Brot.", "de"),
                   ("Les enfants jouent au parc.", "fr"), ("El perro duerme en el jardín.", "es")]
CHECK_KINDS = ("wav", "flac", "mp3", "zip")


def check_data(root: Path, rows: int, zip_entries: int) -> Path:
    """Six espeak-ng clips as 22.05 kHz wav, 16 kHz flac, 22.05 kHz mp3 and entries of a stored
    zip, and ``train.tsv`` of ``rows`` rows cycling through the four kinds; returns its path."""
    from .prep.pipeline import zip_manifest

    root.mkdir(parents=True, exist_ok=True)
    clips = []
    for i, (text, voice) in enumerate(CHECK_SENTENCES):
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
        clip, kind = clips[r % len(clips)], CHECK_KINDS[r % len(CHECK_KINDS)]
        if kind == "zip":
            k = (r // len(CHECK_KINDS)) % zip_entries
            offset, length = slices[f"e{k}.flac"]
            clip = clips[k % len(clips)]
            audio, n_frames = f"audio.zip:{offset}:{length}", clip["flac"][1]
        else:
            audio, n_frames = clip[kind]
        manifest.append({"id": f"r{r}", "audio": audio, "n_frames": n_frames, "tgt_text": "A sentence.",
                         "src_text": clip["text"], "src_lang": clip["lang"], "tgt_lang": "en", "speaker": "espeak"})
    write_tsv(root / "train.tsv", manifest)
    write_config(root)
    return root / "train.tsv"


def data_check(work: Path, rows: int, threads: List[int] = (16, 1), zip_entries: int = 2000) -> Dict:
    """The load-time manifest check (:mod:`.data.manifest_check`) on ``rows`` rows: fairseq's TSV
    reader (which runs either way) as the baseline, the first check with each number of
    header-reading threads (its cache removed first), and a cached second load (median of 5). The
    clips are reused, so their headers are in the page cache: on a cold disk each clip costs one
    random read more, which the threads overlap."""
    from fairseq.data.audio.speech_to_text_dataset import SpeechToTextDatasetCreator

    from .data.manifest_check import Needs, cache_paths, check_manifest

    root = work / "data_check"
    log(f"  data check: writing {rows} rows")
    tsv = check_data(root, rows, zip_entries)
    start = time.perf_counter()
    samples = SpeechToTextDatasetCreator._load_samples_from_tsv(str(root), "train")
    row = dict(section="data_check", rows=len(samples), read_tsv_s=time.perf_counter() - start)
    needs = Needs(("tgt_text", "src_text"))
    for n in threads:
        for path in cache_paths(tsv):
            path.unlink(missing_ok=True)
        gc.collect()  # a full collection over the rows' dicts would otherwise land in some timings
        start = time.perf_counter()
        verdict = check_manifest(tsv, samples, root, needs, n)
        row[f"first_check_s_{n}_threads"] = time.perf_counter() - start
        row[f"s_per_100k_rows_{n}_threads"] = row[f"first_check_s_{n}_threads"] * 100000 / len(samples)
        assert not verdict.problems, verdict.problems[:3]
    cached = []
    for _ in range(5):
        gc.collect()
        start = time.perf_counter()
        check_manifest(tsv, samples, root, needs)
        cached.append(time.perf_counter() - start)
    row["cached_check_s"] = float(np.median(cached))
    row["cached_vs_read_tsv"] = row["cached_check_s"] / row["read_tsv_s"]
    row[f"first_{threads[0]}_threads_vs_read_tsv"] = row[f"first_check_s_{threads[0]}_threads"] / row["read_tsv_s"]
    log(f"    {json.dumps(row)}")
    return row


GENERATE_ROWS = [500, 5000]


def generate_memory(inputs, preset: str, rows: List[int]) -> Dict:
    """Peak RSS of ``fairseq-generate`` (beam 5, 16 new tokens, batch 32, sacrebleu) on manifests
    of ``rows`` rows (the 8 clips of 5 s, repeated), each run a process of its own: the peak is
    wait4's ``ru_maxrss``, the largest of the process and its data loader worker; the large run's
    own peak by half its wall time tells whether memory still grew in its second half
    (:mod:`.peak_rss`). The checkpoint is one fairseq-train update of ``--arch llast_tiny`` on the
    8 clips, trained with ``--cache-whisper-states`` (which decoding turns off)."""
    data, models, work = inputs["data"], inputs[preset], inputs["data"].parent / f"generate_{preset}"
    bin_dir = Path(sys.executable).parent
    common = [data, "--user-dir", Path(__file__).parent, "--task", "llast_st", "--llm-path", models / "llm", "--cpu"]
    if not (work / "checkpoint_last.pt").exists():
        log(f"  fairseq-train, one update, for a {preset} checkpoint")
        _child(work / "train.log", bin_dir / "fairseq-train", *common, "--arch", "llast_tiny",
               "--whisper-path", models / "whisper.pt", "--cache-whisper-states",
               "--criterion", "llast_cross_entropy", "--optimizer", "adam",
               "--lr", "1e-3", "--batch-size", "8", "--max-update", "1", "--train-subset", split_name("5 s"),
               "--disable-validation", "--save-dir", work, "--no-epoch-checkpoints", "--num-workers", "0")
    header, *clips = (data / f"{split_name('5 s')}.tsv").read_text().splitlines()
    peaks, at_half, seconds = {}, {}, {}
    for n in rows:
        split = f"test_rows{n}"
        (data / f"{split}.tsv").write_text("\n".join(
            [header] + [f"row{i}\t" + clips[i % len(clips)].split("\t", 1)[1] for i in range(n)]) + "\n")
        log(f"  fairseq-generate, {preset}, {n} rows")
        start = time.perf_counter()
        peaks[n], at_half[n] = (kb / 2**10 for kb in _child(
            work / f"generate_{n}.log", bin_dir / "fairseq-generate", *common, "--path", work / "checkpoint_last.pt",
            "--gen-subset", split, "--beam", str(BEAM), "--max-len-b", "16", "--batch-size", "32",
            "--scoring", "sacrebleu", "--results-path", work / f"results_{n}"))
        seconds[n] = time.perf_counter() - start
    small, large = rows[0], rows[-1]
    row = dict(section="generate_memory", preset=preset, rows=f"{small} / {large}",
               peak_rss_mb_small=peaks[small], peak_rss_mb_large=peaks[large],
               large_vs_small=peaks[large] / peaks[small],
               kb_per_extra_row=(peaks[large] - peaks[small]) * 2**10 / (large - small),
               large_peak_at_half_time_mb=at_half[large],
               seconds_small=seconds[small], seconds_large=seconds[large])
    log(f"    {json.dumps(row)}")
    return row


def _child(log_path: Path, *argv) -> Tuple[int, int]:
    """Run a command (its output to ``log_path``) with this process's thread count, started by
    :mod:`.peak_rss`; its peak resident memory in KB (the largest of it and its waited-for
    children) and its own peak by half its wall time."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    with open(log_path, "w") as out:
        code = subprocess.run([sys.executable, Path(__file__).with_name("peak_rss.py"), *map(str, argv)],
                              stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    text = log_path.read_text()
    if code != 0:
        raise RuntimeError(f"{argv[0]} failed, see {log_path}:\n{text[-3000:]}")
    return int(text.rsplit("peak_rss_kb ", 1)[1].split()[0]), int(text.rsplit("peak_rss_kb_at_half ", 1)[1])


SECTIONS = ["decoding", "encoding", "training", "cascade", "data_check", "generate_memory", "decoding_bf16"]
# what a plain `llast-benchmark` measures: the model's costs in float32 (the data check, generate's
# memory on 5,000 rows and decoding under bf16 autocast, where the CPU has bf16 natively, are asked
# for by name: with them the run takes over 10 minutes)
DEFAULT_SECTIONS = SECTIONS[:4]


def plan(presets: List[str], sections: List[str]) -> List[Tuple]:
    """The measurements, each independent of the others, in the order the tables give them:
    (section, arguments); decoding_bf16 is decoding under bfloat16 autocast; training and cascade
    on the last preset (the largest), generate's memory on the first (the smallest), the data check
    on no model."""
    steps = []
    for preset in presets:
        for section, dtype in (("decoding", "float32"), ("decoding_bf16", "bf16")):
            if section in sections:
                steps += [("decoding", preset, clips, dtype) for clips in CLIPS]
        if "encoding" in sections:
            steps.append(("encoding", preset))
    steps += [(section, presets[-1]) for section in ("training", "cascade") if section in sections]
    if "data_check" in sections:
        steps.append(("data_check",))
    if "generate_memory" in sections:
        steps.append(("generate_memory", presets[0]))
    return steps


def measure(step: Tuple, work: Path, inputs: Dict[str, Path], options: Dict, threads: int) -> List[Dict]:
    """One step of :func:`plan`, its rows; every ratio is taken inside this process."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    section, *args = step
    if section == "decoding":
        # recomputing every step only on tiny's 5 s clips in float32: elsewhere it takes too long
        recompute = tuple(args) == ("tiny", "5 s", "float32")
        return [decoding(inputs, *args, options["repeats"], recompute)]
    if section == "encoding":
        return [encoding(inputs, *args, options["repeats"])]
    if section == "training":
        return training(inputs, *args, options["training_steps"])
    if section == "cascade":
        return [cascade(inputs, *args)]
    if section == "data_check":
        return [data_check(work, options["data_check_rows"])]
    return [generate_memory(inputs, *args, options["generate_rows"])]


def run(work: Path, presets: List[str], sections: List[str] = DEFAULT_SECTIONS, jobs: int = 1, repeats: int = 1,
        training_steps: int = 2, data_check_rows: int = 24000,
        generate_rows: List[int] = GENERATE_ROWS) -> List[Dict]:
    """The sections on each preset, in ``jobs`` processes of this process's thread count at once
    (the largest preset's steps started first: they take longest); rows in :func:`plan`'s order."""
    threads = torch.get_num_threads()
    dtypes = "float32" + (", and bfloat16 autocast for decoding_bf16" if "decoding_bf16" in sections else "")
    log(f"benchmark: {jobs} process(es) of {threads} thread(s), torch CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}, {dtypes}")
    inputs = make_inputs(work, presets) if set(sections) - {"data_check"} else {}
    options = dict(repeats=repeats, training_steps=training_steps, data_check_rows=data_check_rows,
                   generate_rows=generate_rows)
    steps = plan(presets, sections)
    if jobs == 1:
        return [row for step in steps for row in measure(step, work, inputs, options, threads)]
    first = sorted(steps, key=lambda step: -presets.index(step[1]) if len(step) > 1 else 0)
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {step: pool.submit(measure, step, work, inputs, options, threads) for step in first}
        return [row for step in steps for row in futures[step].result()]


def table(rows: List[Dict]) -> str:
    """The rows as Markdown, one table per section."""
    out = []
    for section in dict.fromkeys(r["section"] for r in rows):
        part = [r for r in rows if r["section"] == section]
        keys = [k for k in dict.fromkeys(k for r in part for k in r) if k != "section"]  # a row may add some
        out += [f"\n{section}", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        for r in part:
            out.append("| " + " | ".join(f"{r[k]:.3g}" if isinstance(r.get(k), float) else str(r.get(k, ""))
                                         for k in keys) + " |")
    return "\n".join(out)
