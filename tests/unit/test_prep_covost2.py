"""scripts/prep_covost2.py on a tiny Common Voice + CoVoST 2 tree in the official layout.

Audio is real speech from espeak-ng, encoded to mp3 (one clip stereo at 48 kHz, to exercise the
downmix and resampling). The manifests are read back with fairseq's own reader and every audio
entry is decoded the way fairseq locates it (``parse_path`` + ``read_from_stored_zip``).
"""
import csv
import io
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import soxr
import yaml

from fairseq.data.audio.audio_utils import parse_path, read_from_stored_zip
from fairseq.data.audio.speech_to_text_dataset import SpeechToTextDatasetCreator

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts"))
import prep_covost2  # noqa: E402

QUOTED_FR = 'Il a dit "bonjour" à l\'ami.'
QUOTED_EN = '"Hello," he said to his friend\'s dog.'


def speak(text, voice="en"):
    """Mono float32 speech for ``text`` synthesized by espeak-ng, and its sample rate."""
    wav = subprocess.run(["espeak-ng", "-v", voice, "--stdout", text],
                         check=True, capture_output=True).stdout
    samples, rate = sf.read(io.BytesIO(wav), dtype="float32")
    return samples, rate


def write_tsv(path, header, rows, escape_quotes=False):
    """Write a headed TSV with no quoting, as the corpus files are; with ``escape_quotes``
    a ``"`` is written ``\\"`` (what pandas' to_csv(escapechar="\\\\", QUOTE_NONE) produces)."""
    with open(path, "w", encoding="utf-8") as f:
        for row in [header] + rows:
            cells = [c.replace('"', '\\"') if escape_quotes else c for c in row]
            f.write("\t".join(cells) + "\n")


