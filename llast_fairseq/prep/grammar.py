"""Synchronous grammar for the demo corpus: one meaning rendered in French, German, Spanish and
English.

Every sentence starts life as one abstract meaning, a :class:`Clause`. One realizer per language
(:meth:`Grammar.realize`) renders that same clause, so the four sentences are translations of each
other and each meaning has exactly one English reference. The words come from a lexicon file
(``examples/speech_translation_llm/corpus/lexicon.yaml`` for the demo, whose comments describe
each table's compact strings); this module holds the grammar, the agreement and the sampling.

Grammar (one clause per sentence, tenses present / past / future)::

    transitive    SUBJ VERB OBJ [PLACE] [TIME]      "My sister reads a new book at home."
    intransitive  SUBJ VERB PLACE [TIME]            "The dogs sleep in the garden."
    predicate     SUBJ BE ADJ                       "The red car will be expensive."
    SUBJ          pronoun | NP,   OBJ  NP (never a person or animal)
    NP            DET [ADJ] NOUN, DET one of the / a / my / two..ten

Agreement handled by the realizers: gender/number of articles, possessives, numerals and
adjectives (French and Spanish also agree predicate adjectives), French and Spanish adjective
position, French elision (l', j', mon before a vowel, vieil/nouvel), German nominative/accusative
articles and weak / mixed / strong adjective endings, German verb-second with a final participle
or infinitive, verb conjugation for person and number, Spanish pro-drop for "I"/"we", English a/an
and third person -s.

Past tense sentences always carry a past time adverb ("yesterday"): without one, e.g. Spanish
"compramos" or English "read" would be ambiguous between present and past.
"""
from dataclasses import dataclass
from typing import Optional, Union

import yaml

LANGS = ("fr", "de", "es", "en")
TENSES = ("present", "past", "future")
PERSONS = ("1s", "3s", "1p", "3p")
MIN_WORDS, MAX_WORDS = 3, 12

FRAME_WEIGHTS = {"transitive": 5, "intransitive": 3, "predicate": 2}
PRONOUN_P, ADJ_P, PLACE_P, TIME_P, PLURAL_P = 0.3, 0.35, 0.35, 0.4, 0.35
DET_WEIGHTS = {"the": 9, "a": 4, "my": 3, "numeral": 4}
PREDICATE_PRONOUNS = ("he", "she", "they")  # gender known, so predicate adjectives agree


# ----------------------------------------------------------------------------------- lexicon


@dataclass(frozen=True)
class Noun:
    """A noun: semantic class, countability and per-language (gender, sg, pl)."""

    cls: str
    mass: bool
    forms: dict  # lang -> (gender or None, singular, plural or None)


@dataclass(frozen=True)
class Adjective:
    """An adjective and the nouns (by class or id) it may describe."""

    applies: frozenset
    fr: tuple
    de: tuple
    es: tuple
    en: str


@dataclass(frozen=True)
class Verb:
    """A verb with its selectional restrictions and per-language forms."""

    subj: frozenset
    obj: Optional[frozenset]
    en: tuple
    fr: tuple
    de: tuple
    es: tuple


class LexiconError(ValueError):
    """A lexicon file that does not hold what the grammar needs."""


