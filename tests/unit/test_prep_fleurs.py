"""llast_fairseq.prep.fleurs and the llast-prep-fleurs command on a tiny FLEURS tree in the
official layout.

fr_fr has its audio unpacked (``audio/<split>/*.wav``), en_us only as ``audio/<split>.tar.gz``
archives. Sentence ids are shared across languages (n-way parallel), fr_fr has two recordings of
one sentence, and some rows have no counterpart, no clip, or a malformed line.
"""
import csv
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import soundfile as sf
import soxr
from conftest import QUOTED_EN, QUOTED_FR, check_manifest, speak

from llast_fairseq.cli.prep_fleurs import main as prep_fleurs_main
from llast_fairseq.prep import fleurs
from llast_fairseq.prep.pipeline import PrepConfig

BIN = Path(sys.executable).parent

BACKSLASH = "A dev sentence, 50\\50."  # FLEURS has no escapes: the backslash is kept

# (sentence id, file name, raw transcription) per language and split
ROWS = {
    "fr_fr": {
        "train": [("1", "101.wav", "Bonjour."), ("1", "102.wav", "Bonjour."),
                  ("2", "103.wav", QUOTED_FR), ("3", "104.wav", "Sans traduction."),
                  ("4", "105.wav", "Sans fichier.")],
        "dev": [("5", "106.wav", "Une phrase de dev.")],
        "test": [("6", "107.wav", "Une phrase de test.")],
    },
    "en_us": {
        "train": [("1", "201.wav", "Hello."), ("2", "202.wav", QUOTED_EN),
                  ("4", "205.wav", "No file.")],
        "dev": [("5", "203.wav", BACKSLASH)],
        "test": [("6", "204.wav", "A test sentence."), ("7", "206.wav", "Only in English.")],
    },
}
NO_AUDIO = {"105.wav", "205.wav"}


