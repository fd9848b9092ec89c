"""Dictionary <-> tokenizer agreement, prompts, audio loading, manifests."""
import zipfile

import numpy as np
import pytest
import soundfile as sf
import torch
import s2t_manifest
from conftest import build_task_and_model, write_manifest

from llast_fairseq.data.audio import load_waveform, waveform_length
from llast_fairseq.data.llm_dictionary import LLMDetokenizer, build_llm_dictionary
from llast_fairseq.data.prompts import PromptBuilder, language_name
from llast_fairseq.models.hf_llm import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tiny_models):
    return load_tokenizer(str(tiny_models / "llm"))


def test_dictionary_mirrors_tokenizer_id_for_id(tokenizer):
    d = build_llm_dictionary(tokenizer, vocab_size=len(tokenizer) + 3)
    assert len(d) == len(tokenizer) + 3  # spare LM-head rows get placeholders
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    for i, piece in enumerate(pieces):
        assert d.index(d[i]) == i
        if piece.strip() == piece and pieces.index(piece) == i:
            assert d[i] == piece
    assert (d.eos(), d.unk(), d.bos()) == (tokenizer.eos_token_id, tokenizer.unk_token_id,
                                           tokenizer.bos_token_id)
    assert d.pad() == tokenizer.unk_token_id != d.eos()  # Llama-2 style: no pad token


@pytest.mark.parametrize("text", ["The cat eats an apple.", "Déjà vu: 42 € — naïve café!", "你好"])
def test_encode_decode_round_trip_through_dictionary_strings(tokenizer, text):
    d = build_llm_dictionary(tokenizer, len(tokenizer))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    symbols = d.string(torch.tensor(ids + [d.eos()]))  # what fairseq-generate prints as H-
    assert LLMDetokenizer(tokenizer, d).decode(symbols) == text
    assert LLMDetokenizer(tokenizer, d).encode(text) == d.string(torch.tensor(ids))


def test_pad_may_not_be_eos(tokenizer):
    with pytest.raises(ValueError, match="EOS"):
        build_llm_dictionary(tokenizer, len(tokenizer), pad_token=tokenizer.eos_token)
    with pytest.raises(ValueError, match="output layer"):
        build_llm_dictionary(tokenizer, len(tokenizer) - 1)


def test_llama2_prompt_wording_and_ids(tokenizer):
    prompts = PromptBuilder(tokenizer)
    assert prompts.text("st", "fr", "en") == (
        "[INST] <audio>\nPlease translate the French sentence into English. [/INST]")
    assert prompts.text("asr", "de", "en") == (
        "[INST] <audio>\nPlease transcribe the German sentence into German. [/INST]")
    before, after = prompts.ids("st", "fr", "en")
    assert before[0] == tokenizer.bos_token_id
    assert tokenizer.decode(before[1:]) == "[INST] "
    assert tokenizer.decode(after).strip() == "Please translate the French sentence into English. [/INST]"


def test_chat_and_custom_templates(tokenizer):
    tokenizer.chat_template = "{% for m in messages %}<|user|>{{ m['content'] }}{% endfor %}<|assistant|>"
    assert PromptBuilder(tokenizer, "chat").text("st", "es", "en") == (
        "<|user|><audio>\nPlease translate the Spanish sentence into English.<|assistant|>")
    assert PromptBuilder(tokenizer, "USER: <audio> {instruction}\nASSISTANT:").text("st", "fr", "en") == (
        "USER: <audio> Please translate the French sentence into English.\nASSISTANT:")
    with pytest.raises(ValueError, match="<audio>"):
        PromptBuilder(tokenizer, "no placeholder {instruction}")
    short = PromptBuilder(tokenizer, "<audio>{src} to {tgt}:")  # the task named by the languages
    assert short.text("st", "fr", "en") == "<audio>French to English:"
    assert short.text("asr", "fr", "en") == "<audio>French to French:"
    before, after = short.ids("st", "de", "en")
    assert before == [tokenizer.bos_token_id] and tokenizer.decode(after) == "German to English:"
    for ambiguous in ("<audio>{tgt}:", "<audio>{src}:"):  # ASR fr and en->fr would look alike
        with pytest.raises(ValueError, match="both '{src}' and '{tgt}'"):
            PromptBuilder(tokenizer, ambiguous)
    assert language_name("fr_fr") == "French" and language_name("zh-CN") == "Chinese"
    with pytest.raises(KeyError, match="xx"):
        language_name("xx")