class _LexiconReader:
    """Reads the tables of one lexicon file, naming the file and field on bad input."""

    def __init__(self, path: str):
        self.path = path
        try:
            with open(path, encoding="utf-8") as f:
                self.data = yaml.safe_load(f)
        except (OSError, yaml.YAMLError) as e:
            raise LexiconError(f"cannot read lexicon {path}: {e}") from e
        if not isinstance(self.data, dict):
            raise LexiconError(f"{path}: expected a mapping of tables, got {type(self.data).__name__}")
        self.groups = {name: self.text(f"groups.{name}", value).split()
                       for name, value in self.table("groups").items()}

    def fail(self, where: str, what: str):
        raise LexiconError(f"{self.path}: {where}: {what}")

    def table(self, name: str, data=None) -> dict:
        value = (self.data if data is None else data).get(name.rpartition(".")[2])
        if not isinstance(value, dict) or not value:
            self.fail(name, "missing or not a non-empty mapping")
        return value

    def entry(self, where: str, entry, keys) -> dict:
        if not isinstance(entry, dict) or set(entry) != set(keys):
            self.fail(where, f"expected the keys {', '.join(keys)}; got {entry!r}")
        return entry

    def text(self, where: str, value, allow_empty=False) -> str:
        if not isinstance(value, str) or (not value.strip() and not allow_empty):
            self.fail(where, f"expected a non-empty string, got {value!r} (quote a word that YAML "
                             f"reads as another type, e.g. 'no')")
        return value

    def forms(self, where: str, value, counts) -> list:
        """Split a space-separated string; "_" becomes a space inside one form."""
        forms = [w.replace("_", " ") for w in self.text(where, value).split()]
        if len(forms) not in counts:
            self.fail(where, f"expected {' or '.join(map(str, counts))} space-separated forms, got "
                             f"{len(forms)} in {value!r}")
        return forms

    def per_lang(self, where: str, entry, langs=LANGS, allow_empty=False) -> dict:
        entry = self.entry(where, entry, langs)
        return {lang: self.text(f"{where}.{lang}", entry[lang], allow_empty) for lang in langs}

    def classes(self, where: str, value) -> frozenset:
        """Class names / noun ids; a name of the ``groups`` table stands for its classes."""
        names = set()
        for word in self.text(where, value).split():
            names.update(self.groups.get(word, [word]))
        return frozenset(names)

    def nouns(self) -> dict:
        nouns = {}
        for noun_id, entry in self.table("nouns").items():
            where = f"nouns.{noun_id}"
            entry = self.entry(where, entry, ("class",) + LANGS)
            en = self.forms(f"{where}.en", entry["en"], (1, 2))
            mass = len(en) == 1
            forms = {"en": (None, en[0], None if mass else en[1])}
            for lang in ("fr", "de", "es"):
                f = self.forms(f"{where}.{lang}", entry[lang], (2,) if mass else (3,))
                if f[0] not in ("m", "f", "n") or (f[0] == "n" and lang != "de"):
                    self.fail(f"{where}.{lang}", f"gender {f[0]!r} is not m, f (or n in German)")
                forms[lang] = (f[0], f[1], None if mass else f[2])
            nouns[noun_id] = Noun(self.text(f"{where}.class", entry["class"]), mass, forms)
        return nouns

    def adjectives(self) -> dict:
        adjectives = {}
        for adj_id, entry in self.table("adjectives").items():
            where = f"adjectives.{adj_id}"
            entry = self.entry(where, entry, ("applies",) + LANGS)
            fr = self.forms(f"{where}.fr", entry["fr"], (5, 6))
            if fr[0] not in ("pre", "post"):
                self.fail(f"{where}.fr", f"position {fr[0]!r} is not pre or post")
            adjectives[adj_id] = Adjective(
                self.classes(f"{where}.applies", entry["applies"]), tuple(fr),
                tuple(self.forms(f"{where}.de", entry["de"], (1, 2))),
                tuple(self.forms(f"{where}.es", entry["es"], (4,))), self.text(f"{where}.en", entry["en"]))
        return adjectives

    def verbs(self) -> dict:
        verbs = {}
        for verb_id, entry in self.table("verbs").items():
            where = f"verbs.{verb_id}"
            entry = self.entry(where, entry, ("subj", "obj") + LANGS)
            de = self.forms(f"{where}.de", entry["de"], (4, 5))
            if len(de) == 4:
                de.append("haben")
            elif de[4] not in ("haben", "sein"):
                self.fail(f"{where}.de", f"auxiliary {de[4]!r} is not haben or sein")
            obj = None if entry["obj"] is None else self.classes(f"{where}.obj", entry["obj"])
            verbs[verb_id] = Verb(
                self.classes(f"{where}.subj", entry["subj"]), obj,
                tuple(self.forms(f"{where}.en", entry["en"], (3,))),
                tuple(self.forms(f"{where}.fr", entry["fr"], (6,))), tuple(de),
                tuple(self.forms(f"{where}.es", entry["es"], (9,))))
        return verbs

    def aux(self) -> dict:
        table = self.entry("aux", self.table("aux"), tuple(_AUX_TENSES))
        aux = {}
        for name, tenses in _AUX_TENSES.items():
            if tenses is None:
                aux[name] = self.forms(f"aux.{name}", table[name], (4,))
            else:
                entry = self.entry(f"aux.{name}", table[name], tenses)
                aux[name] = {t: self.forms(f"aux.{name}.{t}", entry[t], (4,)) for t in tenses}
        return aux

    def pronouns(self) -> dict:
        pronouns = {}
        for pronoun, entry in self.table("pronouns").items():
            where = f"pronouns.{pronoun}"
            entry = self.entry(where, entry, ("person", "gender") + LANGS)
            if entry["person"] not in PERSONS or entry["gender"] not in ("m", "f"):
                self.fail(where, f"person must be one of {', '.join(PERSONS)} and gender m or f")
            words = self.per_lang(where, {lang: entry[lang] for lang in LANGS}, allow_empty=True)
            pronouns[str(pronoun)] = (entry["person"], entry["gender"], words)
        missing = set(PREDICATE_PRONOUNS) - set(pronouns)
        if missing:
            self.fail("pronouns", f"missing {sorted(missing)} (predicate sentences use them)")
        return pronouns

    def word_lists(self, name: str, langs, count: int) -> dict:
        table = self.per_lang(name, self.table(name), langs)
        return {lang: self.forms(f"{name}.{lang}", table[lang], (count,)) for lang in langs}

    def phrases(self, name: str, data=None) -> dict:
        return {key: self.per_lang(f"{name}.{key}", entry) for key, entry in self.table(name, data).items()}

    def times(self) -> dict:
        table = self.entry("times", self.table("times"), TENSES)
        return {tense: self.phrases(f"times.{tense}", table) for tense in TENSES}


