"""Export a trained LLaST checkpoint for deployment: LoRA merged into the base weights, no peft.

An export directory holds

    llm/        Hugging Face causal LM and tokenizer, L-LoRA merged (AutoModelForCausalLM loads it)
    whisper.pt  openai-whisper checkpoint of the encoder, S-LoRA merged (full dims, encoder tensors
                only: load_whisper_encoder reads it; whisper.load_model also wants the text decoder)
    model.pt    a fairseq checkpoint: the configs fairseq-train saved, with the base paths pointing
                at llm/ and whisper.pt (relative to the directory) and LoRA ranks 0, and the trained
                weights that are in neither (the adaptor)

:func:`load_exported` rebuilds the model from it as a training checkpoint is rebuilt, through
fairseq's checkpoint loader and ``task.build_model``, so every setting of the model and the task
(adaptor, frame stacking, audio padding, autocast, prompt template, pad token) is the trained one.
"""
import dataclasses
import shutil
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn
from omegaconf import OmegaConf
from peft.tuners.lora import LoraLayer

from .checkpoint import load_checkpoint
from .models.whisper_weights import save_whisper_checkpoint

LLM_DIR, WHISPER_FILE, MODEL_FILE = "llm", "whisper.pt", "model.pt"
# the base models' own modules: their weights go to llm/ and whisper.pt, the rest to model.pt
BASE_MODULES = ("encoder.whisper.", "decoder.llm.")


def merge_lora(module: nn.Module) -> nn.Module:
    """Fold every peft LoRA layer of ``module`` into its base layer and put the base layer back."""
    for name, layer in list(module.named_modules()):
        if isinstance(layer, LoraLayer):
            layer.merge(safe_merge=True)
            parent, _, attr = name.rpartition(".")
            setattr(module.get_submodule(parent), attr, layer.get_base_layer())
    if hasattr(module, "peft_config"):
        del module.peft_config
    left = [n for n, m in module.named_modules() if isinstance(m, LoraLayer)]
    left += [n for n in module.state_dict() if "lora_" in n]
    if left:
        raise RuntimeError(f"LoRA weights left after merging: {left[:5]}")
    return module


def export(checkpoint: str, out_dir: str, llm_path: Optional[str] = None,
           whisper_path: Optional[str] = None, force: bool = False) -> Path:
    """Write the export directory ``out_dir`` for ``checkpoint`` and return its path.

    ``llm_path`` / ``whisper_path`` as in :func:`~llast_fairseq.checkpoint.load_checkpoint`. An
    existing ``out_dir`` is only replaced with ``force``; the directory is written beside it and
    renamed when complete.
    """
    out = Path(out_dir)
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; pass --force to replace it")
    model, task, state = load_checkpoint(checkpoint, llm_path, whisper_path)
    cfg = OmegaConf.to_container(state["cfg"], resolve=True, enum_to_str=True)
    # the configs as the model and task were built (dataclass defaults filled in), then pointed at
    # the merged weights, which need no LoRA and no training-time cache
    cfg["model"] = OmegaConf.to_container(model.cfg, resolve=True, enum_to_str=True)
    cfg["task"] = OmegaConf.to_container(task.cfg, resolve=True, enum_to_str=True)
    cfg["model"].update(whisper_path=WHISPER_FILE, llm_training="frozen", llm_lora_r=0, whisper_lora_r=0,
                        cache_whisper_states=False)
    cfg["task"]["llm_path"] = LLM_DIR
    weights = {k: v for k, v in model.state_dict().items() if not k.startswith(BASE_MODULES)}
    tmp = out.with_name(f".{out.name}.partial")  # renamed to ``out`` once complete
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        merge_lora(model.decoder.llm).save_pretrained(tmp / LLM_DIR)
        task.tokenizer.save_pretrained(tmp / LLM_DIR)
        whisper = merge_lora(model.encoder.whisper)
        save_whisper_checkpoint(tmp / WHISPER_FILE, dataclasses.asdict(model.encoder.dims),
                                {f"encoder.{k}": v for k, v in whisper.state_dict().items()})
        torch.save({"args": None, "cfg": cfg, "model": weights,
                    "optimizer_history": state["optimizer_history"],
                    "extra_state": {"exported_from": str(Path(checkpoint).resolve())}},
                   tmp / MODEL_FILE)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def load_exported(export_dir: str):
    """``(model, task)`` from an :func:`export` directory, in eval mode and without gradients:
    plain transformers and openai-whisper weights with the LoRA merged, no peft layer built."""
    root = Path(export_dir)
    if not (root / MODEL_FILE).is_file():
        hint = (" (its llast.json is from an older export: export the training checkpoint again with "
                "llast-export)" if (root / "llast.json").is_file() else "")
        raise FileNotFoundError(f"{root} is not an exported LLaST model: no {MODEL_FILE} there{hint}")
    model, task, _ = load_checkpoint(str(root / MODEL_FILE), root / LLM_DIR, root / WHISPER_FILE)
    model.requires_grad_(False)
    return model.eval(), task
