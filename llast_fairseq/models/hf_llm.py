"""Local Hugging Face causal LMs and their tokenizers; never a hub download."""
import os

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _check_dir(path: str):
    if not path:
        raise ValueError(
            "no LLM given: pass --llm-path DIR, a local Hugging Face directory with the causal LM "
            "(config.json, weights) and its tokenizer"
        )
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(
            f"--llm-path {path!r} is not a local Hugging Face model directory (no config.json "
            "there). Save one with `model.save_pretrained(DIR); tokenizer.save_pretrained(DIR)` "
            "or download it once with `huggingface-cli download NAME --local-dir DIR`."
        )


def load_tokenizer(path: str):
    _check_dir(path)
    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def load_llm(path: str, dtype: str = "float32"):
    """The causal LM at ``path`` in ``dtype``, loaded with low CPU memory use."""
    _check_dir(path)
    return AutoModelForCausalLM.from_pretrained(
        path, local_files_only=True, dtype=DTYPES[dtype], low_cpu_mem_usage=True
    )