# the auxiliaries (and copulas) the realizers conjugate: their tenses, or None for one list
_AUX_TENSES = {"en_be": ("present", "past"), "fr_avoir": None, "fr_etre": TENSES, "de_haben": None,
               "de_sein": ("present", "past"), "de_werden": None, "es_ser": TENSES}


class Grammar:
    """The grammar over one lexicon file: realizers, validation, sampling and counting."""

    def __init__(self, lexicon_path: str):
        r = _LexiconReader(lexicon_path)
        self.nouns = r.nouns()
        self.adjectives = r.adjectives()
        self.verbs = r.verbs()
        self.aux = r.aux()  # indexed like PERSONS (1s 3s 1p 3p)
        self.future_endings = r.word_lists("future_endings", ("fr", "es"), 4)
        self.pronouns = r.pronouns()  # {pronoun: (person, gender, {lang: word})}
        self.numerals = r.word_lists("numerals", LANGS, 9)  # two..ten
        self.places = r.phrases("places")
        self.times = r.times()  # {tense: {time: {lang: phrase}}}
        known = set(self.nouns) | {noun.cls for noun in self.nouns.values()}
        for where, spec in [(f"adjectives.{a}.applies", adj.applies) for a, adj in self.adjectives.items()] + \
                [(f"verbs.{v}.{k}", s) for v, verb in self.verbs.items()
                 for k, s in (("subj", verb.subj), ("obj", verb.obj)) if s is not None]:
            if spec - known:
                r.fail(where, f"{sorted(spec - known)} is neither a noun, a noun class nor a group")

    # ---------------------------------------------------------------------------- meanings

    def matches(self, noun_id, spec):
        """True if a noun is selected by a set of class names / noun ids."""
        return noun_id in spec or self.nouns[noun_id].cls in spec

    def validate(self, clause):
        """Raise ValueError if a clause breaks the grammar's agreement-independent constraints."""
        nps = [clause.subject] if isinstance(clause.subject, NP) else []
        if clause.subject not in self.pronouns and not nps:
            raise ValueError(f"unknown subject {clause.subject!r}")
        if clause.obj is not None:
            nps.append(clause.obj)
        for np in nps:
            if np.det.isdigit():
                if np.number != "pl" or not 2 <= int(np.det) <= 10:
                    raise ValueError(f"numeral {np.det!r} needs a plural noun and 2..10")
            elif np.det not in ("the", "a", "my") or (np.det == "a" and np.number != "sg"):
                raise ValueError(f"bad determiner {np.det!r} for number {np.number!r}")
            if self.nouns[np.noun].mass and (np.number == "pl" or np.det not in ("the", "my")):
                raise ValueError(f"mass noun {np.noun!r} needs the/my and singular")
            if np.adj is not None and not self.matches(np.noun, self.adjectives[np.adj].applies):
                raise ValueError(f"adjective {np.adj!r} does not describe {np.noun!r}")
        if clause.tense not in TENSES:
            raise ValueError(f"unknown tense {clause.tense!r}")
        if clause.tense == "past" and clause.verb != "be" and clause.time is None:
            raise ValueError("past tense needs a time adverb")
        if clause.time is not None and clause.time not in self.times[clause.tense]:
            raise ValueError(f"time {clause.time!r} does not fit tense {clause.tense!r}")
        if clause.verb == "be":
            if clause.adj is None or clause.obj is not None:
                raise ValueError("predicate clause needs an adjective and no object")
            return
        verb = self.verbs[clause.verb]
        if (verb.obj is None) != (clause.obj is None):
            raise ValueError(f"verb {clause.verb!r} object mismatch")
        if verb.obj is None and clause.place is None:
            raise ValueError(f"intransitive verb {clause.verb!r} needs a place")
        if clause.obj is not None and not self.matches(clause.obj.noun, verb.obj):
            raise ValueError(f"{clause.verb!r} cannot take {clause.obj.noun!r}")

    # --------------------------------------------------------------------------- realizers

    def realize(self, clause, lang):
        """Render a clause as a capitalized sentence with a final period."""
        self.validate(clause)
        text = " ".join(self._realize_words(clause, lang))
        if lang == "fr":
            text = _elide_fr(text)
        return text[0].upper() + text[1:] + "."

    def realize_all(self, clause):
        """The clause in every language: {lang: sentence}."""
        return {lang: self.realize(clause, lang) for lang in LANGS}

    def _subject_features(self, subject, lang):
        """(person, gender, number) of a subject in one language (gender differs per language)."""
        if isinstance(subject, NP):
            gender = self.nouns[subject.noun].forms[lang][0]
            return ("3s" if subject.number == "sg" else "3p"), gender, subject.number
        person, gender, _ = self.pronouns[subject]
        return person, gender, ("sg" if person.endswith("s") else "pl")

    def _np_en(self, np):
        """English NP: det + adj + noun, a/an by the next word."""
        noun = self.nouns[np.noun].forms["en"]
        words = [noun[1] if np.number == "sg" else noun[2]]
        if np.adj:
            words.insert(0, self.adjectives[np.adj].en)
        if np.det == "a":
            det = "an" if words[0][0] in "aeiou" else "a"
        else:
            det = self.numerals["en"][int(np.det) - 2] if np.det.isdigit() else np.det
        return [det] + words

    def _np_fr(self, np):
        """French NP with article/possessive agreement, adjective position and elision."""
        gender, sg, pl = self.nouns[np.noun].forms["fr"]
        noun = sg if np.number == "sg" else pl
        pre, post = [], []
        if np.adj:
            adj = self.adjectives[np.adj].fr
            form = _agree(adj[1:5], gender, np.number)
            if len(adj) > 5 and gender == "m" and np.number == "sg" and _starts_with_vowel(noun):
                form = adj[5]
            (pre if adj[0] == "pre" else post).append(form)
        following = (pre + [noun])[0]
        if np.det.isdigit():
            det = self.numerals["fr"][int(np.det) - 2]
        elif np.number == "pl":
            det = {"the": "les", "my": "mes"}[np.det]
        elif np.det == "my":
            det = "mon" if gender == "m" or _starts_with_vowel(following) else "ma"
        else:
            det = {"the": "le", "a": "un"}[np.det] if gender == "m" else {"the": "la", "a": "une"}[np.det]
        words = [det] + pre + [noun] + post
        if det in ("le", "la") and _starts_with_vowel(following):
            words = ["l'" + following] + words[2:]
        return words

    def _np_de(self, np, case):
        """German NP in nominative or accusative with weak/mixed/strong adjective endings."""
        gender, sg, pl = self.nouns[np.noun].forms["de"]
        slot = 3 if np.number == "pl" else "mfn".index(gender)
        if np.det.isdigit():
            det, ending = self.numerals["de"][int(np.det) - 2], "e"  # strong plural
        else:
            det = _DE_ARTICLES[(np.det, case)].split()[slot]
            ending = _DE_ENDINGS[("weak" if np.det == "the" else "mixed", case)].split()[slot]
        words = [det, sg if np.number == "sg" else pl]
        if np.adj:
            words.insert(1, self.adjectives[np.adj].de[-1] + ending)
        return words

    def _np_es(self, np):
        """Spanish NP: article/possessive + noun + agreeing adjective."""
        gender, sg, pl = self.nouns[np.noun].forms["es"]
        if np.det.isdigit():
            det = self.numerals["es"][int(np.det) - 2]
        elif np.det == "my":
            det = "mi" if np.number == "sg" else "mis"
        else:
            table = {"the": ("el", "la", "los", "las"), "a": ("un", "una", None, None)}[np.det]
            det = _agree(table, gender, np.number)
        words = [det, sg if np.number == "sg" else pl]
        if np.adj:
            words.append(_agree(self.adjectives[np.adj].es, gender, np.number))
        return words

    def _np_words(self, np, lang, case):
        """Words of an NP in one language (case matters only for German)."""
        if lang == "de":
            return self._np_de(np, case)
        return {"en": self._np_en, "fr": self._np_fr, "es": self._np_es}[lang](np)

    def _subject_words(self, subject, lang):
        """Words of the subject (empty for a dropped Spanish pronoun)."""
        if isinstance(subject, NP):
            return self._np_words(subject, lang, "nom")
        word = self.pronouns[subject][2][lang]
        return [word] if word else []

    def _verb_en(self, clause, person):
        """English verb group (copula included)."""
        if clause.verb == "be":
            if clause.tense == "future":
                return ["will", "be"]
            return [self.aux["en_be"][clause.tense][PERSONS.index(person)]]
        base, third, past = self.verbs[clause.verb].en
        return {"present": [third if person == "3s" else base], "past": [past],
                "future": ["will", base]}[clause.tense]

    def _verb_fr(self, clause, person):
        """French verb group: present, passé composé (avoir) or simple future."""
        i = PERSONS.index(person)
        if clause.verb == "be":
            return [self.aux["fr_etre"][clause.tense][i]]
        forms = self.verbs[clause.verb].fr
        return {"present": [forms[i]], "past": [self.aux["fr_avoir"][i], forms[5]],
                "future": [forms[4] + self.future_endings["fr"][i]]}[clause.tense]

    def _verb_es(self, clause, person):
        """Spanish verb: present, preterite or simple future."""
        i = PERSONS.index(person)
        if clause.verb == "be":
            return [self.aux["es_ser"][clause.tense][i]]
        forms = self.verbs[clause.verb].es
        return {"present": [forms[i]], "past": [forms[4 + i]],
                "future": [forms[8] + self.future_endings["es"][i]]}[clause.tense]

    def _verb_de(self, clause, person):
        """German (finite verb, clause-final non-finite part or None)."""
        i = PERSONS.index(person)
        if clause.verb == "be":
            if clause.tense == "future":
                return self.aux["de_werden"][i], "sein"
            return self.aux["de_sein"][clause.tense][i], None
        first, third, plural, participle, aux = self.verbs[clause.verb].de
        if clause.tense == "present":
            return (first, third, plural, plural)[i], None
        if clause.tense == "future":
            return self.aux["de_werden"][i], plural
        finite = self.aux["de_haben"][i] if aux == "haben" else self.aux["de_sein"]["present"][i]
        return finite, participle

    def _realize_words(self, clause, lang):
        """The words of a clause in one language, before punctuation."""
        person, gender, number = self._subject_features(clause.subject, lang)
        subject = self._subject_words(clause.subject, lang)
        place = [self.places[clause.place][lang]] if clause.place else []
        time = [self.times[clause.tense][clause.time][lang]] if clause.time else []
        if clause.verb == "be":
            adj = self.adjectives[clause.adj]
            if lang == "de":
                finite, rest = self._verb_de(clause, person)
                return subject + [finite, adj.de[0]] + ([rest] if rest else [])
            if lang == "en":
                return subject + self._verb_en(clause, person) + [adj.en]
            forms = adj.fr[1:5] if lang == "fr" else adj.es
            verb = self._verb_fr(clause, person) if lang == "fr" else self._verb_es(clause, person)
            return subject + verb + [_agree(forms, gender, number)]
        obj = self._np_words(clause.obj, lang, "acc") if clause.obj else []
        if lang == "de":
            finite, rest = self._verb_de(clause, person)
            return subject + [finite] + time + obj + place + ([rest] if rest else [])
        verb = {"en": self._verb_en, "fr": self._verb_fr, "es": self._verb_es}[lang](clause, person)
        return subject + verb + obj + place + time

    # ---------------------------------------------------------------- sampling and counting

    def nouns_for(self, spec):
        """Sorted noun ids selected by a set of classes / ids."""
        return sorted(n for n in self.nouns if self.matches(n, spec))

    def adjectives_for(self, noun_id):
        """Sorted adjective ids that may describe a noun."""
        return sorted(a for a, adj in self.adjectives.items() if self.matches(noun_id, adj.applies))

    def sample_np(self, rng, spec, with_adj=True):
        """A random NP whose noun is selected by spec."""
        noun = rng.choice(self.nouns_for(spec))
        if self.nouns[noun].mass:
            det, number = rng.choice(("the", "my")), "sg"
        else:
            det = rng.choices(list(DET_WEIGHTS), weights=list(DET_WEIGHTS.values()))[0]
            if det == "numeral":
                det, number = str(rng.randint(2, 10)), "pl"
            else:
                number = "pl" if det != "a" and rng.random() < PLURAL_P else "sg"
        adjs = self.adjectives_for(noun)
        adj = rng.choice(adjs) if with_adj and adjs and rng.random() < ADJ_P else None
        return NP(noun, det, number, adj)

    def _sample_frame(self, rng, frame, tense):
        """One clause of the given frame, without the sentence-length check."""
        if frame == "predicate":
            if rng.random() < PRONOUN_P / 2:
                return Clause(rng.choice(PREDICATE_PRONOUNS), "be", tense,
                              adj=rng.choice(self.adjectives_for("man")))
            subject = self.sample_np(rng, set(self.nouns), with_adj=False)
            return Clause(subject, "be", tense, adj=rng.choice(self.adjectives_for(subject.noun)))
        transitive = frame == "transitive"
        verb_id = rng.choice(sorted(v for v, verb in self.verbs.items() if (verb.obj is not None) == transitive))
        verb = self.verbs[verb_id]
        if "person" in verb.subj and rng.random() < PRONOUN_P:
            subject = rng.choice(sorted(self.pronouns))
        else:
            subject = self.sample_np(rng, verb.subj)
        obj = self.sample_np(rng, verb.obj) if transitive else None
        place = rng.choice(sorted(self.places)) if not transitive or rng.random() < PLACE_P else None
        time = rng.choice(sorted(self.times[tense])) if tense == "past" or rng.random() < TIME_P else None
        return Clause(subject, verb_id, tense, obj=obj, place=place, time=time)

    def sample_clause(self, rng):
        """A random clause whose sentences have MIN_WORDS..MAX_WORDS words in every language."""
        while True:
            frame = rng.choices(list(FRAME_WEIGHTS), weights=list(FRAME_WEIGHTS.values()))[0]
            clause = self._sample_frame(rng, frame, rng.choice(TENSES))
            if all(MIN_WORDS <= len(s.split()) <= MAX_WORDS for s in self.realize_all(clause).values()):
                return clause

    def _count_nps(self, spec, with_adj=True):
        """Number of distinct NPs over nouns selected by spec."""
        total = 0
        for noun in self.nouns_for(spec):
            dets = 2 if self.nouns[noun].mass else 2 + 1 + 2 + 9  # the sg/pl, a, my sg/pl, two..ten
            total += dets * (1 + len(self.adjectives_for(noun)) if with_adj else 1)
        return total

    def count_meanings(self):
        """Distinct clauses the sampler can draw, per frame, before the sentence-length filter."""
        adverbials = {"transitive": 0, "intransitive": 0}
        for tense in TENSES:
            times = len(self.times[tense]) + (tense != "past")  # past always has a time adverb
            adverbials["transitive"] += (len(self.places) + 1) * times
            adverbials["intransitive"] += len(self.places) * times
        counts = {"transitive": 0, "intransitive": 0}
        for verb in self.verbs.values():
            frame = "intransitive" if verb.obj is None else "transitive"
            subjects = self._count_nps(verb.subj) + (len(self.pronouns) if "person" in verb.subj else 0)
            objects = 1 if verb.obj is None else self._count_nps(verb.obj)
            counts[frame] += subjects * objects * adverbials[frame]
        predicate = len(PREDICATE_PRONOUNS) * len(self.adjectives_for("man"))
        for noun in self.nouns:
            predicate += self._count_nps({noun}, with_adj=False) * len(self.adjectives_for(noun))
        counts["predicate"] = predicate * len(TENSES)
        return counts


