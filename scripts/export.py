#!/usr/bin/env python
"""Export a trained LLaST checkpoint as standalone weights, LoRA merged and without peft.

    python scripts/export.py --checkpoint ckpt/checkpoint_last.pt --out exported/ [--llm-path DIR]
                             [--whisper-path FILE] [--force]

writes

    exported/llm/         Hugging Face causal LM + tokenizer (L-LoRA merged; AutoModelForCausalLM loads it)
    exported/whisper.pt   openai-whisper checkpoint of the encoder (S-LoRA merged; full dims, encoder
                          tensors only: llast_fairseq.models.whisper_weights.load_whisper_encoder reads it,
                          whisper.load_model does not, as it also wants the text decoder)
    exported/adaptor.pt   state dict of the adaptor (Linear-GELU-Linear-GELU-Linear)
    exported/llast.json   what rebuilding needs: frame stacking, audio padding, prompt template, pad token, ...

Rebuild with ``llast_fairseq.api.load_exported(DIR)`` or decode with
``llast_fairseq.api.LlastTranslator.from_exported(DIR)``. An existing ``--out`` is only replaced
with ``--force``; the directory is written beside it and renamed when complete.
"""
import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from peft.tuners.lora import LoraLayer  # noqa: E402

from llast_fairseq.api import EXPORT_META, load_checkpoint, load_exported  # noqa: E402,F401
from llast_fairseq.models.whisper_weights import load_whisper_encoder, save_whisper_checkpoint  # noqa: E402


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


def export(checkpoint: str, out_dir: str, llm_path=None, whisper_path=None, force: bool = False) -> Path:
    out = Path(out_dir)
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; pass --force to replace it")
    model, task, cfg = load_checkpoint(checkpoint, llm_path, whisper_path)
    encoder, llm = model.encoder, model.decoder.llm
    _, dims = load_whisper_encoder(cfg.model.whisper_path)  # the text-side dims of the checkpoint
    tmp = out.with_name(f".{out.name}.partial")  # renamed to ``out`` once complete
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        merge_lora(llm).save_pretrained(tmp / "llm")
        task.tokenizer.save_pretrained(tmp / "llm")
        whisper = merge_lora(encoder.whisper)
        save_whisper_checkpoint(tmp / "whisper.pt", dataclasses.asdict(dims),
                                {f"encoder.{k}": v for k, v in whisper.state_dict().items()})
        torch.save(encoder.adaptor.state_dict(), tmp / "adaptor.pt")
        meta = {
            "llm": "llm", "whisper": "whisper.pt", "adaptor": "adaptor.pt",
            "llm_dtype": str(cfg.model.llm_dtype),
            "n_mels": encoder.dims.n_mels,
            "frame_stack": encoder.adaptor.frame_stack,
            "trim_audio_padding": encoder.trim_padding,
            "prompt_template": task.cfg.prompt_template,
            "pad_token": task.cfg.pad_token,
            "pad_id": task.target_dictionary.pad(),
            "eos_id": task.target_dictionary.eos(),
            "source_checkpoint": str(Path(checkpoint).resolve()),
        }
        (tmp / EXPORT_META).write_text(json.dumps(meta, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="fairseq checkpoint of an llast model")
    parser.add_argument("--out", required=True, help="directory to write (must not exist unless --force)")
    parser.add_argument("--llm-path", help="base LLM directory, if not where the checkpoint's config says")
    parser.add_argument("--whisper-path", help="base Whisper weights, if not where the checkpoint's config says")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    args = parser.parse_args()
    try:
        out = export(args.checkpoint, args.out, args.llm_path, args.whisper_path, args.force)
    except (FileExistsError, FileNotFoundError) as e:
        parser.exit(1, f"error: {e}\n")
    print(f"exported {args.checkpoint} to {out}")


if __name__ == "__main__":
    main()
