"""The ``llast_st`` task: fairseq speech-to-text manifests, LLaST prompts, an LLM's dictionary.

Manifests are fairseq S2T TSVs (id, audio, n_frames, tgt_text, and src_text, src_lang, tgt_lang,
speaker) with config.yaml beside them, read with fairseq's own reader; several splits can be
joined with commas (``train_fr_en,train_de_en``), and one manifest may mix language pairs.
"""
import json
import logging
import time
from argparse import Namespace
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import torch
from fairseq import metrics, utils
from fairseq.data.audio.data_cfg import S2TDataConfig
from fairseq.data.audio.speech_to_text_dataset import SpeechToTextDatasetCreator
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.tasks import FairseqTask, register_task
from omegaconf import II, MISSING

from ..data.llast_dataset import LlastDataset
from ..data.llm_dictionary import LLMDetokenizer, build_llm_dictionary
from ..data.manifest_check import (ManifestError, Needs, RowOrigins, bad_rows_of, check_manifest, error_text,
                                   value, write_bad_rows)
from ..data.prompts import PromptBuilder, output_language
from ..evaluation import BLEU_STATISTICS, bleu_from_statistics, bleu_statistics
from ..models.hf_llm import load_tokenizer

logger = logging.getLogger(__name__)

TARGET_FIELD = {"st": "tgt_text", "asr": "src_text"}  # the manifest column each task learns to write
TOKENIZE_ROWS = 1000  # manifest texts per tokenizer call


@dataclass
class LlastSTConfig(FairseqDataclass):
    data: str = field(default=MISSING, metadata={"help": "manifest root: <split>.tsv files and config.yaml"})
    config_yaml: str = field(default="config.yaml", metadata={"help": "data config (audio_root) in the manifest root"})
    llm_path: Optional[str] = field(
        default=None, metadata={"help": "local Hugging Face directory of the LLM and its tokenizer; "
                                        "the target dictionary mirrors this tokenizer"})
    pad_token: Optional[str] = field(
        default=None, metadata={"help": "token to pad with when the tokenizer has no pad token other "
                                        "than EOS and no unk token (Llama-3: a reserved special token)"})
    prompt_template: str = field(
        default="llama2", metadata={"help": "'llama2' ([INST] <audio>\\n{instruction} [/INST]), 'chat' (the "
                                            "tokenizer's chat template) or a string with <audio> and "
                                            "{instruction} or both {src} and {tgt} (language names)"})
    asr_augment: bool = field(
        default=False, metadata={"help": "add an ASR example (target src_text) beside every translation "
                                         "example of the train splits, as LLaST does"})
    eval_task: ChoiceEnum(["st", "asr"]) = field(
        default="st", metadata={"help": "what non-train splits ask for: translation (st) or transcription (asr)"})
    src_lang: Optional[str] = field(
        default=None, metadata={"help": "source language for manifests without a src_lang column"})
    tgt_lang: Optional[str] = field(
        default=None, metadata={"help": "target language for manifests without a tgt_lang column"})
    skip_bad_rows: bool = field(
        default=False, metadata={"help": "leave out manifest rows that fail the load-time check (missing or "
                                         "cut-off audio, empty text, ...) instead of stopping, and list them in "
                                         "<save-dir>/bad_rows_<split>.tsv"})
    # where --skip-bad-rows lists them: fairseq's --save-dir (an interpolation: no flag of its own)
    bad_rows_dir: str = II("checkpoint.save_dir")
    eval_bleu: bool = field(
        default=False, metadata={"help": "decode the validation set and log its BLEU, each example scored "
                                         "with its target language's settings; usable as --best-checkpoint-metric bleu"})
    eval_bleu_args: str = field(
        default='{"beam": 1, "max_len_b": 128}',
        metadata={"help": "generation settings for --eval-bleu, as JSON (e.g. '{\"beam\": 5}')"})


