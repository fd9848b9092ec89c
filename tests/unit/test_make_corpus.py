"""Tests for the corpus grammar (lexicon.py) and the corpus maker (scripts/make_corpus.py)."""

import collections
import importlib.util
import json
import random
import sys
from pathlib import Path

import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[2]


def _load(name, path):
    """Import a module from a file path."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


make_corpus = _load("make_corpus", REPO / "scripts" / "make_corpus.py")
L = make_corpus.lexicon
NP, Clause = L.NP, L.Clause


def render(clause):
    """The clause in all four languages."""
    return L.realize_all(clause)


# ---------------------------------------------------------------------------
# Grammar
# ---------------------------------------------------------------------------

def test_feminine_noun_agreement():
    assert render(Clause(NP("house", "the"), "be", adj="white")) == {
        "fr": "La maison est blanche.", "de": "Das Haus ist weiß.",
        "es": "La casa es blanca.", "en": "The house is white."}
    clause = Clause("I", "see", obj=NP("cup", "a", adj="small"), place="kitchen")
    assert render(clause) == {
        "fr": "Je vois une petite tasse dans la cuisine.", "de": "Ich sehe eine kleine Tasse in der Küche.",
        "es": "Veo una taza pequeña en la cocina.", "en": "I see a small cup in the kitchen."}
    clause = Clause(NP("sister", "my", "pl", "young"), "be", "future", adj="small")
    assert render(clause)["fr"] == "Mes jeunes sœurs seront petites."
    assert render(clause)["es"] == "Mis hermanas jóvenes serán pequeñas."


def test_plural_subject_conjugates_verb():
    singular = render(Clause(NP("dog", "the"), "sleep", place="garden"))
    plural = render(Clause(NP("dog", "the", "pl"), "sleep", place="garden"))
    assert singular == {"fr": "Le chien dort dans le jardin.", "de": "Der Hund schläft im Garten.",
                        "es": "El perro duerme en el jardín.", "en": "The dog sleeps in the garden."}
    assert plural == {"fr": "Les chiens dorment dans le jardin.", "de": "Die Hunde schlafen im Garten.",
                      "es": "Los perros duermen en el jardín.", "en": "The dogs sleep in the garden."}


def test_german_accusative_and_adjective_endings():
    assert render(Clause("I", "eat", obj=NP("apple", "the", adj="red")))["de"] == "Ich esse den roten Apfel."
    assert render(Clause("he", "eat", obj=NP("apple", "a", adj="red")))["de"] == "Er isst einen roten Apfel."
    assert render(Clause(NP("apple", "a", adj="red"), "be", adj="big"))["de"] == "Ein roter Apfel ist groß."
    clause = Clause("we", "buy", obj=NP("apple", "3", "pl", "red"))
    assert render(clause) == {"fr": "Nous achetons trois pommes rouges.", "de": "Wir kaufen drei rote Äpfel.",
                              "es": "Compramos tres manzanas rojas.", "en": "We buy three red apples."}
    assert render(Clause("she", "buy", obj=NP("car", "my", adj="new")))["de"] == "Sie kauft mein neues Auto."


def test_tenses_and_word_order():
    clause = Clause("they", "read", "past", obj=NP("book", "the"), time="yesterday")
    assert render(clause) == {"fr": "Ils ont lu le livre hier.", "de": "Sie haben gestern das Buch gelesen.",
                              "es": "Ellos leyeron el libro ayer.", "en": "They read the book yesterday."}
    clause = Clause(NP("girl", "the"), "run", "past", place="park", time="last_week")
    assert render(clause)["de"] == "Das Mädchen ist letzte Woche im Park gelaufen."
    clause = Clause("I", "open", "future", obj=NP("door", "the"), time="tomorrow")
    assert render(clause) == {"fr": "J'ouvrirai la porte demain.", "de": "Ich werde morgen die Tür öffnen.",
                              "es": "Abriré la puerta mañana.", "en": "I will open the door tomorrow."}


def test_french_elision_and_english_article():
    assert render(Clause(NP("man", "the"), "work", place="office"))["fr"] == "L'homme travaille au bureau."
    assert render(Clause(NP("tree", "a", adj="old"), "be", adj="big"))["fr"] == "Un vieil arbre est grand."
    clause = Clause("I", "eat", obj=NP("orange", "my"))
    assert render(clause)["fr"] == "Je mange mon orange."
    assert render(Clause("I", "eat", obj=NP("apple", "a")))["en"] == "I eat an apple."


def test_invalid_meanings_are_rejected():
    with pytest.raises(ValueError):
        L.realize(Clause("I", "drink", obj=NP("milk", "a")), "en")  # mass noun with "a"
    with pytest.raises(ValueError):
        L.realize(Clause("I", "eat", "past", obj=NP("apple", "the")), "en")  # past without time
    with pytest.raises(ValueError):
        L.realize(Clause("I", "eat", obj=NP("book", "the")), "en")  # selectional restriction


def test_grammar_is_large_and_unambiguous():
    assert sum(L.count_meanings().values()) >= 20000
    rng = random.Random(0)
    rows = [render(L.sample_clause(rng)) for _ in range(3000)]
    for lang in L.LANGS:
        to_en = collections.defaultdict(set)
        from_en = collections.defaultdict(set)
        for row in rows:
            assert L.MIN_WORDS <= len(row[lang].split()) <= L.MAX_WORDS
            to_en[row[lang]].add(row["en"])
            from_en[row["en"]].add(row[lang])
        assert all(len(v) == 1 for v in to_en.values()), lang
        assert all(len(v) == 1 for v in from_en.values()), lang
    assert len({row["en"] for row in rows}) > 2500


# ---------------------------------------------------------------------------
# Corpus maker
# ---------------------------------------------------------------------------

def test_bad_arguments_fail_clearly():
    for bad in (["--directions", "fr-fr"], ["--directions", "xx-en"], ["--directions", "fr-en,fr-en"],
                ["--train-per-direction", "0"], ["--preset", "huge"]):
        with pytest.raises(SystemExit):
            make_corpus.parse_args(["--out", "x"] + bad)
    args = make_corpus.parse_args(["--out", "x", "--preset", "tiny", "--dev-per-direction", "5"])
    assert (args.train_per_direction, args.dev_per_direction, args.test_per_direction) == (40, 5, 8)


@pytest.fixture(scope="module")
def made_corpus(tmp_path_factory):
    """A tiny corpus with all default directions."""
    out = tmp_path_factory.mktemp("corpus")
    assert make_corpus.main(["--out", str(out), "--preset", "tiny", "--seed", "3"]) == 0
    return out


def read_manifest(path):
    """Rows of a manifest as dicts."""
    from fairseq.data.audio.speech_to_text_dataset import SpeechToTextDatasetCreator
    return SpeechToTextDatasetCreator._load_samples_from_tsv(str(path.parent), path.stem)


def test_manifests_readable_by_fairseq(made_corpus):
    rows = read_manifest(made_corpus / "train_fr_en.tsv")
    assert len(rows) == 40
    assert list(rows[0]) == make_corpus.COLUMNS
    assert {(r["src_lang"], r["tgt_lang"]) for r in rows} == {("fr", "en")}
    assert len(read_manifest(made_corpus / "train.tsv")) == 4 * 40
    assert len(read_manifest(made_corpus / "dev.tsv")) == 4 * 8
    assert len(read_manifest(made_corpus / "test_en_fr.tsv")) == 8
    assert (made_corpus / "config.yaml").read_text() == f'audio_root: "{made_corpus}"\n'
    lines = (made_corpus / "text.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 * 4 * 40


def test_audio_matches_manifest(made_corpus):
    rows = read_manifest(made_corpus / "train.tsv") + read_manifest(made_corpus / "dev.tsv")
    assert len({r["id"] for r in rows}) == len(rows)
    for row in rows:
        info = sf.info(str(made_corpus / row["audio"]))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert info.frames == int(row["n_frames"])
        assert 0.5 < info.duration < 15
        audio, _ = sf.read(str(made_corpus / row["audio"]))  # espeak-ng's ending silence trimmed
        loud = (abs(audio) > make_corpus.SILENCE_LEVEL).nonzero()[0]
        assert len(audio) - loud[-1] - 1 <= make_corpus.TRAILING_SILENCE * 16000


def test_trailing_silence_is_trimmed_to_a_tenth_of_a_second():
    import numpy as np

    speech = np.full(8000, 0.5)
    speech[-100:] = 0.005  # a quiet tail below the level goes with the silence
    trimmed = make_corpus.trim_trailing_silence(np.concatenate([np.zeros(800), speech, np.zeros(9000)]))
    assert len(trimmed) == 800 + 8000 - 100 + 1600
    assert np.array_equal(trimmed[:8700], np.concatenate([np.zeros(800), speech[:-100]]))


def test_held_out_sentences_and_voices(made_corpus):
    train = read_manifest(made_corpus / "train.tsv")
    train_texts = {make_corpus.normalize(r[k]) for r in train for k in ("src_text", "tgt_text")}
    train_voices = {r["speaker"].split("+")[1] for r in train}
    for split in ("dev", "test"):
        for src, tgt in make_corpus.parse_directions(make_corpus.DEFAULT_DIRECTIONS):
            for row in read_manifest(made_corpus / f"{split}_{src}_{tgt}.tsv"):
                assert make_corpus.normalize(row["src_text"]) not in train_texts
                assert make_corpus.normalize(row["tgt_text"]) not in train_texts
                assert row["speaker"].split("+")[1] not in train_voices
    stats = json.loads((made_corpus / "stats.json").read_text())
    assert set(stats["held_out"].values()) == {0}


def test_deterministic_and_cached(made_corpus, tmp_path, capsys):
    assert make_corpus.main(["--out", str(tmp_path), "--preset", "tiny", "--seed", "3", "--workers", "1"]) == 0
    for manifest in sorted(made_corpus.glob("*.tsv")):
        assert manifest.read_bytes() == (tmp_path / manifest.name).read_bytes(), manifest.name
    capsys.readouterr()
    assert make_corpus.main(["--out", str(tmp_path), "--preset", "tiny", "--seed", "3"]) == 0
    assert "up to date" in capsys.readouterr().out
    sizes = {"train": 5, "dev": 2, "test": 2}
    directions = [("fr", "en")]
    assert make_corpus.plan_corpus(1, directions, sizes) == make_corpus.plan_corpus(1, directions, sizes)
    assert make_corpus.plan_corpus(1, directions, sizes) != make_corpus.plan_corpus(2, directions, sizes)


def test_interrupted_build_resumes(tmp_path):
    out = tmp_path / "c"
    argv = ["--out", str(out), "--preset", "tiny", "--seed", "3", "--directions", "de-en"]
    assert make_corpus.main(argv) == 0
    wav = out / "audio" / "de_en" / "de_en_train_000007.wav"
    expected, manifest = wav.read_bytes(), (out / "train_de_en.tsv").read_bytes()
    wav.unlink()
    stamp = json.loads((out / make_corpus.STAMP_NAME).read_text())
    (out / make_corpus.STAMP_NAME).write_text(json.dumps({**stamp, "complete": False}))
    assert make_corpus.main(argv) == 0
    assert wav.read_bytes() == expected
    assert (out / "train_de_en.tsv").read_bytes() == manifest


def test_refuses_foreign_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("not a corpus")
    with pytest.raises(SystemExit, match="not empty"):
        make_corpus.main(["--out", str(tmp_path), "--preset", "tiny"])
