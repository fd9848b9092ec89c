"""The demo corpus's grammar (llast_fairseq.prep.grammar over the demo's lexicon.yaml) and its maker
(llast_fairseq.prep.corpus, the llast-make-corpus command)."""

import collections
import io
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import yaml
from conftest import REPO

from fairseq.data.audio.speech_to_text_dataset import SpeechToTextDatasetCreator
from llast_fairseq.cli import make_corpus as cli
from llast_fairseq.data.manifest import MANIFEST_COLUMNS
from llast_fairseq.prep import corpus
from llast_fairseq.prep.grammar import LANGS, MAX_WORDS, MIN_WORDS, NP, Clause, Grammar, LexiconError

BIN = Path(sys.executable).parent
LEXICON = REPO / "examples" / "speech_translation_llm" / "corpus" / "lexicon.yaml"
G = Grammar(str(LEXICON))


def render(clause):
    """The clause in all four languages."""
    return G.realize_all(clause)


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
    with pytest.raises(ValueError, match="mass noun 'milk'"):
        G.realize(Clause("I", "drink", obj=NP("milk", "a")), "en")
    with pytest.raises(ValueError, match="past tense needs a time adverb"):
        G.realize(Clause("I", "eat", "past", obj=NP("apple", "the")), "en")
    with pytest.raises(ValueError, match="'eat' cannot take 'book'"):
        G.realize(Clause("I", "eat", obj=NP("book", "the")), "en")


def test_grammar_is_large_and_unambiguous():
    assert sum(G.count_meanings().values()) >= 20000
    rng = random.Random(0)
    rows = [render(G.sample_clause(rng)) for _ in range(3000)]
    for lang in LANGS:
        to_en = collections.defaultdict(set)
        from_en = collections.defaultdict(set)
        for row in rows:
            assert MIN_WORDS <= len(row[lang].split()) <= MAX_WORDS
            to_en[row[lang]].add(row["en"])
            from_en[row["en"]].add(row[lang])
        assert all(len(v) == 1 for v in to_en.values()), lang
        assert all(len(v) == 1 for v in from_en.values()), lang
    assert len({row["en"] for row in rows}) > 2500


def test_lexicon_groups_stand_for_their_classes():
    assert G.adjectives["big"].applies == {"animal", "food", "text", "vessel", "furniture", "opening",
                                           "container", "item", "plant", "vehicle", "building", "picture"}
    assert G.verbs["take"].obj == {"food", "text", "vessel", "container", "item"}
    assert G.verbs["sleep"].obj is None and G.verbs["run"].de[-1] == "sein" and G.verbs["eat"].de[-1] == "haben"
    assert G.verbs["look_for"].en == ("look for", "looks for", "looked for")  # "_" is a space in a form


@pytest.mark.parametrize("edit, message", [
    (("man: {class: person, en: man men, fr: m homme hommes,", "man: {class: person, en: man men, fr: m homme,"),
     r"nouns\.man\.fr: expected 3 space-separated forms, got 2 in 'm homme'"),
    (("girl: {class: person, en: girl girls, fr: f fille", "girl: {class: person, en: girl girls, fr: n fille"),
     r"nouns\.girl\.fr: gender 'n' is not m, f \(or n in German\)"),
    (("obj: letter book", "obj: letter bok"),
     r"verbs\.write\.obj: \['bok'\] is neither a noun, a noun class nor a group"),
    (("  he: {person: 3s, gender: m, en: he,", "  hee: {person: 3s, gender: m, en: he,"),
     r"pronouns: missing \['he'\]"),
    (("today: {en: today, fr: aujourd'hui, de: heute, es: hoy}", "today: {en: today, fr: aujourd'hui, de: heute}"),
     r"times\.present\.today: expected the keys fr, de, es, en"),
    (("  fr: ai a ons ont", "  fr: ai a ons"), r"future_endings\.fr: expected 4 space-separated forms, got 3"),
    (("  es: é á emos án", "  es: off"), r"future_endings\.es: expected a non-empty string, got False"),
])
def test_bad_lexicon_names_file_and_field(tmp_path, edit, message):
    text = LEXICON.read_text(encoding="utf-8")
    assert text.count(edit[0]) == 1, edit[0]
    bad = tmp_path / "lexicon.yaml"
    bad.write_text(text.replace(edit[0], edit[1]), encoding="utf-8")
    with pytest.raises(LexiconError, match=re.escape(f"{bad}: ") + message):
        Grammar(str(bad))


