"""The Whisper state cache of ``--cache-whisper-states``: states per audio path, up to a cap in bytes.

It counts the bytes of the tensors it stores (elements x element size, each one its own storage,
not a view of its batch): that is the memory it takes on the model's device, in this process
(every training process keeps its own). It never evicts, so a path once cached stays cached (the
datasets rely on it to leave that audio out of their batches); at the cap it stores nothing more and
the encoder runs Whisper on the other utterances at each step.
"""
import math
from typing import Dict, Iterator, Optional

from torch import Tensor

GB = 1e9


class WhisperStateCache:
    def __init__(self, cap_bytes: float = 0):
        """``cap_bytes``: most bytes of states to hold; 0 holds everything."""
        self.cap_bytes = cap_bytes
        self.nbytes = 0
        self.position_bytes: Optional[int] = None  # bytes per Whisper position, once a state is seen
        self._states: Dict[str, Tensor] = {}

    def add(self, key: str, states: Tensor) -> bool:
        """Keep a copy of ``states`` ``[positions, d_whisper]`` under ``key`` if it fits under the
        cap; returns whether it was kept."""
        size = states.numel() * states.element_size()
        self.position_bytes = math.prod(states.shape[1:]) * states.element_size()
        if self.cap_bytes and self.nbytes + size > self.cap_bytes:
            return False
        self._states[key] = states.detach().clone()  # its own storage, not a view of the batch
        self.nbytes += size
        return True

    def fits(self, positions: int) -> bool:
        """Whether states of ``positions`` Whisper positions would fit now (True until the size
        of one position is known)."""
        if not self.cap_bytes or self.position_bytes is None:
            return True
        return self.nbytes + positions * self.position_bytes <= self.cap_bytes

    def describe(self) -> str:
        cap = f"of the {self.cap_bytes / GB:g} GB cap" if self.cap_bytes else "(no cap)"
        return f"{len(self)} utterances, {self.nbytes / GB:.3g} GB {cap}"

    def __contains__(self, key: str) -> bool:
        return key in self._states

    def __getitem__(self, key: str) -> Tensor:
        return self._states[key]

    def __len__(self) -> int:
        return len(self._states)

    def __iter__(self) -> Iterator[str]:
        return iter(self._states)

    def values(self):
        return self._states.values()