def test_audio_formats_resampling_and_zip_entries(tmp_path):
    rate = 22050
    t = np.arange(rate) / rate
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t) * 0.5], 1).astype(np.float32) * 0.5
    sf.write(tmp_path / "a.wav", stereo, rate)
    sf.write(tmp_path / "a.flac", stereo, rate)
    sf.write(tmp_path / "a.ogg", stereo, rate)
    sf.write(tmp_path / "a.mp3", stereo, rate)
    wav = load_waveform(str(tmp_path / "a.wav"))
    assert wav.dtype == np.float32 and wav.ndim == 1 and abs(len(wav) - 16000) <= 1
    assert abs(np.abs(wav[2000:14000]).max() - 0.375) < 0.01  # mono = mean of the channels
    for ext in ("flac", "ogg", "mp3"):
        other = load_waveform(str(tmp_path / f"a.{ext}"))
        assert abs(len(other) - len(wav)) < 1200, ext  # mp3 adds codec delay/padding
    with zipfile.ZipFile(tmp_path / "audio.zip", "w", zipfile.ZIP_STORED) as z:
        z.write(tmp_path / "a.wav", "a.wav")
    with zipfile.ZipFile(tmp_path / "audio.zip") as z:
        info = z.getinfo("a.wav")
        offset = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    entry = load_waveform(f"{tmp_path / 'audio.zip'}:{offset}:{info.file_size}")
    assert np.array_equal(entry, wav)
    assert waveform_length(f"{tmp_path / 'audio.zip'}:{offset}:{info.file_size}") == 16000
    assert waveform_length(str(tmp_path / "a.flac")) == 16000
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    with pytest.raises(ValueError, match="bad.wav"):
        load_waveform(str(tmp_path / "bad.wav"))


def _rows(corpus):
    from fairseq.data.audio.speech_to_text_dataset import SpeechToTextDatasetCreator
    return SpeechToTextDatasetCreator._load_samples_from_tsv(str(corpus), "train")


def test_manifest_errors_name_file_row_and_field(tiny_corpus, tiny_models, tmp_path):
    rows = _rows(tiny_corpus)
    bad = [dict(r) for r in rows]
    bad[2]["tgt_lang"] = ""
    write_manifest(tmp_path / "train.tsv", bad)
    (tmp_path / "config.yaml").write_text(f"audio_root: {tiny_corpus}\n")
    _, task, _ = build_task_and_model(tmp_path, tiny_models)
    with pytest.raises(ValueError, match=r"train\.tsv: row 4 \(id 'utt2'\): field 'tgt_lang' is empty"):
        task.load_dataset("train")


def test_lang_columns_may_come_from_flags(tiny_corpus, tiny_models, tmp_path):
    rows = [{k: v for k, v in r.items() if k not in ("src_lang", "tgt_lang")}
            for r in _rows(tiny_corpus) if r["src_lang"] == "fr"]
    s2t_manifest.write_tsv(tmp_path / "test.tsv", list(rows[0]), rows)
    (tmp_path / "config.yaml").write_text(f"audio_root: {tiny_corpus}\n")
    _, task, _ = build_task_and_model(tmp_path, tiny_models)
    with pytest.raises(ValueError, match="field 'src_lang' is missing.*--src-lang"):
        task.load_dataset("test")
    _, task, _ = build_task_and_model(tmp_path, tiny_models, "--src-lang", "fr", "--tgt-lang", "en")
    task.load_dataset("test")
    assert len(task.dataset("test")) == len(rows)


def test_asr_augmentation_and_every_example_batched(tiny_corpus, tiny_models):
    _, task, _ = build_task_and_model(tiny_corpus, tiny_models, "--asr-augment")
    task.load_dataset("train")
    task.load_dataset("test")
    train, test = task.dataset("train"), task.dataset("test")
    rows = _rows(tiny_corpus)
    assert len(train) == 2 * len(rows) and len(test) == len(rows)  # ASR twins only in train
    detok = LLMDetokenizer(task.tokenizer, task.target_dictionary)
    texts = {detok.decode(task.target_dictionary.string(train[i]["target"])) for i in range(len(train))}
    assert texts == {r["tgt_text"] for r in rows} | {r["src_text"] for r in rows}
    asr = next(i for i, (_, kind) in enumerate(train.examples) if kind == "asr")
    before, after = task.prompts.ids("asr", rows[train.examples[asr][0]]["src_lang"],
                                     rows[train.examples[asr][0]]["src_lang"])
    assert train[asr]["after"].tolist() == after
    # fairseq drops a last batch that is not a multiple of 8 (issue #5036); ours keeps it
    batches = test.batch_by_size(test.ordered_indices(), max_sentences=3, required_batch_size_multiple=8)
    assert sorted(int(i) for b in batches for i in b) == list(range(len(test)))
