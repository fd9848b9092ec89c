"""The LLaST encoder: frozen Whisper encoder (optional S-LoRA) and an adaptor.

waveform [batch, samples] -> log-mel [batch, n_mels, frames] -> Whisper [batch, frames/2, d_whisper]
-> adaptor (:mod:`.adaptor`; the default stacks frames, then an MLP) [batch, T_a, d_llm]
"""
import math
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from fairseq.models import FairseqEncoder
from torch import Tensor
from torch.utils.checkpoint import checkpoint
from whisper.audio import HOP_LENGTH, N_SAMPLES, log_mel_spectrogram
from whisper.model import AudioEncoder, ModelDimensions

from .adaptor import Adaptor
from .autocast import bf16_autocast
from .whisper_state_cache import GB, WhisperStateCache

SAMPLES_PER_POSITION = 2 * HOP_LENGTH  # conv2 has stride 2


class LlastEncoder(FairseqEncoder):
    """Audio to adapted LLM-space embeddings; the prompt ids ride along for the decoder.

    ``dims`` are the Whisper checkpoint's dimensions (kept for export). ``trim_padding=False`` pads
    every utterance to Whisper's 30 s (1500 positions), as Whisper and LLaST do; ``True`` runs
    Whisper on each utterance at its own length and slices the positional embedding. Either way an
    utterance's Whisper states do not depend on the rest of its batch. Train and decode with the
    same setting.

    ``cache_states=True`` keeps each utterance's Whisper states in memory, keyed by its manifest
    audio path (``audio_keys``), so an utterance runs through the frozen encoder once per process;
    it needs Whisper frozen (no S-LoRA). :meth:`fill_state_cache` runs whole splits up front.
    ``cache_gb`` caps the cache's tensor bytes in this process (0: no cap); utterances over the cap
    run through Whisper at every forward, with the same states.

    ``autocast_bf16=True`` runs Whisper and the adaptor under ``torch.autocast`` in bfloat16 (their
    matrix products in bfloat16, the weights float32), as openai-whisper runs fp16 on GPUs; only
    where bfloat16 is faster than float32 (:mod:`.autocast`).

    ``gradient_checkpointing=True`` keeps only each Whisper block's input when S-LoRA trains and
    recomputes the block in the backward pass (at 1,500 positions a block of large-v3 saves about
    170 MB per utterance for S-LoRA's gradients otherwise; see :mod:`llast_fairseq.memory`).
    """

    def __init__(self, whisper: AudioEncoder, dims: ModelDimensions, adaptor: Adaptor,
                 trim_padding: bool = False, cache_states: bool = False, autocast_bf16: bool = False,
                 gradient_checkpointing: bool = False, cache_gb: float = 0):
        super().__init__(dictionary=None)
        self.whisper = whisper
        self.dims = dims
        self.adaptor = adaptor
        self.trim_padding = trim_padding
        if cache_states and any(p.requires_grad for p in whisper.parameters()):
            raise ValueError("--cache-whisper-states needs a frozen Whisper encoder: set --whisper-lora-r 0")
        if cache_gb < 0:
            raise ValueError(f"--whisper-cache-gb is {cache_gb}: give the cache's size in GB, or 0 for no cap")
        self.state_cache = WhisperStateCache(cache_gb * GB) if cache_states else None
        self.autocast_bf16 = autocast_bf16
        self.gradient_checkpointing = gradient_checkpointing

    def features(self, waveforms: Tensor, lengths: Tensor, total: int = N_SAMPLES) -> Tensor:
        """Whisper log-mel per utterance, audio zero-padded to ``total`` samples as Whisper pads:
        ``[batch, n_mels, total / HOP_LENGTH]``."""
        mels = [
            log_mel_spectrogram(w[:n], self.dims.n_mels, padding=total - int(n))
            for w, n in zip(waveforms.float(), lengths)
        ]
        return torch.stack(mels)

    def whisper_states(self, waveforms: Tensor, lengths: Tensor,
                       keys: Optional[Sequence[str]] = None) -> List[Tensor]:
        """Whisper's output for each utterance's own positions (not its padding),
        ``[ceil(samples / 320), d_whisper]``; from the state cache where it is on and ``keys`` (the
        utterances' audio paths) are given, and cached there while the cache has room. An
        utterance twice in a batch (an ASR twin) runs once."""
        if self.state_cache is None or keys is None:
            return self._run_per_utterance(waveforms, lengths)
        todo = {}  # key -> first row
        for i, key in enumerate(keys):
            if key not in self.state_cache:
                todo.setdefault(key, i)
        computed = {}
        if todo:
            rows = list(todo.values())
            if int(lengths[rows].min()) == 0:  # the dataset left out audio the cache held before
                raise RuntimeError(f"no audio and no cached Whisper states for {keys[rows[0]]!r}")
            for key, states in zip(todo, self._run_per_utterance(waveforms[rows], lengths[rows])):
                if not self.state_cache.add(key, states):  # over the cap: used for this batch only
                    computed[key] = states
        return [computed[key] if key in computed else self.state_cache[key] for key in keys]

    @torch.no_grad()
    def fill_state_cache(self, waveforms: Tensor, lengths: Tensor, keys: Sequence[str]):
        """Cache the states of a batch of utterances as :meth:`forward` computes them."""
        with bf16_autocast(waveforms.device.type, self.autocast_bf16):
            self.whisper_states(waveforms, lengths, keys)

    def audio_positions(self, samples: np.ndarray) -> np.ndarray:
        """LLM positions of utterances of ``samples`` samples: the Whisper positions that hold each
        one (with 30 s padding too, the LLM sees only those), after the adaptor."""
        return self.adaptor.output_lengths(-(-np.asarray(samples) // SAMPLES_PER_POSITION))

    def state_positions(self, samples: int) -> int:
        """Positions of Whisper states an utterance of ``samples`` samples keeps (the cache's size)."""
        return _positions(samples)

    def whisper_positions(self, samples: int) -> int:
        """Positions Whisper runs for an utterance of ``samples`` samples, its padding included."""
        return _positions(samples) if self.trim_padding else N_SAMPLES // SAMPLES_PER_POSITION

    def _run_per_utterance(self, waveforms: Tensor, lengths: Tensor) -> List[Tensor]:
        """Whisper on utterances padded to 30 s, or trimmed: batched by equal position count, so
        that an utterance's padding is its own and never the batch's."""
        if not self.trim_padding:
            states = self.run_whisper(self.features(waveforms, lengths))
            return [s[: _positions(n)] for s, n in zip(states, lengths)]
        out = [None] * len(lengths)
        groups = {}
        for i, n in enumerate(lengths):
            groups.setdefault(_positions(n), []).append(i)
        for positions, rows in groups.items():
            mel = self.features(waveforms[rows], lengths[rows], positions * SAMPLES_PER_POSITION)
            for i, states in zip(rows, self.run_whisper(mel)):
                out[i] = states
        return out

    def run_whisper(self, mel: Tensor) -> Tensor:
        """openai-whisper's AudioEncoder.forward, allowing fewer than n_audio_ctx positions."""
        w = self.whisper
        x = F.gelu(w.conv1(mel.to(w.conv1.weight.dtype)))
        x = F.gelu(w.conv2(x)).permute(0, 2, 1)
        x = (x + w.positional_embedding[: x.size(1)]).to(x.dtype)
        recompute = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for block in w.blocks:
            x = checkpoint(block, x, use_reentrant=False) if recompute else block(x)
        return w.ln_post(x)

    def forward(self, src_tokens: Tensor, src_lengths: Tensor, prompt_before: Tensor,
                prompt_before_lengths: Tensor, prompt_after: Tensor, prompt_after_lengths: Tensor,
                audio_keys: Optional[Sequence[str]] = None, **kwargs) -> Dict[str, List[Tensor]]:
        """``src_tokens``: waveforms ``[batch, samples]`` (16 kHz, zero-padded); prompts: ids
        ``[batch, len]`` right-padded; ``audio_keys``: the rows' audio paths (the state cache's
        keys). Returns the adapted audio ``[batch, T_a, d_llm]``, its padding mask ``[batch, T_a]``
        (True = padding) and the prompt ids with their padding masks.
        """
        if int(src_lengths.max()) > N_SAMPLES:
            raise ValueError(
                f"an utterance has {int(src_lengths.max())} samples; Whisper takes at most "
                f"{N_SAMPLES} (30 s at 16 kHz): split or filter long audio in the manifest"
            )
        whisper_trainable = any(p.requires_grad for p in self.whisper.parameters())
        with bf16_autocast(src_tokens.device.type, self.autocast_bf16):
            with torch.set_grad_enabled(torch.is_grad_enabled() and whisper_trainable):
                per_utterance = self.whisper_states(src_tokens, src_lengths, audio_keys)
            states = nn.utils.rnn.pad_sequence(per_utterance, batch_first=True)
            lengths = torch.tensor([len(s) for s in per_utterance], device=states.device)
            audio, lengths = self.adaptor(states, lengths)
        steps = torch.arange(audio.size(1), device=audio.device)
        return self.encoder_out(audio, steps[None, :] >= lengths[:, None], prompt_before,
                                prompt_before_lengths, prompt_after, prompt_after_lengths)

    @staticmethod
    def encoder_out(audio: Tensor, audio_padding_mask: Tensor, prompt_before: Tensor,
                    prompt_before_lengths: Tensor, prompt_after: Tensor, prompt_after_lengths: Tensor):
        """What :meth:`forward` returns, from the adapted audio and its padding mask (one row per
        utterance; :meth:`reorder_encoder_out` adds ``rows``)."""
        return {
            "audio_out": [audio],
            "audio_padding_mask": [audio_padding_mask],
            "prompt_before": [prompt_before],
            "prompt_before_padding_mask": [_padding_mask(prompt_before, prompt_before_lengths)],
            "prompt_after": [prompt_after],
            "prompt_after_padding_mask": [_padding_mask(prompt_after, prompt_after_lengths)],
        }

    @staticmethod
    def reorder_encoder_out(encoder_out: Dict[str, List[Tensor]], new_order: Tensor):
        """Beam search's reorders only compose an index: ``rows[i]`` is the computed row that
        output row ``i`` reads. Nothing is copied per beam or per step, and the decoder fills its
        KV cache once per sentence, then expands it to the beams (see LlastDecoder)."""
        rows = encoder_out.get("rows", [torch.arange(len(encoder_out["audio_out"][0]),
                                                     device=new_order.device)])[0]
        return {**encoder_out, "rows": [rows.index_select(0, new_order)]}


def _positions(samples: Tensor) -> int:
    """Whisper positions that hold an utterance of ``samples`` samples."""
    return math.ceil(int(samples) / SAMPLES_PER_POSITION)


def _padding_mask(ids: Tensor, lengths: Tensor) -> Tensor:
    return torch.arange(ids.size(1), device=ids.device)[None, :] >= lengths[:, None]
