"""Adaptors: from Whisper's states to the LLM's embedding space, lengths in and lengths out.

An adaptor maps ``states [batch, frames, input_dim]`` and ``lengths [batch]`` (each row's valid
frames; the rest is padding) to ``[batch, frames', output_dim]`` and the new lengths. It may
shorten the sequence (stacking frames, a strided convolution, a fixed number of queries), which is
why lengths go in and come out. ``--adaptor NAME`` picks one from :data:`ADAPTORS`; a new adaptor
is a subclass registered with :func:`register_adaptor`, and the encoder, API and export need no
change for it.
"""
from typing import Dict, Tuple, Type

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

ADAPTORS: Dict[str, Type["Adaptor"]] = {}


def register_adaptor(name: str):
    """Class decorator: make an :class:`Adaptor` subclass the choice ``--adaptor name``."""

    def register(cls):
        if name in ADAPTORS:
            raise ValueError(f"adaptor {name!r} is registered twice ({ADAPTORS[name].__name__}, {cls.__name__})")
        ADAPTORS[name] = cls
        return cls

    return register


class Adaptor(nn.Module):
    """The interface: ``forward(states, lengths) -> (states, lengths)``, ``output_dim``, and
    :meth:`build` from the model's config."""

    def __init__(self, output_dim: int):
        super().__init__()
        self.output_dim = output_dim

    @classmethod
    def build(cls, cfg, input_dim: int, output_dim: int) -> "Adaptor":
        """The adaptor that the ``llast`` model config ``cfg`` asks for, from Whisper's state size
        ``input_dim`` to the LLM's embedding size ``output_dim``."""
        raise NotImplementedError

    def forward(self, states: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor]:
        """``states [B, T, input_dim]``, ``lengths [B]`` -> ``[B, T', output_dim]``, ``[B]``."""
        raise NotImplementedError

    def output_lengths(self, lengths: np.ndarray) -> np.ndarray:
        """The lengths :meth:`forward` returns for these input lengths, without running it (for
        batching by LLM positions)."""
        raise NotImplementedError


@register_adaptor("mlp")
class MLPAdaptor(Adaptor):
    """LLaST's adaptor: Linear-GELU-Linear-GELU-Linear, on ``frame_stack`` consecutive states
    concatenated (``[B, T, D] -> [B, ceil(T / k), k * D]``; the paper uses k = 1).

    Frame stacking is this adaptor's own way to shorten the audio: other adaptors shorten it their
    own way (a strided convolution, a fixed number of queries), so it is not a step of the encoder.
    """

    def __init__(self, input_dim: int, output_dim: int, frame_stack: int = 1):
        super().__init__(output_dim)
        if frame_stack < 1:
            raise ValueError(f"--frame-stack must be >= 1, got {frame_stack}")
        self.frame_stack = frame_stack
        self.layers = nn.Sequential(
            nn.Linear(input_dim * frame_stack, output_dim), nn.GELU(),
            nn.Linear(output_dim, output_dim), nn.GELU(),
            nn.Linear(output_dim, output_dim),
        )

    @classmethod
    def build(cls, cfg, input_dim: int, output_dim: int) -> "MLPAdaptor":
        return cls(input_dim, output_dim, cfg.frame_stack)

    def forward(self, states: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor]:
        states, lengths = stack_frames(states, lengths, self.frame_stack)
        return self.layers(states), lengths

    def output_lengths(self, lengths: np.ndarray) -> np.ndarray:
        return -(-lengths // self.frame_stack)


def stack_frames(states: Tensor, lengths: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    """Concatenate each ``k`` consecutive positions, zero-padding the last group:
    ``[B, T, D] -> [B, ceil(T / k), k * D]``; a row of n valid frames keeps ``ceil(n / k)``."""
    if k == 1:
        return states, lengths
    batch, steps, dim = states.shape
    states = F.pad(states, (0, 0, 0, (-steps) % k))
    return states.reshape(batch, -1, dim * k), torch.div(lengths + k - 1, k, rounding_mode="floor")


def build_adaptor(cfg, input_dim: int, output_dim: int) -> Adaptor:
    """The adaptor ``cfg.adaptor`` names, built from the model config ``cfg``."""
    name = str(cfg.adaptor)
    if name not in ADAPTORS:
        raise ValueError(f"--adaptor {name!r} is not registered; choose one of {sorted(ADAPTORS)}")
    adaptor = ADAPTORS[name].build(cfg, input_dim, output_dim)
    if adaptor.output_dim != output_dim:
        raise ValueError(f"--adaptor {name!r} gives {adaptor.output_dim}-wide states where the LLM "
                         f"embeds tokens in {output_dim}")
    return adaptor
