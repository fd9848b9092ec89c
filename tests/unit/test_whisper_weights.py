"""load_whisper_encoder: openai-whisper checkpoints and local HF Whisper directories, tiny random models."""

import os

import pytest
import torch
import whisper.model
from transformers import WhisperConfig, WhisperForConditionalGeneration, WhisperModel

from llast_fairseq.models.whisper_weights import load_whisper_encoder, save_whisper_checkpoint

DIMS = dict(n_mels=80, n_audio_ctx=24, n_audio_state=64, n_audio_head=2, n_audio_layer=2,
            n_vocab=64, n_text_ctx=16, n_text_state=64, n_text_head=2, n_text_layer=1)


def _randomize(module, seed):
    """Random values in every parameter and buffer, so that swapped/unused tensors change outputs
    (default init leaves layer norms at 1/0 and positional tables at sinusoids)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g) * 0.2)
    return module.eval()


def _mel(n_mels, n_audio_ctx, seed=0):
    return torch.randn(2, n_mels, 2 * n_audio_ctx, generator=torch.Generator().manual_seed(seed))


def test_openai_checkpoint_roundtrip(tmp_path):
    model = _randomize(whisper.model.Whisper(whisper.model.ModelDimensions(**DIMS)), seed=1)
    path = tmp_path / "tiny.pt"
    save_whisper_checkpoint(str(path), DIMS, model.state_dict())
    assert not os.path.exists(f"{path}.tmp")

    encoder, dims = load_whisper_encoder(str(path))
    assert isinstance(encoder, whisper.model.AudioEncoder)
    assert dims == whisper.model.ModelDimensions(**DIMS)
    x = _mel(DIMS["n_mels"], DIMS["n_audio_ctx"])
    with torch.no_grad():
        want, got = model.encoder(x), encoder(x)
    assert got.shape == (2, DIMS["n_audio_ctx"], DIMS["n_audio_state"])
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    # whisper itself reads the same file
    assert whisper.load_model(str(path), device="cpu").dims == dims


def test_openai_checkpoint_fp16_and_missing_tensor(tmp_path):
    model = _randomize(whisper.model.Whisper(whisper.model.ModelDimensions(**DIMS)), seed=2)
    half = {k: v.half() for k, v in model.state_dict().items()}
    save_whisper_checkpoint(str(tmp_path / "half.pt"), DIMS, half)
    encoder, _ = load_whisper_encoder(str(tmp_path / "half.pt"))
    assert encoder.conv1.weight.dtype == torch.float32
    torch.testing.assert_close(encoder.conv1.weight, half["encoder.conv1.weight"].float(), rtol=0, atol=0)

    del half["encoder.blocks.1.mlp.2.bias"]
    save_whisper_checkpoint(str(tmp_path / "broken.pt"), DIMS, half)
    with pytest.raises(RuntimeError, match="blocks.1.mlp.2.bias"):
        load_whisper_encoder(str(tmp_path / "broken.pt"))


def _hf_config():
    return WhisperConfig(
        vocab_size=64, num_mel_bins=80, d_model=64, encoder_layers=2, encoder_attention_heads=2,
        encoder_ffn_dim=256, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=256,
        max_source_positions=24, max_target_positions=16,
        pad_token_id=1, bos_token_id=1, eos_token_id=2, decoder_start_token_id=3,
    )


@pytest.mark.parametrize("kind", ["WhisperModel", "WhisperForConditionalGeneration", "pytorch_model.bin"])
def test_hf_directory_matches_hf_encoder(tmp_path, kind):
    cls = WhisperForConditionalGeneration if kind == "WhisperForConditionalGeneration" else WhisperModel
    hf = _randomize(cls(_hf_config()), seed=3)
    if kind == "pytorch_model.bin":
        hf.config.save_pretrained(tmp_path)
        torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    else:
        hf.save_pretrained(tmp_path)
        assert (tmp_path / "model.safetensors").is_file()

    encoder, dims = load_whisper_encoder(str(tmp_path))
    assert (dims.n_mels, dims.n_audio_ctx, dims.n_audio_state, dims.n_audio_head, dims.n_audio_layer) == (80, 24, 64, 2, 2)
    assert (dims.n_vocab, dims.n_text_ctx, dims.n_text_layer) == (64, 16, 1)
    x = _mel(80, 24, seed=4)
    with torch.no_grad():
        want = hf.get_encoder()(x).last_hidden_state
        got = encoder(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_hf_directory_with_unknown_encoder_tensor_fails(tmp_path):
    from safetensors.torch import load_file, save_file

    hf = WhisperModel(_hf_config())
    hf.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    tensors["encoder.layers.0.extra_norm.weight"] = torch.ones(64)
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="extra_norm"):
        load_whisper_encoder(str(tmp_path))


def test_missing_path_error_names_path_and_what_is_expected(tmp_path):
    missing = str(tmp_path / "no-such-whisper.pt")
    with pytest.raises(FileNotFoundError) as e:
        load_whisper_encoder(missing)
    msg = str(e.value)
    assert missing in msg
    assert "llast-convert-ctranslate2-whisper" in msg and "Hugging Face" in msg

    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_whisper_encoder(str(tmp_path / "empty_dir"))
