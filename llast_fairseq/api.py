"""Speech translation from Python, outside the fairseq CLI.

    from llast_fairseq.api import LlastTranslator
    st = LlastTranslator.from_checkpoint("ckpt/checkpoint_last.pt", llm_path="llm/", beam=5)
    st.translate(["a.wav", "b.flac"], src_lang="fr", tgt_lang="en")   # -> ["...", "..."]

The model, task, prompts, collater, beam search and detokenizer are the ones ``fairseq-generate``
uses, so for the same checkpoint, beam and batches the texts are its ``D-`` lines. Inputs are
batched by length (as fairseq does) and the results come back in input order.
:meth:`LlastTranslator.from_exported` reads a directory written by ``llast-export``
(:mod:`llast_fairseq.export`: LoRA merged, no peft layers).

:meth:`LlastTranslator.cascade` compares end-to-end translation with a cascade through the same
model: it transcribes (the ASR prompt), then translates its own transcript from a text prompt (the
LLaST template with the transcript where the audio goes), with per-input timings of both steps.
"""
import os
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from fairseq import utils
from fairseq.data.audio.audio_utils import parse_path
from fairseq.dataclass.configs import GenerationConfig
from fairseq.models import FairseqEncoder, FairseqEncoderDecoderModel

from .checkpoint import load_checkpoint
from .data.audio import waveform_length
from .data.llast_dataset import LlastDataset
from .export import load_exported
from .models.audio_encoder import LlastEncoder
from .models.llast import LlastModel, check_prompt_contract

Progress = Callable[[int, int], None]  # (inputs decoded so far, inputs in all)


class TextPromptDataset(LlastDataset):
    """Prompts with no audio (the cascade's translation step): :class:`LlastDataset`'s batching
    and collater over empty waveforms; targets are bare EOS. Decode it with
    :func:`text_prompt_model`."""

    def __init__(self, prompts: Sequence[Sequence[int]], dictionary):
        n = len(prompts)
        super().__init__("api-text", [], [len(p) for p in prompts], [(i, "st") for i in range(n)],
                         [(list(p), []) for p in prompts], [[dictionary.eos()]] * n, dictionary,
                         shuffle=False)
        self.audio_positions = np.zeros_like  # no audio: the prompt is all the LLM sees

    def __getitem__(self, index: int):
        before, after = self.prompts[index]
        return {"id": index, "waveform": torch.zeros(0), "audio_key": None,
                "before": torch.tensor(before, dtype=torch.long),
                "after": torch.tensor(after, dtype=torch.long), "target": self.targets[index]}


class TextPromptEncoder(FairseqEncoder):
    """An encoder without audio: the decoder's prefix is the prompt ids alone."""

    def __init__(self, d_llm: int):
        super().__init__(dictionary=None)
        self.d_llm = d_llm

    def forward(self, src_tokens, src_lengths, prompt_before, prompt_before_lengths, prompt_after,
                prompt_after_lengths, **kwargs):
        audio = torch.zeros(prompt_before.size(0), 0, self.d_llm, device=prompt_before.device)
        return LlastEncoder.encoder_out(audio, audio[..., 0].bool(), prompt_before,
                                        prompt_before_lengths, prompt_after, prompt_after_lengths)

    reorder_encoder_out = staticmethod(LlastEncoder.reorder_encoder_out)


def text_prompt_model(model: LlastModel) -> FairseqEncoderDecoderModel:
    """``model``'s LLM decoder behind :class:`TextPromptEncoder`: it continues text prompts."""
    return FairseqEncoderDecoderModel(TextPromptEncoder(model.decoder.embed.embedding_dim),
                                      model.decoder).eval()