# ------------------------------------------------------------------------------- meanings


@dataclass(frozen=True)
class NP:
    """Noun phrase meaning. det: "the", "a", "my" or a numeral 2..10 as a string."""

    noun: str
    det: str
    number: str = "sg"
    adj: Optional[str] = None


@dataclass(frozen=True)
class Clause:
    """Sentence meaning. verb "be" + adj is the predicate frame; subject is NP or a pronoun."""

    subject: Union[NP, str]
    verb: str
    tense: str = "present"
    obj: Optional[NP] = None
    adj: Optional[str] = None
    place: Optional[str] = None
    time: Optional[str] = None


# ------------------------------------------------------------------- language-wide rules


_DE_ARTICLES = {  # (det, case) -> m f n pl
    ("the", "nom"): "der die das die", ("the", "acc"): "den die das die",
    ("a", "nom"): "ein eine ein -", ("a", "acc"): "einen eine ein -",
    ("my", "nom"): "mein meine mein meine", ("my", "acc"): "meinen meine mein meine",
}
_DE_ENDINGS = {  # adjective endings: weak after der, mixed after ein/mein -> m f n pl
    ("weak", "nom"): "e e e en", ("weak", "acc"): "en e e en",
    ("mixed", "nom"): "er e es en", ("mixed", "acc"): "en e es en",
}


def _agree(forms4, gender, number):
    """Pick the ms/fs/mp/fp form from a French or Spanish 4-form list."""
    return forms4[(0 if gender != "f" else 1) + (0 if number == "sg" else 2)]


def _starts_with_vowel(word):
    """Vowel-initial for elision; every h-word in the demo's lexicon has a mute h."""
    return word[:1].lower() in "aeiouyhàâéèêëîïôœû"


def _elide_fr(text):
    """French subject clitic elision: je + vowel -> j' (articles elide in _np_fr)."""
    out = []
    for word in text.split(" "):
        if out and out[-1] == "je" and _starts_with_vowel(word):
            out[-1] = "j'" + word
        else:
            out.append(word)
    return " ".join(out)
