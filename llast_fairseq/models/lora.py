"""LoRA on a frozen module with peft: validated settings, injection, and the freeze."""
from typing import List, Union

import torch.nn as nn
from peft import LoraConfig, inject_adapter_in_model


def parse_targets(targets: str) -> Union[str, List[str]]:
    """``"all-linear"`` stays as is (peft then skips the LM head); else a comma list of names."""
    if targets.strip() == "all-linear":
        return "all-linear"
    names = [t.strip() for t in targets.split(",") if t.strip()]
    if not names:
        raise ValueError("LoRA targets are empty: give 'all-linear' or comma-separated module names")
    return names


def add_lora(module: nn.Module, name: str, r: int, alpha: float, dropout: float, targets: str):
    """Freeze ``module`` and, when ``r > 0``, inject trainable LoRA adapters into it.

    ``name`` prefixes the settings in error messages (``llm_lora`` -> ``--llm-lora-r``).
    """
    for p in module.parameters():
        p.requires_grad = False
    if r < 0:
        raise ValueError(f"--{name.replace('_', '-')}-r must be >= 0 (0 disables LoRA), got {r}")
    if r == 0:
        return module
    if alpha <= 0:
        raise ValueError(f"--{name.replace('_', '-')}-alpha must be > 0, got {alpha}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"--{name.replace('_', '-')}-dropout must be in [0, 1), got {dropout}")
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=parse_targets(targets)
    )
    try:
        inject_adapter_in_model(config, module)
    except ValueError as e:
        raise ValueError(f"--{name.replace('_', '-')}-targets {targets!r}: {e}") from e
    for pname, p in module.named_parameters():
        p.requires_grad = "lora_" in pname
        if p.requires_grad:  # train adapters in float32 even over a bfloat16/float16 base
            p.data = p.data.float()
    return module