@register_task("llast_st", dataclass=LlastSTConfig)
class LlastSTTask(FairseqTask):
    def __init__(self, cfg: LlastSTConfig, tokenizer, dictionary):
        super().__init__(cfg)
        self.tokenizer = tokenizer
        self.tgt_dict = dictionary
        self.prompts = PromptBuilder(tokenizer, cfg.prompt_template)
        # audio samples -> LLM positions (the model's Whisper and adaptor decide): set by build_model
        self.audio_positions = None

    @classmethod
    def setup_task(cls, cfg: LlastSTConfig, **kwargs):
        from transformers import AutoConfig

        tokenizer = load_tokenizer(cfg.llm_path)
        vocab_size = AutoConfig.from_pretrained(cfg.llm_path, local_files_only=True).vocab_size
        dictionary = build_llm_dictionary(tokenizer, vocab_size, cfg.pad_token)
        logger.info(f"target dictionary: {len(dictionary)} entries mirroring {cfg.llm_path}")
        return cls(cfg, tokenizer, dictionary)

    @property
    def source_dictionary(self):
        return None

    @property
    def target_dictionary(self):
        return self.tgt_dict

    def max_positions(self):
        return None

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        self.audio_positions = model.encoder.audio_positions  # --max-tokens counts LLM positions
        for dataset in self.datasets.values():
            dataset.audio_positions = self.audio_positions
        if from_checkpoint:  # fairseq-generate, the API: each utterance is encoded once anyway
            model.encoder.state_cache = None
        if self.cfg.eval_bleu:
            self.bleu_generator = self.build_generator([model], Namespace(**json.loads(self.cfg.eval_bleu_args)))
        return model

    def begin_epoch(self, epoch, model):
        """With --cache-whisper-states, before the epoch's first update: Whisper over the audio of
        every loaded split (train and valid) that is not cached yet, in length-sorted batches. At
        the start (or a resume) of training that is all of it; later epochs find nothing to do.
        The datasets then leave out the audio of cached rows: the encoder reads states by path."""
        cache = model.encoder.state_cache
        if cache is not None:
            fill_whisper_cache(model.encoder, self.datasets.values())
            for dataset in self.datasets.values():
                dataset.cached_audio = cache  # batches then skip decoding audio the cache holds

    def valid_step(self, sample, model, criterion):
        loss, sample_size, logging_output = super().valid_step(sample, model, criterion)
        if self.cfg.eval_bleu:
            detok = self.build_bpe(None)
            hypos = self.inference_step(self.bleu_generator, [model], sample)
            hyps = [detok.decode(self.tgt_dict.string(h[0]["tokens"])) for h in hypos]
            refs = [detok.decode(self.tgt_dict.string(utils.strip_pad(t, self.tgt_dict.pad())))
                    for t in sample["target"]]
            for key, value in bleu_statistics(hyps, refs, sample["target_lang"]).items():
                logging_output[f"_bleu_{key}"] = value
        return loss, sample_size, logging_output

    def reduce_metrics(self, logging_outputs, criterion):
        super().reduce_metrics(logging_outputs, criterion)
        if not self.cfg.eval_bleu:
            return
        # plain-number sums (no numpy arrays: checkpoints keep these meters and must load with
        # torch.load's weights_only default)
        sums = {key: int(sum(log.get(f"_bleu_{key}", 0) for log in logging_outputs)) for key in BLEU_STATISTICS}
        if sums["totals_0"] == 0:
            return
        for key, value in sums.items():
            metrics.log_scalar_sum(f"_bleu_{key}", value)
        metrics.log_derived("bleu", lambda m: round(bleu_from_statistics(
            {key: m[f"_bleu_{key}"].sum for key in BLEU_STATISTICS}), 2))

    def build_bpe(self, args):
        """fairseq-generate detokenizes through this: hypotheses print as plain text."""
        return LLMDetokenizer(self.tokenizer, self.tgt_dict)

    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False, task_cfg=None, **kwargs):
        """``split`` names one manifest or several joined by commas (one dataset over all rows).

        Every row is checked first (:mod:`llast_fairseq.data.manifest_check`): bad rows stop the
        load with one error listing them, or with --skip-bad-rows are left out and listed in
        ``<save-dir>/bad_rows_<split>.tsv``."""
        audio_root = Path(S2TDataConfig(Path(self.cfg.data) / self.cfg.config_yaml).audio_root)
        manifests = []
        for name in split.split(","):
            tsv = Path(self.cfg.data) / f"{name}.tsv"
            rows = SpeechToTextDatasetCreator._load_samples_from_tsv(self.cfg.data, name)
            is_train = name.startswith("train")
            tasks = (["st", "asr"] if self.cfg.asr_augment else ["st"]) if is_train else [str(self.cfg.eval_task)]
            needs = Needs(tuple(TARGET_FIELD[t] for t in tasks), self.cfg.src_lang, self.cfg.tgt_lang)
            manifests.append((name, tsv, rows, tasks, check_manifest(tsv, rows, audio_root, needs)))
        total = sum(len(rows) for _, _, rows, _, _ in manifests)
        bad = bad_rows_of([(tsv, verdict) for _, tsv, _, _, verdict in manifests])
        if bad and not self.cfg.skip_bad_rows:
            raise ManifestError(error_text(split, bad, total))
        if self.cfg.skip_bad_rows:
            listed = Path(self.cfg.bad_rows_dir) / f"bad_rows_{split}.tsv"
            write_bad_rows(listed, bad)
            n_bad = sum(len(verdict.bad_rows()) for *_, verdict in manifests)
            if n_bad == total:
                raise ManifestError(error_text(split, bad, total) + "\nNo row of the split is usable.")
            logger.warning(f"{split}: --skip-bad-rows leaves out {n_bad} of {total} rows ({len(bad)} "
                           f"problems), listed in {listed}")
        audio_paths, n_frames, examples, prompts, texts, langs = [], [], [], [], [], []
        origins = RowOrigins()
        for name, tsv, rows, tasks, verdict in manifests:
            skip = verdict.bad_rows()
            samples = verdict.samples_16k([int(r["n_frames"]) if i not in skip else 0 for i, r in enumerate(rows)])
            kept = [i for i in range(len(rows)) if i not in skip]
            origins.add(tsv, kept)
            for i in kept:
                row = rows[i]
                audio_paths.append((audio_root / row["audio"]).as_posix())
                n_frames.append(int(samples[i]))
                src, tgt = value(row, "src_lang", self.cfg.src_lang), value(row, "tgt_lang", self.cfg.tgt_lang)
                for task in tasks:
                    examples.append((len(audio_paths) - 1, task))
                    prompts.append(self.prompts.ids(task, src, tgt))
                    texts.append(row[TARGET_FIELD[task]])
                    langs.append(output_language(task, src, tgt))
            logger.info(f"{name}: {len(kept)} rows ({'+'.join(tasks)}) from {tsv}")
        eos = self.tgt_dict.eos()
        # in chunks: one tokenizer call over a whole manifest holds every row's encoding at once, and
        # the process keeps that peak (2-3 KB of RSS per row with a Llama tokenizer, measured)
        targets = [ids + [eos] for start in range(0, len(texts), TOKENIZE_ROWS)
                   for ids in self.tokenizer(texts[start : start + TOKENIZE_ROWS],
                                             add_special_tokens=False)["input_ids"]]
        self.datasets[split] = LlastDataset(split, audio_paths, n_frames, examples, prompts, targets,
                                            self.tgt_dict, shuffle=split.startswith("train"), target_langs=langs,
                                            describe_row=origins)
        self.datasets[split].audio_positions = self.audio_positions


