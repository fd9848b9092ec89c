"""llast-make-tiny-models: the installed command writes models that load through the real paths."""
import subprocess
from pathlib import Path

from conftest import PAIRS

from llast_fairseq.models.hf_llm import load_llm, load_tokenizer
from llast_fairseq.models.whisper_weights import load_whisper_encoder

BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"


def test_make_tiny_models_command(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("\n".join(t for pair in PAIRS for t in pair[:2]) * 20, encoding="utf-8")
    subprocess.run([BIN / "llast-make-tiny-models", "--text", text, "--out", tmp_path / "m",
                    "--vocab-size", "300", "--hidden", "32", "--layers", "1", "--heads", "2"],
                   check=True, capture_output=True)
    encoder, dims = load_whisper_encoder(str(tmp_path / "m" / "whisper.pt"))
    assert (dims.n_mels, dims.n_audio_state) == (80, 64)
    llm = load_llm(str(tmp_path / "m" / "llm"))
    assert (llm.config.hidden_size, llm.config.num_hidden_layers) == (32, 1)
    tokenizer = load_tokenizer(str(tmp_path / "m" / "llm"))
    ids = tokenizer("Le chat mange une pomme.", add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == "Le chat mange une pomme."
    assert llm.config.vocab_size == len(tokenizer) and tokenizer.unk_token_id == 0