def check_manifest(out_dir, split, expect_zip):
    """Load ``split`` with fairseq's reader and decode every audio entry; returns the samples."""
    config = yaml.safe_load(open(os.path.join(out_dir, "config.yaml")))
    samples = SpeechToTextDatasetCreator._load_samples_from_tsv(str(out_dir), split)
    for s in samples:
        assert list(s) == ["id", "audio", "n_frames", "tgt_text", "src_text", "src_lang",
                           "tgt_lang", "speaker"]
        path, slice_ptr = parse_path(os.path.join(config["audio_root"], s["audio"]))
        assert bool(slice_ptr) == expect_zip
        source = io.BytesIO(read_from_stored_zip(path, *slice_ptr)) if slice_ptr else path
        waveform, rate = sf.read(source, dtype="float32")
        assert rate == 16000 and waveform.ndim == 1
        assert len(waveform) == int(s["n_frames"]) > 0
    return samples


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A Common Voice release (fr, de) and CoVoST 2 TSVs (fr_en, de_en) with tricky rows."""
    root = tmp_path_factory.mktemp("covost")
    fr_text = ["Bonjour tout le monde.", "Le chat dort.", "Il fait beau.", QUOTED_FR,
               "Une phrase pour le dev.", "Une phrase pour le test."]
    clips = {}
    for i, text in enumerate(fr_text):
        clips[f"common_voice_fr_{i}.mp3"] = ("fr", text, f"speaker{i % 2}")
    clips["common_voice_fr_long.mp3"] = ("fr", "Une phrase trop longue.", "speaker0")
    clips["common_voice_de_0.mp3"] = ("de", "Guten Morgen.", "speaker9")
    for name, (lang, text, _) in clips.items():
        os.makedirs(root / lang / "clips", exist_ok=True)
        samples, rate = speak(text, lang)
        if name == "common_voice_fr_0.mp3":  # stereo 48 kHz
            samples = soxr.resample(samples, rate, 48000)
            samples, rate = np.stack([samples, 0.5 * samples], axis=1), 48000
        if name.endswith("long.mp3"):  # 31 s: speech, then silence
            samples = np.concatenate([samples, np.zeros(31 * rate, dtype=np.float32)])
        sf.write(root / lang / "clips" / name, samples, rate, format="MP3")
    (root / "fr" / "clips" / "common_voice_fr_bad.mp3").write_bytes(b"not an mp3 at all" * 50)
    header = ["client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender", "accent"]
    validated = {lang: [] for lang in ("fr", "de")}
    for name, (lang, text, speaker) in clips.items():
        validated[lang].append([speaker, name, text, "2", "0", "", "", ""])
    for name, text in [("missing", "Absent."), ("bad", "Cassé."), ("empty", "Vide.")]:
        validated["fr"].append(
            ["speaker1", f"common_voice_fr_{name}.mp3", text, "2", "0", "", "", ""])
    for lang, rows in validated.items():
        write_tsv(root / lang / "validated.tsv", header, rows)
    cols = ["path", "sentence", "translation", "client_id", "split"]
    fr_en = [
        ["common_voice_fr_0.mp3", fr_text[0], "Hello everyone.", "speaker0", "train"],
        ["common_voice_fr_1.mp3", fr_text[1], "The cat sleeps.", "speaker1", "train"],
        ["common_voice_fr_2.mp3", fr_text[2], "The weather is nice.", "speaker0", "train_covost"],
        ["common_voice_fr_3.mp3", QUOTED_FR, QUOTED_EN, "speaker1", "train"],
        ["common_voice_fr_4.mp3", fr_text[4], "A sentence for dev.", "speaker0", "dev"],
        ["common_voice_fr_5.mp3", fr_text[5], "A sentence for test.", "speaker1", "test"],
        ["common_voice_fr_long.mp3", "Une phrase trop longue.", "Too long.", "speaker0", "train"],
        ["common_voice_fr_missing.mp3", "Absent.", "Missing.", "speaker1", "train"],
        ["common_voice_fr_bad.mp3", "Cassé.", "Broken.", "speaker1", "train"],
        ["common_voice_fr_empty.mp3", "Vide.", "", "speaker1", "train"],
        ["common_voice_fr_2.mp3", fr_text[2], "Other split.", "speaker0", "dev_covost"],
        ["common_voice_fr_unknown.mp3", "Inconnu.", "Unknown.", "speaker1", "train"],
    ]
    write_tsv(root / "covost_v2.fr_en.tsv", cols, fr_en, escape_quotes=True)
    de_en = [["common_voice_de_0.mp3", "Guten Morgen.", "Good morning.", "speaker9", "train"]]
    write_tsv(root / "covost_v2.de_en.tsv", cols, de_en)
    return root


def run(corpus, out_dir, *extra):
    """Run prep_covost2 on ``corpus`` into ``out_dir``; returns its summary."""
    return prep_covost2.main(["--cv-root", str(corpus), "--pairs", "fr_en", "de_en",
                              "--out-dir", str(out_dir), *extra])


def test_zip_manifests_rejections_and_resume(corpus, tmp_path):
    out = tmp_path / "out"
    summary = run(corpus, out, "--zip", "--jobs", "2", "--temperature", "2")
    assert summary["rows"] == {"train_fr_en": 4, "dev_fr_en": 1, "test_fr_en": 1,
                               "train_de_en": 1, "dev_de_en": 0, "test_de_en": 0}
    train = check_manifest(out, "train_fr_en", expect_zip=True)
    assert [s["id"] for s in train] == [f"common_voice_fr_{i}" for i in range(4)]
    quoted = train[3]
    assert quoted["src_text"] == QUOTED_FR and quoted["tgt_text"] == QUOTED_EN
    assert (quoted["src_lang"], quoted["tgt_lang"], quoted["speaker"]) == ("fr", "en", "speaker1")
    assert check_manifest(out, "dev_fr_en", True)[0]["tgt_text"] == "A sentence for dev."
    assert check_manifest(out, "test_fr_en", True)[0]["tgt_text"] == "A sentence for test."
    assert not (out / "audio").exists()  # loose clips are deleted once zipped

    with open(out / "rejected.tsv", newline="") as f:
        rejected = {r["id"]: r for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)}
    assert {i: r["reason"] for i, r in rejected.items()} == {
        "common_voice_fr_long": "too long",
        "common_voice_fr_missing": "missing clip",
        "common_voice_fr_bad": "undecodable audio",
        "common_voice_fr_empty": "empty translation",
        "common_voice_fr_2": "unused split",
        "common_voice_fr_unknown": "not in validated.tsv",
    }
    assert rejected["common_voice_fr_2"]["detail"] == "dev_covost"
    assert summary["rejected"]["too long"] == 1

    # temperature 2: n = {fr_en: 4, de_en: 1} -> de_en gets round(4 * (1/4) ** 0.5) = 2 rows
    assert summary["sampling"] == {"fr_en": 4, "de_en": 2}
    joint = check_manifest(out, "train_joint", expect_zip=True)
    assert [s["id"] for s in joint][-2:] == ["common_voice_de_0", "common_voice_de_0_r1"]
    sampling = SpeechToTextDatasetCreator._load_samples_from_tsv(str(out), "train_joint.sampling")
    assert [(r["direction"], r["n_rows"], r["count"]) for r in sampling] == \
        [("fr_en", "4", "4"), ("de_en", "1", "2")]
    assert float(sampling[0]["p"]) == pytest.approx(2 / 3)

    zip_mtime = os.path.getmtime(out / "audio.zip")
    again = run(corpus, out, "--zip", "--jobs", "2", "--temperature", "2")
    assert again["audio"] == {"converted": 1, "reused": 8}  # only the undecodable clip is retried
    assert os.path.getmtime(out / "audio.zip") == zip_mtime
    assert again["rows"] == summary["rows"] and again["rejected"] == summary["rejected"]


def test_files_resume_after_interruption(corpus, tmp_path):
    out = tmp_path / "out"
    summary = run(corpus, out, "--audio-format", "wav", "--jobs", "1")
    assert summary["audio"] == {"converted": 9, "reused": 0}
    train = check_manifest(out, "train_fr_en", expect_zip=False)
    assert train[0]["audio"] == "audio/fr/common_voice_fr_0.wav"
    config = yaml.safe_load(open(out / "config.yaml"))
    assert config["audio_root"] == str(out) and config["use_audio_input"] is True
    joint = check_manifest(out, "train_joint", expect_zip=False)
    assert len(joint) == 5  # temperature 1: plain concatenation

    # simulate a crash: one clip lost, another half-written as .part
    done = out / "audio" / "fr" / "common_voice_fr_1.wav"
    kept = out / "audio" / "fr" / "common_voice_fr_2.wav"
    mtime = os.path.getmtime(kept)
    os.remove(done)
    (out / "audio" / "fr" / "common_voice_fr_3.wav.part").write_bytes(b"RIFF")
    again = run(corpus, out, "--audio-format", "wav", "--jobs", "1")
    assert again["audio"] == {"converted": 2, "reused": 7}  # the lost clip + the bad one
    assert os.path.getmtime(kept) == mtime
    assert check_manifest(out, "train_fr_en", expect_zip=False) == train


def test_reader_matches_official_pandas_options(tmp_path):
    """The csv-module reader gives what pd.read_csv(sep="\\t", escapechar="\\\\",
    quoting=QUOTE_NONE, na_filter=False) gives: literal quotes, backslash escapes, strings."""
    path = tmp_path / "t.tsv"
    path.write_text('path\tsentence\n'
                    'a.mp3\t"Quoted" at start\n'
                    '\n'
                    'b.mp3\tescaped \\"quote\\" and l\'apostrophe\n'
                    'c.mp3\t1984\n'
                    'd.mp3\n', encoding="utf-8")
    rows = [r for _, r in prep_covost2.read_official_tsv(path)]
    assert rows == [
        {"path": "a.mp3", "sentence": '"Quoted" at start'},
        {"path": "b.mp3", "sentence": 'escaped "quote" and l\'apostrophe'},
        {"path": "c.mp3", "sentence": "1984"},
        {"path": "d.mp3", "sentence": ""},
    ]