def fill_whisper_cache(encoder, datasets: Iterable[LlastDataset], positions_per_batch: int = 4096):
    """Run ``encoder``'s Whisper over the datasets' uncached audio in batches of utterances with
    the same position count (Whisper runs those together, see LlastEncoder) of up to
    ``positions_per_batch`` positions; the next batch's audio loads meanwhile. Shortest utterances
    first, until the cache's cap: padded to 30 s every utterance costs Whisper the same, so the
    short ones save the most work per cached byte (trimmed, about the same per byte)."""
    cache = encoder.state_cache
    samples, rows = {}, {}
    for dataset in datasets:
        for (row, _), n in zip(dataset.examples, dataset.sizes):
            samples[dataset.audio_paths[row]] = int(n)
            rows[dataset.audio_paths[row]] = (dataset, row)
    # batched by the positions Whisper runs, ordered within by the positions cached (30 s padding)
    todo = sorted((encoder.whisper_positions(n), encoder.state_positions(n), path) for path, n in samples.items()
                  if path not in cache and cache.fits(encoder.state_positions(n)))
    if not todo:
        return
    batches, batch = [], []
    for positions, _, path in todo:
        if batch and (positions != batch_positions or (len(batch) + 1) * positions > positions_per_batch):
            batches.append(batch)
            batch = []
        batch.append(path)
        batch_positions = positions
    batches.append(batch)
    cap = " (up to its cap)" if cache.cap_bytes else ""
    logger.info(f"Whisper states: encoding {len(todo)} utterances in {len(batches)} batches for the cache{cap}")
    device = next(encoder.parameters()).device
    start, done, reported = time.time(), 0, 0.0
    with ThreadPoolExecutor(1) as loader:
        audio = loader.submit(_load_batch, [rows[p] for p in batches[0]])
        for i, batch in enumerate(batches):
            waveforms, lengths = audio.result()
            if not cache.fits(encoder.state_positions(int(lengths.min()))):
                break  # the cap: no shorter utterance is left
            if i + 1 < len(batches):
                audio = loader.submit(_load_batch, [rows[p] for p in batches[i + 1]])
            encoder.fill_state_cache(waveforms.to(device), lengths.to(device), batch)
            done += len(batch)
            if time.time() - reported > 30 or done == len(todo):
                reported = time.time()
                logger.info(f"Whisper states: {done}/{len(todo)} utterances ({reported - start:.0f} s)")
    uncached = sum(path not in cache for path in samples)
    rest = f"; {uncached} utterances over the cap run through Whisper in every epoch" if uncached else ""
    logger.info(f"Whisper state cache: {cache.describe()} (tensor bytes, this process){rest}")


def _load_batch(rows):
    """Waveforms of ``(dataset, row)`` pairs zero-padded into ``[batch, samples]``, and their lengths."""
    waves = [dataset.waveform(row) for dataset, row in rows]
    return torch.nn.utils.rnn.pad_sequence(waves, batch_first=True), torch.tensor([len(w) for w in waves])
