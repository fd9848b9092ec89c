"""Three defects of fairseq 0.12.3 (ve-fairseq) that break resuming after a crash and data-parallel
training on CPU, patched when the plugin is imported (``--user-dir`` imports it before
fairseq-train reads its distributed settings). Each patch leaves fairseq's behaviour as it is
where fairseq already works: remote paths, machines with CUDA, models on GPUs.

1. ``checkpoint_last.pt`` is a copy of the update's or epoch's checkpoint, made in place
   (checkpoint_utils.py:139 ``PathManager.copy`` -> file_io.py:76 ``shutil.copyfile``). A process
   killed during the copy leaves a truncated ``checkpoint_last.pt``, and the same command then
   fails to load it instead of resuming. Here a copy goes to ``<dst>.tmp`` and is renamed over
   ``<dst>``, as fairseq's own ``torch_persistent_save`` writes (checkpoint_utils.py:583-587).
2. Under torchrun on a machine without CUDA, ``infer_init_method`` returns before it reads
   torchrun's variables while ``--distributed-world-size`` has its default
   ``max(1, torch.cuda.device_count())`` = 1 (distributed/utils.py:54), so each process trains
   alone and all of them write the same checkpoints; with the world size given it picks the CUDA
   device ``rank % torch.cuda.device_count()`` (distributed/utils.py:91), a division by zero.
   Here torchrun's ``WORLD_SIZE`` and ``RANK`` are read as fairseq reads them on GPUs.
3. fairseq wraps the model in torch's DistributedDataParallel with ``device_ids=[device_id]``
   (models/distributed_fairseq_model.py:62), which torch refuses for a model on the CPU; a CPU
   model is wrapped without device ids.
"""
import os
import shutil

import torch
from fairseq.distributed import utils as distributed_utils
from fairseq.file_io import PathManager
from fairseq.models import distributed_fairseq_model
from torch.nn.parallel import DistributedDataParallel

TORCHRUN_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK")

_fairseq_copy = PathManager.copy
_fairseq_infer_init_method = distributed_utils.infer_init_method


def atomic_copy(src_path: str, dst_path: str, overwrite: bool = False) -> bool:
    """``PathManager.copy`` that never leaves a partial ``dst_path``: the copy is written beside
    it and renamed over it, so a reader finds the old file or the whole new one."""
    if not PathManager.supports_rename(dst_path):  # a remote path: iopath's own copy
        return _fairseq_copy(src_path, dst_path, overwrite=overwrite)
    if os.path.exists(dst_path) and not overwrite:
        return False
    tmp_path = dst_path + ".tmp"
    shutil.copyfile(src_path, tmp_path)
    os.replace(tmp_path, dst_path)
    return True


def infer_init_method(cfg, force_distributed=False):
    """fairseq's ``infer_init_method``, which also reads torchrun's variables on a machine without
    CUDA: one process per torchrun rank, joined through ``env://``."""
    torchrun = all(name in os.environ for name in TORCHRUN_VARIABLES)
    if (cfg.distributed_init_method is None and not cfg.tpu and torchrun
            and int(os.environ["WORLD_SIZE"]) > 1 and torch.cuda.device_count() == 0):
        cfg.distributed_init_method = "env://"
        cfg.distributed_world_size = int(os.environ["WORLD_SIZE"])
        cfg.distributed_rank = int(os.environ["RANK"])
        cfg.device_id = 0  # no CUDA device to select
        cfg.distributed_no_spawn = True  # torchrun started the processes
        return
    _fairseq_infer_init_method(cfg, force_distributed)


def distributed_data_parallel(module, device_ids=None, output_device=None, **kwargs):
    """torch's DistributedDataParallel, without the device ids torch refuses for a CPU module."""
    if next(module.parameters()).device.type == "cpu":
        device_ids = output_device = None
    return DistributedDataParallel(module, device_ids=device_ids, output_device=output_device, **kwargs)


PathManager.copy = staticmethod(atomic_copy)
distributed_utils.infer_init_method = infer_init_method
distributed_fairseq_model.DistributedDataParallel = distributed_data_parallel
