"""Dictionary <-> tokenizer agreement, prompts, audio loading, manifests."""
import zipfile

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import build_task_and_model, speak

from llast_fairseq.data.audio import load_waveform, waveform_length
from llast_fairseq.data.manifest import write_config, write_tsv
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


def best_correlation(a, b, max_lag):
    """The highest normalized correlation of ``a`` and ``b`` over shifts of up to ``max_lag``."""
    best = -1.0
    for lag in range(-max_lag, max_lag + 1):
        x, y = (a[lag:], b) if lag >= 0 else (a, b[-lag:])
        n = min(len(x), len(y))
        x, y = x[:n], y[:n]
        best = max(best, float(np.dot(x, y) / np.sqrt(np.dot(x, x) * np.dot(y, y))))
    return best


def test_flac_equals_wav_and_lossy_formats_correlate(tmp_path):
    speech, rate = speak("The quick brown fox jumps over the lazy dog.")  # 22.05 kHz
    pcm = np.round(np.stack([speech, 0.5 * speech], 1) * 32767).astype(np.int16)
    for ext in ("wav", "flac"):  # the same PCM-16 stream (libsndfile rounds floats per format)
        sf.write(tmp_path / f"a.{ext}", pcm, rate)
    for ext in ("ogg", "mp3"):  # from floats (libsndfile's int16 -> mp3 path distorts)
        sf.write(tmp_path / f"a.{ext}", pcm / 32767, rate)
    wav = load_waveform(str(tmp_path / "a.wav"))
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert len(wav) == round(len(speech) * 16000 / rate) == waveform_length(str(tmp_path / "a.wav"))
    assert np.array_equal(load_waveform(str(tmp_path / "a.flac")), wav)  # lossless: sample for sample
    for ext in ("ogg", "mp3"):
        lossy = load_waveform(str(tmp_path / f"a.{ext}"))
        assert abs(len(lossy) - len(wav)) < 1200, ext  # codec delay / padding at most
        assert best_correlation(wav, lossy, max_lag=200) > 0.9, ext


def test_48khz_stereo_is_downmixed_and_resampled(tmp_path):
    """Length from the header and from decoding agree, and the samples are the two channels'
    mean at 16 kHz, against the signal computed directly at 16 kHz."""
    def signal(t):
        return np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 1250 * t + 1)], 1)

    n = 48002  # 16000.67 samples at 16 kHz: rounds up
    sf.write(tmp_path / "s.wav", signal(np.arange(n) / 48000), 48000, subtype="FLOAT")
    samples = load_waveform(str(tmp_path / "s.wav"))
    assert len(samples) == 16001 == waveform_length(str(tmp_path / "s.wav"))
    expected = signal(np.arange(16001) / 16000).mean(axis=1)
    middle = slice(200, -200)  # away from the resampling filter's edges
    assert np.abs(samples[middle] - expected[middle]).max() < 1e-5


def test_zip_entries_and_undecodable_files(tmp_path):
    t = np.arange(22050) / 22050
    sf.write(tmp_path / "a.wav", 0.5 * np.sin(2 * np.pi * 440 * t), 22050)
    wav = load_waveform(str(tmp_path / "a.wav"))
    with zipfile.ZipFile(tmp_path / "audio.zip", "w", zipfile.ZIP_STORED) as z:
        z.write(tmp_path / "a.wav", "a.wav")
    with zipfile.ZipFile(tmp_path / "audio.zip") as z:
        info = z.getinfo("a.wav")
        offset = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    entry = load_waveform(f"{tmp_path / 'audio.zip'}:{offset}:{info.file_size}")
    assert np.array_equal(entry, wav)
    assert waveform_length(f"{tmp_path / 'audio.zip'}:{offset}:{info.file_size}") == 16000
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
    write_tsv(tmp_path / "train.tsv", bad)
    write_config(tmp_path)
    (tmp_path / "audio").symlink_to(tiny_corpus / "audio")
    _, task, _ = build_task_and_model(tmp_path, tiny_models)
    with pytest.raises(ValueError, match=r"train\.tsv:4 id 'utt2' field 'tgt_lang': empty"):
        task.load_dataset("train")


def test_lang_columns_may_come_from_flags(tiny_corpus, tiny_models, tmp_path):
    rows = [{k: v for k, v in r.items() if k not in ("src_lang", "tgt_lang")}
            for r in _rows(tiny_corpus) if r["src_lang"] == "fr"]
    write_tsv(tmp_path / "test.tsv", rows, columns=list(rows[0]))
    write_config(tmp_path)
    (tmp_path / "audio").symlink_to(tiny_corpus / "audio")
    _, task, _ = build_task_and_model(tmp_path, tiny_models)
    with pytest.raises(ValueError, match="field 'src_lang': missing.*--src-lang"):
        task.load_dataset("test")
    _, task, _ = build_task_and_model(tmp_path, tiny_models, "--src-lang", "fr", "--tgt-lang", "en")
    task.load_dataset("test")
    assert len(task.dataset("test")) == len(rows)


def test_asr_augmentation_and_every_example_batched(tiny_corpus, tiny_models, monkeypatch):
    _, task, _ = build_task_and_model(tiny_corpus, tiny_models, "--asr-augment")
    monkeypatch.setattr("llast_fairseq.tasks.llast_st.TOKENIZE_ROWS", 3)  # 16 texts in 6 tokenizer calls
    task.load_dataset("train")
    task.load_dataset("test")
    train, test = task.dataset("train"), task.dataset("test")
    rows = _rows(tiny_corpus)
    assert len(train) == 2 * len(rows) and len(test) == len(rows)  # ASR twins only in train
    detok = LLMDetokenizer(task.tokenizer, task.target_dictionary)
    texts = {detok.decode(task.target_dictionary.string(train[i]["target"])) for i in range(len(train))}
    assert texts == {r["tgt_text"] for r in rows} | {r["src_text"] for r in rows}
    for i, (row, kind) in enumerate(train.examples):  # each example its own text's ids
        text = rows[row]["src_text" if kind == "asr" else "tgt_text"]
        ids = task.tokenizer(text, add_special_tokens=False)["input_ids"] + [task.target_dictionary.eos()]
        assert train[i]["target"].tolist() == ids, i
    asr = next(i for i, (_, kind) in enumerate(train.examples) if kind == "asr")
    before, after = task.prompts.ids("asr", rows[train.examples[asr][0]]["src_lang"],
                                     rows[train.examples[asr][0]]["src_lang"])
    assert train[asr]["after"].tolist() == after
    # fairseq drops a last batch that is not a multiple of 8 (issue #5036); ours keeps it
    batches = test.batch_by_size(test.ordered_indices(), max_sentences=3, required_batch_size_multiple=8)
    assert sorted(int(i) for b in batches for i in b) == list(range(len(test)))
