"""llast-fairseq: LLaST speech translation as a fairseq plugin (``--user-dir llast_fairseq``)."""
import argparse

import torch

# torch >= 2.6 loads checkpoints with weights_only=True; legacy fairseq checkpoints keep an
# argparse.Namespace, so allow it (our own checkpoints hold plain containers and tensors).
torch.serialization.add_safe_globals([argparse.Namespace])

from . import fairseq_fixes  # noqa: E402,F401  (atomic checkpoint_last, torchrun and DDP on CPU)
from .criterions import llast_cross_entropy  # noqa: E402,F401
from .models import llast  # noqa: E402,F401
from .tasks import llast_st  # noqa: E402,F401
