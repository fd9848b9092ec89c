"""Dataset over fairseq S2T manifest rows: waveform, prompt ids around the audio, target ids.

Each example is one (row, task) pair: ``st`` targets ``tgt_text`` with the translation prompt,
``asr`` targets ``src_text`` with the transcription prompt. ASR augmentation lists both per row.
"""
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch
from fairseq.data import FairseqDataset, data_utils

from .audio import load_waveform


class LlastDataset(FairseqDataset):
    def __init__(self, name: str, audio_paths: List[str], n_frames: List[int],
                 examples: List[Tuple[int, str]], prompts: List[Tuple[List[int], List[int]]],
                 targets: List[List[int]], dictionary, shuffle: bool,
                 target_langs: Optional[List[str]] = None, describe_row: Optional[Callable[[int], str]] = None):
        """``examples[i] = (row, task)``; ``prompts[i]`` and ``targets[i]`` belong to example i
        (targets end with EOS); ``n_frames`` (audio samples per row at 16 kHz) orders and batches
        them, and a row's decoded audio must agree with it. ``target_langs[i]``, the language of
        example i's target text, goes into batches as ``target_lang`` for scoring (None where
        nothing is scored). ``describe_row(row)`` names a row in errors (its manifest line)."""
        self.name = name
        self.audio_paths = audio_paths
        self.n_frames = np.asarray(n_frames, dtype=np.int64)
        self.describe_row = describe_row or (lambda row: f"{name} row {row}")
        self.examples = examples
        self.prompts = prompts
        self.targets = [torch.tensor(t, dtype=torch.long) for t in targets]
        self.sizes = self.n_frames[np.array([row for row, _ in examples], dtype=np.int64)]
        self.dictionary = dictionary
        self.shuffle = shuffle
        self.target_langs = target_langs
        self.cached_audio = frozenset()  # audio paths whose Whisper states the model holds
        self.text_lengths = np.array([len(before) + len(after) + len(self.targets[i])
                                      for i, (before, after) in enumerate(prompts)], dtype=np.int64)
        # audio samples -> the LLM positions they take (the model's Whisper and adaptor decide):
        # set by the task when it builds the model, see num_tokens_vec
        self.audio_positions = None


    def __len__(self):
        return len(self.examples)

    def __getitem__(self, index: int):
        row, _ = self.examples[index]
        path = self.audio_paths[row]
        # the encoder reads cached states by path: decoding the audio again would be wasted
        waveform = torch.zeros(0) if path in self.cached_audio else self.waveform(row)
        before, after = self.prompts[index]
        return {"id": index, "waveform": waveform, "audio_key": path,
                "before": torch.tensor(before), "after": torch.tensor(after), "target": self.targets[index]}

    def waveform(self, row: int) -> torch.Tensor:
        """Row ``row``'s audio at 16 kHz ``[samples]``; ValueError naming the row where it cannot
        be decoded or its length disagrees with the row's."""
        try:
            return torch.from_numpy(load_waveform(self.audio_paths[row], int(self.n_frames[row])))
        except (ValueError, OSError) as e:
            raise ValueError(f"{self.describe_row(row)}: {e}") from e

    def num_tokens(self, index: int) -> int:
        return int(self.num_tokens_vec(np.array([index]))[0])

    def num_tokens_vec(self, indices):
        """Positions the LLM sees per example: its audio after the adaptor, the prompt and the
        target. fairseq's --max-tokens bounds their sum over a batch (padding included), which is
        what bounds the LLM's activation memory."""
        if self.audio_positions is None:
            raise RuntimeError(f"dataset {self.name!r}: batching by LLM positions needs the model's "
                               "audio-to-positions rule: build the model (task.build_model) first")
        return self.audio_positions(self.sizes[indices]) + self.text_lengths[indices]

    def size(self, index: int) -> int:
        return int(self.sizes[index])

    def ordered_indices(self):
        order = np.random.permutation(len(self)) if self.shuffle else np.arange(len(self))
        return order[np.argsort(self.sizes[order], kind="mergesort")]

    def batch_by_size(self, indices, max_tokens=None, max_sentences=None, required_batch_size_multiple=1):
        """fairseq's batches, plus the last one that fairseq drops when its size is not a multiple
        of --required-batch-size-multiple (fairseq issue #5036): no example is silently skipped."""
        batches = super().batch_by_size(indices, max_tokens, max_sentences, required_batch_size_multiple)
        covered = sum(len(b) for b in batches)
        if covered < len(indices):
            batches.append(np.asarray(indices[covered:]))
        return batches

    def collater(self, samples):
        if not samples:
            return {}
        pad, eos = self.dictionary.pad(), self.dictionary.eos()
        lengths = torch.tensor([s["waveform"].numel() for s in samples])
        waveforms = torch.zeros(len(samples), int(lengths.max()))
        for i, s in enumerate(samples):
            waveforms[i, : lengths[i]] = s["waveform"]
        targets = [s["target"] for s in samples]
        batch = {
            "id": torch.tensor([s["id"] for s in samples]),
            "nsentences": len(samples),
            "ntokens": sum(t.numel() for t in targets),
            "net_input": {
                "src_tokens": waveforms,
                "src_lengths": lengths,
                "audio_keys": [s["audio_key"] for s in samples],
                "prompt_before": data_utils.collate_tokens([s["before"] for s in samples], pad),
                "prompt_before_lengths": torch.tensor([s["before"].numel() for s in samples]),
                "prompt_after": data_utils.collate_tokens([s["after"] for s in samples], pad),
                "prompt_after_lengths": torch.tensor([s["after"].numel() for s in samples]),
                "prev_output_tokens": data_utils.collate_tokens(
                    targets, pad, eos, move_eos_to_beginning=True),
            },
            "target": data_utils.collate_tokens(targets, pad, eos),
            "target_lengths": torch.tensor([t.numel() for t in targets]),
        }
        if self.target_langs is not None:
            batch["target_lang"] = [self.target_langs[s["id"]] for s in samples]
        return batch
