"""llast_fairseq.prep.covost2 and the llast-prep-covost2 command on a tiny Common Voice + CoVoST 2
tree in the official layout.

Audio is real speech from espeak-ng, encoded to mp3 (one clip stereo at 48 kHz, to exercise the
downmix and resampling). The manifests are read back with fairseq's own reader and every audio
entry is decoded the way fairseq locates it (``parse_path`` + ``read_from_stored_zip``).
"""
import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import yaml
from conftest import QUOTED_EN, QUOTED_FR, check_manifest, speak

from fairseq.data.audio.speech_to_text_dataset import SpeechToTextDatasetCreator
from llast_fairseq.cli.prep_covost2 import main as prep_covost2_main
from llast_fairseq.prep import covost2
from llast_fairseq.prep.pipeline import PrepConfig

BIN = Path(sys.executable).parent
STEREO_TEXT = "Bonjour tout le monde."  # common_voice_fr_0.mp3: 48 kHz, channels speech and speech / 2


def write_tsv(path, header, rows, escape_quotes=False):
    """Write a headed TSV with no quoting, as the corpus files are; with ``escape_quotes``
    a ``"`` is written ``\\"`` (what pandas' to_csv(escapechar="\\\\", QUOTE_NONE) produces)."""
    with open(path, "w", encoding="utf-8") as f:
        for row in [header] + rows:
            cells = [c.replace('"', '\\"') if escape_quotes else c for c in row]
            f.write("\t".join(cells) + "\n")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A Common Voice release (fr, de) and CoVoST 2 TSVs (fr_en, de_en) with tricky rows."""
    root = tmp_path_factory.mktemp("covost")
    fr_text = [STEREO_TEXT, "Le chat dort.", "Il fait beau.", QUOTED_FR,
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
    for name, text in [("missing", "Absent."), ("bad", "Cassé."), ("empty", "Vide."), ("remove", "Euh."),
                       ("remove2", "Hmm.")]:
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
        ["common_voice_fr_remove.mp3", "Euh.", "REMOVE", "speaker1", "train"],
        ["common_voice_fr_remove2.mp3", "Hmm.", "Hmm. REMOVE", "speaker1", "test"],
        ["common_voice_fr_2.mp3", fr_text[2], "Other split.", "speaker0", "dev_covost"],
        ["common_voice_fr_unknown.mp3", "Inconnu.", "Unknown.", "speaker1", "train"],
    ]
    write_tsv(root / "covost_v2.fr_en.tsv", cols, fr_en, escape_quotes=True)
    de_en = [["common_voice_de_0.mp3", "Guten Morgen.", "Good morning.", "speaker9", "train"]]
    write_tsv(root / "covost_v2.de_en.tsv", cols, de_en)
    return root


def run(corpus, out_dir, **cfg):
    """Prepare fr_en and de_en of ``corpus`` into ``out_dir``; returns the summary."""
    return covost2.prepare(str(corpus), [("fr", "en"), ("de", "en")], str(out_dir),
                           cfg=PrepConfig(**cfg))


def test_zip_manifests_rejections_and_resume(corpus, tmp_path):
    out = tmp_path / "out"
    summary = run(corpus, out, zip=True, jobs=2, temperature=2)
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
        "common_voice_fr_remove": "REMOVE marker in translation",
        "common_voice_fr_remove2": "REMOVE marker in translation",
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
    again = run(corpus, out, zip=True, jobs=2, temperature=2)
    assert again["audio"] == {"converted": 1, "reused": 8}  # only the undecodable clip is retried
    assert os.path.getmtime(out / "audio.zip") == zip_mtime
    assert again["rows"] == summary["rows"] and again["rejected"] == summary["rejected"]


def test_files_resume_after_interruption(corpus, tmp_path):
    out = tmp_path / "out"
    summary = run(corpus, out, audio_format="wav", jobs=1)
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
    again = run(corpus, out, audio_format="wav", jobs=1)
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
    rows = [r for _, r in covost2.read_official_tsv(path)]
    assert rows == [
        {"path": "a.mp3", "sentence": '"Quoted" at start'},
        {"path": "b.mp3", "sentence": 'escaped "quote" and l\'apostrophe'},
        {"path": "c.mp3", "sentence": "1984"},
        {"path": "d.mp3", "sentence": ""},
    ]


def test_converted_clip_keeps_duration_and_content(corpus, tmp_path):
    """The 48 kHz stereo mp3 comes out as 16 kHz mono: as long as the speech it was made from, and
    that speech at the channels' mean level (0.75 of it)."""
    run(corpus, tmp_path, audio_format="wav", jobs=1)
    converted, rate = sf.read(tmp_path / "audio" / "fr" / "common_voice_fr_0.wav", dtype="float32")
    assert rate == 16000 and converted.ndim == 1
    speech, speech_rate = speak(STEREO_TEXT, "fr")
    assert abs(len(converted) / 16000 - len(speech) / speech_rate) < 0.01
    reference = 0.75 * soxr.resample(speech, speech_rate, 16000)
    n = min(len(reference), len(converted))
    converted, reference = converted[:n], reference[:n]
    assert np.corrcoef(converted, reference)[0, 1] > 0.95
    assert np.dot(converted, reference) / np.dot(reference, reference) == pytest.approx(1, abs=0.05)


def test_installed_command(corpus, tmp_path, capsys):
    out = tmp_path / "out"
    proc = subprocess.run([BIN / "llast-prep-covost2", "--cv-root", corpus, "--pairs", "fr_en", "de_en",
                           "--out-dir", out, "--zip", "--jobs", "1", "--temperature", "2"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[summary] kept train_fr_en=4, dev_fr_en=1, test_fr_en=1, train_de_en=1" in proc.stdout
    assert [s["id"] for s in check_manifest(out, "train_joint", expect_zip=True)] == [
        "common_voice_fr_0", "common_voice_fr_1", "common_voice_fr_2", "common_voice_fr_3",
        "common_voice_de_0", "common_voice_de_0_r1"]
    # the error paths in this process (a process start costs ~12 s of imports): argparse exits 2;
    # sys.exit(message) exits 1 with the message on stderr
    with pytest.raises(SystemExit) as bad:
        prep_covost2_main(["--cv-root", str(corpus), "--pairs", "fren", "--out-dir", str(out)])
    assert bad.value.code == 2 and "pair 'fren' is not <src>_<tgt>, e.g. fr_en" in capsys.readouterr().err
    with pytest.raises(SystemExit) as missing:
        prep_covost2_main(["--cv-root", str(corpus), "--pairs", "es_en", "--out-dir", str(out)])
    assert isinstance(missing.value.code, str) and f"{corpus}/es/validated.tsv" in missing.value.code
