"""The LLaST encoder: frozen Whisper encoder (optional S-LoRA) and the MLP adaptor.

waveform [batch, samples] -> log-mel [batch, n_mels, frames] -> Whisper [batch, frames/2, d_whisper]
-> frame stacking [batch, frames/2/k, d_whisper*k] -> adaptor [batch, T_a, d_llm]
"""
import math
from typing import Dict, List

import torch
import torch.nn as nn
import torch.nn.functional as F
from fairseq.models import FairseqEncoder
from torch import Tensor
from whisper.audio import HOP_LENGTH, N_SAMPLES, log_mel_spectrogram
from whisper.model import AudioEncoder

SAMPLES_PER_POSITION = 2 * HOP_LENGTH  # conv2 has stride 2


class Adaptor(nn.Module):
    """Linear-GELU-Linear-GELU-Linear from stacked Whisper states to the LLM's embedding size."""

    def __init__(self, d_in: int, d_llm: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(d_in, d_llm), nn.GELU(), nn.Linear(d_llm, d_llm), nn.GELU(),
            nn.Linear(d_llm, d_llm),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class LlastEncoder(FairseqEncoder):
    """Audio to adapted LLM-space embeddings; the prompt ids ride along for the decoder.

    ``trim_padding=False`` pads every utterance to Whisper's 30 s (1500 positions), as Whisper and
    LLaST do; ``True`` pads only to the longest utterance of the batch and slices the positional
    embedding (about 10x faster for short audio). Train and decode with the same setting.
    """

    def __init__(self, whisper: AudioEncoder, n_mels: int, d_llm: int, frame_stack: int = 1,
                 trim_padding: bool = False):
        super().__init__(dictionary=None)
        if frame_stack < 1:
            raise ValueError(f"--frame-stack must be >= 1, got {frame_stack}")
        self.whisper = whisper
        self.n_mels = n_mels
        self.frame_stack = frame_stack
        self.trim_padding = trim_padding
        d_whisper = whisper.ln_post.normalized_shape[0]
        self.adaptor = Adaptor(d_whisper * frame_stack, d_llm)

    def features(self, waveforms: Tensor, lengths: Tensor) -> Tensor:
        """Whisper log-mel per utterance, zero-padded audio as Whisper pads: ``[batch, n_mels, frames]``."""
        if self.trim_padding:
            total = math.ceil(int(lengths.max()) / SAMPLES_PER_POSITION) * SAMPLES_PER_POSITION
        else:
            total = N_SAMPLES
        mels = [
            log_mel_spectrogram(w[:n], self.n_mels, padding=total - int(n))
            for w, n in zip(waveforms.float(), lengths)
        ]
        return torch.stack(mels)

    def run_whisper(self, mel: Tensor) -> Tensor:
        """openai-whisper's AudioEncoder.forward, allowing fewer than n_audio_ctx positions."""
        w = self.whisper
        x = F.gelu(w.conv1(mel.to(w.conv1.weight.dtype)))
        x = F.gelu(w.conv2(x)).permute(0, 2, 1)
        x = (x + w.positional_embedding[: x.size(1)]).to(x.dtype)
        for block in w.blocks:
            x = block(x)
        return w.ln_post(x)

    def forward(self, src_tokens: Tensor, src_lengths: Tensor, prompt_before: Tensor,
                prompt_before_lengths: Tensor, prompt_after: Tensor, prompt_after_lengths: Tensor,
                **kwargs) -> Dict[str, List[Tensor]]:
        """``src_tokens``: waveforms ``[batch, samples]`` (16 kHz, zero-padded); prompts: ids
        ``[batch, len]`` right-padded. Returns the adapted audio ``[batch, T_a, d_llm]``, its padding
        mask ``[batch, T_a]`` (True = padding) and the prompt ids with their padding masks.

        Text-only batches: ``src_tokens`` with zero columns (no audio in any row) gives ``T_a = 0``
        without running Whisper, so the prefix is just the prompt ids (cascade MT in the API).
        """
        if src_tokens.size(1) == 0:
            out = self.adaptor.layers[-1]
            audio = out.weight.new_zeros(src_tokens.size(0), 0, out.out_features)
            return self.encoder_out(audio, torch.zeros_like(audio[..., 0], dtype=torch.bool), prompt_before,
                                    prompt_before_lengths, prompt_after, prompt_after_lengths)
        if int(src_lengths.max()) > N_SAMPLES:
            raise ValueError(
                f"an utterance has {int(src_lengths.max())} samples; Whisper takes at most "
                f"{N_SAMPLES} (30 s at 16 kHz): split or filter long audio in the manifest"
            )
        mel = self.features(src_tokens, src_lengths)
        whisper_trainable = any(p.requires_grad for p in self.whisper.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and whisper_trainable):
            states = self.run_whisper(mel)
        valid = torch.clamp(torch.ceil(src_lengths / SAMPLES_PER_POSITION).long(), max=states.size(1))
        states, valid = self.stack_frames(states, valid)
        steps = torch.arange(states.size(1), device=states.device)
        return self.encoder_out(self.adaptor(states), steps[None, :] >= valid[:, None], prompt_before,
                                prompt_before_lengths, prompt_after, prompt_after_lengths)

    @staticmethod
    def encoder_out(audio: Tensor, audio_padding_mask: Tensor, prompt_before: Tensor,
                    prompt_before_lengths: Tensor, prompt_after: Tensor, prompt_after_lengths: Tensor):
        """What :meth:`forward` returns, from the adapted audio and its padding mask."""
        return {
            "audio_out": [audio],
            "audio_padding_mask": [audio_padding_mask],
            "prompt_before": [prompt_before],
            "prompt_before_padding_mask": [_padding_mask(prompt_before, prompt_before_lengths)],
            "prompt_after": [prompt_after],
            "prompt_after_padding_mask": [_padding_mask(prompt_after, prompt_after_lengths)],
        }

    def stack_frames(self, states: Tensor, valid: Tensor):
        """Concatenate each ``frame_stack`` consecutive positions: ``[B, T, D] -> [B, T/k, D*k]``."""
        k = self.frame_stack
        if k == 1:
            return states, valid
        batch, steps, dim = states.shape
        states = F.pad(states, (0, 0, 0, (-steps) % k))
        return states.reshape(batch, -1, dim * k), torch.div(valid + k - 1, k, rounding_mode="floor")

    def reorder_encoder_out(self, encoder_out: Dict[str, List[Tensor]], new_order: Tensor):
        return {key: [t.index_select(0, new_order) for t in value]
                for key, value in encoder_out.items()}


def _padding_mask(ids: Tensor, lengths: Tensor) -> Tensor:
    return torch.arange(ids.size(1), device=ids.device)[None, :] >= lengths[:, None]