# ---------------------------------------------------------------------------
# Corpus maker
# ---------------------------------------------------------------------------

def test_bad_arguments_fail_clearly(capsys):
    for bad, message in ((["--directions", "fr-fr"], "bad direction 'fr-fr'"),
                         (["--directions", "xx-en"], "bad direction 'xx-en'"),
                         (["--directions", "fr-en,fr-en"], "direction 'fr-en' given twice"),
                         (["--train-per-direction", "0"], "must be >= 1, got 0"),
                         (["--preset", "huge"], "invalid choice: 'huge'")):
        with pytest.raises(SystemExit):
            cli.get_parser().parse_args(["--out", "x"] + bad)
        assert message in capsys.readouterr().err
    args = cli.get_parser().parse_args(["--out", "x", "--preset", "tiny", "--dev-per-direction", "5"])
    assert cli.corpus_config(args).sizes == {"train": 40, "dev": 5, "test": 8}
    with pytest.raises(SystemExit, match="lexicon nowhere.yaml not found: pass --lexicon PATH"):
        cli.main(["--out", "x", "--lexicon", "nowhere.yaml"])


@pytest.fixture(scope="module")
def made_corpus(tmp_path_factory):
    """A tiny corpus with all default directions, made by the installed llast-make-corpus."""
    out = tmp_path_factory.mktemp("corpus")
    proc = subprocess.run([BIN / "llast-make-corpus", "--out", out, "--preset", "tiny", "--seed", "3"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'held-out check (all must be 0): {"dev_sentences_in_train": 0' in proc.stdout
    return out


def read_manifest(path):
    """Rows of a manifest as dicts."""
    return SpeechToTextDatasetCreator._load_samples_from_tsv(str(path.parent), path.stem)


def test_manifests_readable_by_fairseq(made_corpus):
    rows = read_manifest(made_corpus / "train_fr_en.tsv")
    assert len(rows) == 40
    assert tuple(rows[0]) == MANIFEST_COLUMNS
    assert {(r["src_lang"], r["tgt_lang"]) for r in rows} == {("fr", "en")}
    assert len(read_manifest(made_corpus / "train_joint.tsv")) == 4 * 40
    assert len(read_manifest(made_corpus / "dev.tsv")) == 4 * 8
    assert len(read_manifest(made_corpus / "test_en_fr.tsv")) == 8
    config = yaml.safe_load((made_corpus / "config.yaml").read_text())
    assert config == {"audio_root": str(made_corpus), "use_audio_input": True}
    lines = (made_corpus / "text.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 * 4 * 40


def test_audio_matches_manifest(made_corpus):
    rows = read_manifest(made_corpus / "train_joint.tsv") + read_manifest(made_corpus / "dev.tsv")
    assert len({r["id"] for r in rows}) == len(rows)
    for row in rows:
        info = sf.info(str(made_corpus / row["audio"]))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert info.frames == int(row["n_frames"])
        assert 0.5 < info.duration < 15
        audio, _ = sf.read(str(made_corpus / row["audio"]))  # espeak-ng's ending silence trimmed
        loud = (abs(audio) > corpus.SILENCE_LEVEL).nonzero()[0]
        assert len(audio) - loud[-1] - 1 <= corpus.TRAILING_SILENCE * 16000


def test_utterance_is_its_sentence_spoken_and_resampled(made_corpus):
    """A wav is espeak-ng's speech of its row's sentence, with the row's voice, speed and pitch,
    resampled to 16 kHz: against the same synthesis resampled by soxr directly."""
    row = read_manifest(made_corpus / "train_de_en.tsv")[5]
    plan = {u.id: u for u in corpus.plan_corpus(G, 3, corpus.parse_directions(corpus.DEFAULT_DIRECTIONS),
                                                dict(zip(corpus.SPLITS, corpus.PRESETS["tiny"])))}
    u = plan[row["id"]]
    assert (u.src_text, u.tgt_text, u.speaker) == (row["src_text"], row["tgt_text"], row["speaker"])
    raw = subprocess.run(["espeak-ng", "-v", u.speaker, "-s", str(u.speed), "-p", str(u.pitch), "--stdout",
                          u.src_text], check=True, capture_output=True).stdout
    speech, rate = sf.read(io.BytesIO(raw), dtype="float32")
    reference = soxr.resample(speech, rate, 16000)
    audio, _ = sf.read(str(made_corpus / row["audio"]), dtype="float32")
    assert len(audio) == int(row["n_frames"]) <= len(reference)
    assert np.abs(audio - np.clip(reference[:len(audio)], -1, 1)).max() <= 2 / 32768  # PCM-16 rounding


def test_trailing_silence_is_trimmed_to_a_tenth_of_a_second():
    speech = np.full(8000, 0.5)
    speech[-100:] = 0.005  # a quiet tail below the level goes with the silence
    trimmed = corpus.trim_trailing_silence(np.concatenate([np.zeros(800), speech, np.zeros(9000)]))
    assert len(trimmed) == 800 + 8000 - 100 + 1600
    assert np.array_equal(trimmed[:8700], np.concatenate([np.zeros(800), speech[:-100]]))


def test_held_out_sentences_and_voices(made_corpus):
    train = read_manifest(made_corpus / "train_joint.tsv")
    train_texts = {corpus.normalize(r[k]) for r in train for k in ("src_text", "tgt_text")}
    train_voices = {r["speaker"].split("+")[1] for r in train}
    for split in ("dev", "test"):
        for src, tgt in corpus.parse_directions(corpus.DEFAULT_DIRECTIONS):
            for row in read_manifest(made_corpus / f"{split}_{src}_{tgt}.tsv"):
                assert corpus.normalize(row["src_text"]) not in train_texts
                assert corpus.normalize(row["tgt_text"]) not in train_texts
                assert row["speaker"].split("+")[1] not in train_voices
    stats = json.loads((made_corpus / "stats.json").read_text())
    assert set(stats["held_out"].values()) == {0}


def tiny(seed=3, directions=corpus.DEFAULT_DIRECTIONS):
    return corpus.CorpusConfig(seed, corpus.parse_directions(directions), *corpus.PRESETS["tiny"])


def test_deterministic_and_cached(made_corpus, tmp_path, capsys):
    assert corpus.build_corpus(tmp_path, str(LEXICON), tiny(), workers=1) is not None
    for manifest in sorted(made_corpus.glob("*.tsv")):
        assert manifest.read_bytes() == (tmp_path / manifest.name).read_bytes(), manifest.name
    capsys.readouterr()
    assert corpus.build_corpus(tmp_path, str(LEXICON), tiny()) is None
    assert "up to date" in capsys.readouterr().out
    sizes = {"train": 5, "dev": 2, "test": 2}
    directions = [("fr", "en")]
    assert corpus.plan_corpus(G, 1, directions, sizes) == corpus.plan_corpus(G, 1, directions, sizes)
    assert corpus.plan_corpus(G, 1, directions, sizes) != corpus.plan_corpus(G, 2, directions, sizes)


def test_interrupted_build_resumes(tmp_path):
    out = tmp_path / "c"
    assert corpus.build_corpus(out, str(LEXICON), tiny(directions="de-en")) is not None
    wav = out / "audio" / "de_en" / "de_en_train_000007.wav"
    expected, manifest = wav.read_bytes(), (out / "train_de_en.tsv").read_bytes()
    wav.unlink()
    stamp = json.loads((out / corpus.STAMP_NAME).read_text())
    (out / corpus.STAMP_NAME).write_text(json.dumps({**stamp, "complete": False}))
    assert corpus.build_corpus(out, str(LEXICON), tiny(directions="de-en")) is not None
    assert wav.read_bytes() == expected
    assert (out / "train_de_en.tsv").read_bytes() == manifest


def test_refuses_foreign_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("not a corpus")
    with pytest.raises(SystemExit, match=f"^error: {re.escape(str(tmp_path))} is not empty and has no corpus_stamp.json"):
        cli.main(["--out", str(tmp_path), "--preset", "tiny"])
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