class LlastTranslator:
    """Beam search over a loaded LLaST model; see :meth:`translate`."""

    def __init__(self, model, task, beam: int = 5, max_len_b: int = 256, device: str = "cpu",
                 **generation):
        """``generation``: more fairseq GenerationConfig fields (``lenpen``, ``max_len_a``, ...).
        The task must prompt as the model was trained to read (:func:`check_prompt_contract`)."""
        check_prompt_contract(model.cfg, task.cfg)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.task = task
        self.generation = GenerationConfig(beam=beam, max_len_b=max_len_b, **generation)
        self.generator = task.build_generator([self.model], self.generation)
        self.detokenizer = task.build_bpe(None)

    @classmethod
    def from_checkpoint(cls, path: str, llm_path: Optional[str] = None,
                        whisper_path: Optional[str] = None, beam: int = 5, max_len_b: int = 256,
                        device: str = "cpu", **generation) -> "LlastTranslator":
        model, task, _ = load_checkpoint(path, llm_path, whisper_path)
        return cls(model, task, beam, max_len_b, device, **generation)

    @classmethod
    def from_exported(cls, export_dir: str, beam: int = 5, max_len_b: int = 256,
                      device: str = "cpu", **generation) -> "LlastTranslator":
        model, task = load_exported(export_dir)
        return cls(model, task, beam, max_len_b, device, **generation)

    def dataset(self, audio_paths: Sequence[str], src_lang: str, tgt_lang: str,
                task: str = "st") -> LlastDataset:
        """The inputs as the task's dataset (index i = ``audio_paths[i]``; targets are bare EOS).

        Paths use fairseq's manifest syntax (a file, or ``archive.zip:offset:length``).
        """
        if task not in ("st", "asr"):
            raise ValueError(f"task must be 'st' or 'asr', got {task!r}")
        paths = [os.fspath(p) for p in audio_paths]
        missing = [p for p in paths if not os.path.isfile(parse_path(p)[0])]
        if missing:
            raise FileNotFoundError(f"{len(missing)} audio file(s) not found: {', '.join(map(repr, missing[:5]))}"
                                    f"{' ...' if len(missing) > 5 else ''}")
        prompt = self.task.prompts.ids(task, src_lang, tgt_lang)
        n_samples = [waveform_length(p) for p in paths]  # batching by length, as fairseq does
        eos = self.task.target_dictionary.eos()
        dataset = LlastDataset("api", paths, n_samples, [(i, task) for i in range(len(paths))],
                               [prompt] * len(paths), [[eos]] * len(paths),
                               self.task.target_dictionary, shuffle=False)
        dataset.audio_positions = self.model.encoder.audio_positions
        return dataset

    def generate(self, audio_paths: Sequence[str], src_lang: str, tgt_lang: str,
                 batch_size: int = 8, task: str = "st", progress: Optional[Progress] = None) -> List[Dict]:
        """Best hypothesis per input, in input order: ``{"text", "tokens", "score", "seconds"}``
        (score: the generator's length-normalized log-probability, natural log; seconds and
        ``progress``: see :meth:`decode`)."""
        if not audio_paths:
            return []
        return self.decode(self.dataset(audio_paths, src_lang, tgt_lang, task), batch_size, progress=progress)

    def decode(self, dataset: LlastDataset, batch_size: int = 8, model=None,
               progress: Optional[Progress] = None) -> List[Dict]:
        """Beam search over a dataset's examples, batched by size, with this translator's model or
        ``model``; results in index order. ``progress(done, total)`` is called after each batch.

        ``seconds``: wall time of the example's batch (loading, collating, beam search,
        detokenizing) divided by the batch's size, so with ``batch_size=1`` it is the example's
        latency and summed over examples it is the total time.
        """
        batches = dataset.batch_by_size(dataset.ordered_indices(), max_sentences=batch_size)
        model = model or self.model
        generator = self.generator if model is self.model else self.task.build_generator([model], self.generation)
        tgt_dict = self.task.target_dictionary
        results: List[Optional[Dict]] = [None] * len(dataset)
        for batch in batches:
            start = time.perf_counter()
            sample = dataset.collater([dataset[int(i)] for i in batch])
            sample = utils.apply_to_sample(lambda t: t.to(self.device), sample)
            hypos = self.task.inference_step(generator, [model], sample)
            ids = sample["id"].tolist()
            for i, nbest in zip(ids, hypos):
                tokens = nbest[0]["tokens"].int().cpu()
                symbols = tgt_dict.string(
                    tokens, extra_symbols_to_ignore=generator.symbols_to_strip_from_output)
                results[i] = {"text": self.detokenizer.decode(symbols), "tokens": tokens.tolist(),
                              "score": float(nbest[0]["score"])}
            seconds = (time.perf_counter() - start) / len(ids)
            for i in ids:
                results[i]["seconds"] = seconds
            if progress is not None:
                progress(sum(r is not None for r in results), len(results))
        return results

    def cascade(self, audio_paths: Sequence[str], src_lang: str, tgt_lang: str,
                batch_size: int = 8) -> List[Dict]:
        """Transcribe, then translate the transcript, with this one model; per input, in order:
        ``{"transcript", "translation", "asr_seconds", "mt_seconds"}`` (seconds as in
        :meth:`decode`; compare with :meth:`generate`'s end-to-end ``seconds``).

        Step 1 is :meth:`generate` with ``task="asr"``; step 2 decodes each transcript in the
        translation prompt (``PromptBuilder.ids_with_text``, as the demo's text pretraining builds
        them) with the same beam search, the audio left out (no Whisper run).
        """
        if not audio_paths:
            return []
        self.task.prompts.text("st", src_lang, tgt_lang)  # unknown languages fail before decoding
        asr = self.generate(audio_paths, src_lang, tgt_lang, batch_size, task="asr")
        prompts = [self.task.prompts.ids_with_text("st", src_lang, tgt_lang, r["text"]) for r in asr]
        mt = self.decode(TextPromptDataset(prompts, self.task.target_dictionary), batch_size,
                         text_prompt_model(self.model))
        return [{"transcript": a["text"], "translation": m["text"], "asr_seconds": a["seconds"],
                 "mt_seconds": m["seconds"]} for a, m in zip(asr, mt)]

    def translate(self, audio_paths: Sequence[str], src_lang: str, tgt_lang: str,
                  batch_size: int = 8, task: str = "st", progress: Optional[Progress] = None) -> List[str]:
        """Translations (``task="st"``) or transcripts (``"asr"``) of the audio files, in order."""
        return [r["text"] for r in self.generate(audio_paths, src_lang, tgt_lang, batch_size, task, progress)]