def fleurs_line(sentence_id, file_name, raw, num_samples):
    """One line of a FLEURS TSV: id, file, raw, normalized, phonemes, num samples, gender."""
    normalized = raw.lower().replace(".", "").replace('"', "")
    phonemes = " ".join(normalized.replace(" ", "|")) + " |"
    return "\t".join([sentence_id, file_name, raw, normalized, phonemes, str(num_samples),
                      "FEMALE"]) + "\n"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The FLEURS tree: fr_fr unpacked, en_us as tar.gz, one malformed fr_fr train line."""
    root = tmp_path_factory.mktemp("fleurs")
    for lang, splits in ROWS.items():
        for split, rows in splits.items():
            audio_dir = root / lang / "audio" / split
            os.makedirs(audio_dir)
            lines = []
            for sentence_id, name, raw in rows:
                samples, rate = speak(raw, lang[:2])
                samples = soxr.resample(samples, rate, 16000)
                if name not in NO_AUDIO:
                    sf.write(audio_dir / name, samples, 16000)
                lines.append(fleurs_line(sentence_id, name, raw, len(samples)))
            if split == "train" and lang == "fr_fr":
                lines.append("9\t109.wav\tTronquée.\n")
            (root / lang / f"{split}.tsv").write_text("".join(lines), encoding="utf-8")
            if lang == "en_us":  # archive only, members named <split>/<file> as in FLEURS
                with tarfile.open(root / lang / "audio" / f"{split}.tar.gz", "w:gz") as tar:
                    tar.add(audio_dir, arcname=split)
                for name in os.listdir(audio_dir):
                    os.remove(audio_dir / name)
                os.rmdir(audio_dir)
    return root


def run(corpus, out_dir, **cfg):
    """Prepare fr_fr-en_us and en_us-fr_fr of ``corpus`` into ``out_dir``; returns the summary."""
    return fleurs.prepare(str(corpus), [("fr_fr", "en_us"), ("en_us", "fr_fr")], str(out_dir),
                          cfg=PrepConfig(**cfg))


def test_pairs_rejections_sampling_and_resume(corpus, tmp_path, monkeypatch):
    out = tmp_path / "out"
    summary = run(corpus, out, jobs=2, temperature=3)
    assert summary["rows"] == {
        "train_fr_fr-en_us": 3, "dev_fr_fr-en_us": 1, "test_fr_fr-en_us": 1,
        "train_en_us-fr_fr": 2, "dev_en_us-fr_fr": 1, "test_en_us-fr_fr": 1,
    }
    train = check_manifest(out, "train_fr_fr-en_us", expect_zip=False)
    assert [(s["id"], s["tgt_text"]) for s in train] == [
        ("fr_fr_101", "Hello."), ("fr_fr_102", "Hello."), ("fr_fr_103", QUOTED_EN)]
    assert train[2]["src_text"] == QUOTED_FR
    assert (train[0]["src_lang"], train[0]["tgt_lang"]) == ("fr_fr", "en_us")
    assert train[0]["audio"] == "audio/fr_fr/101.flac"
    back = check_manifest(out, "train_en_us-fr_fr", expect_zip=False)
    assert [(s["id"], s["tgt_text"]) for s in back] == [
        ("en_us_201", "Bonjour."), ("en_us_202", QUOTED_FR)]
    assert check_manifest(out, "test_en_us-fr_fr", False)[0]["tgt_text"] == "Une phrase de test."
    assert check_manifest(out, "dev_en_us-fr_fr", False)[0]["src_text"] == BACKSLASH
    assert not (out / fleurs.EXTRACT_DIR).exists()

    with open(out / "rejected.tsv", newline="") as f:
        rejected = [(r["direction"], r["split"], r["id"], r["reason"])
                    for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    assert sorted(rejected) == sorted([
        ("fr_fr-en_us", "train", "fr_fr_104", "no target sentence"),
        ("fr_fr-en_us", "train", "line 6", "malformed row"),
        ("fr_fr-en_us", "train", "fr_fr_105", "missing clip"),
        ("en_us-fr_fr", "train", "en_us_205", "missing clip"),  # in TSV, absent from archive
        ("en_us-fr_fr", "test", "en_us_206", "no target sentence"),
    ])

    # temperature 3: n = {fr->en: 3, en->fr: 2}; en->fr gets round(3 * (2/3) ** (1/3)) = 3 rows
    assert summary["sampling"] == {"fr_fr-en_us": 3, "en_us-fr_fr": 3}
    joint = check_manifest(out, "train_joint", expect_zip=False)
    back_ids = [s["id"] for s in joint if s["src_lang"] == "en_us"]
    assert back_ids[:2] == ["en_us_201", "en_us_202"] and back_ids[2] in {
        "en_us_201_r1", "en_us_202_r1"}

    def no_tar(*args, **kwargs):
        raise AssertionError("archives must not be reopened when every clip is done")

    monkeypatch.setattr(fleurs.tarfile, "open", no_tar)
    mtime = os.path.getmtime(out / "audio" / "en_us" / "201.flac")
    again = run(corpus, out, jobs=2, temperature=3)
    assert again["audio"] == {"converted": 0, "reused": 9}
    assert os.path.getmtime(out / "audio" / "en_us" / "201.flac") == mtime
    assert again["rows"] == summary["rows"] and again["sampling"] == summary["sampling"]


def test_zip_from_dataset_repo_root(corpus, tmp_path):
    """``--fleurs-root`` may be the dataset repo holding data/; clips go into audio.zip."""
    repo = tmp_path / "fleurs_repo"
    os.makedirs(repo)
    os.symlink(corpus, repo / "data")
    out = tmp_path / "out"
    summary = fleurs.prepare(str(repo), [("en_us", "fr_fr")], str(out),
                             cfg=PrepConfig(zip=True, audio_format="wav"))
    assert summary["rows"]["train_en_us-fr_fr"] == 2
    for split in ("train", "dev", "test"):
        check_manifest(out, f"{split}_en_us-fr_fr", expect_zip=True)
    assert sorted(os.listdir(out)) == [
        "archive_index", "audio.zip", "config.yaml", "dev_en_us-fr_fr.tsv", "rejected.tsv",
        "test_en_us-fr_fr.tsv", "train_en_us-fr_fr.tsv", "train_joint.sampling.tsv",
        "train_joint.tsv"]


def test_installed_command(corpus, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([BIN / "llast-prep-fleurs", "--fleurs-root", corpus, "--pairs", "fr_fr-en_us",
                           "--out-dir", out, "--audio-format", "wav", "--jobs", "1"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[summary] kept train_fr_fr-en_us=3, dev_fr_fr-en_us=1, test_fr_fr-en_us=1" in proc.stdout
    train = check_manifest(out, "train_joint", expect_zip=False)
    assert [(s["id"], s["audio"]) for s in train] == [
        ("fr_fr_101", "audio/fr_fr/101.wav"), ("fr_fr_102", "audio/fr_fr/102.wav"),
        ("fr_fr_103", "audio/fr_fr/103.wav")]
    with pytest.raises(SystemExit) as missing:  # in this process: sys.exit(message) exits 1 with it on stderr
        prep_fleurs_main(["--fleurs-root", str(corpus), "--pairs", "fr_fr-de_de", "--out-dir", str(out)])
    assert isinstance(missing.value.code, str) and f"no FLEURS language directory {corpus}/de_de" in missing.value.code
