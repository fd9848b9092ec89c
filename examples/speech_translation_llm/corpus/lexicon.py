"""Synchronous grammar and lexicon for a small French/German/Spanish/English corpus.

Every sentence starts life as one abstract meaning, a :class:`Clause`.  One
realizer per language (:func:`realize`) renders that same clause, so the four
sentences are translations of each other and each meaning has exactly one
English reference.

Grammar (one clause per sentence, tenses present / past / future)::

    transitive    SUBJ VERB OBJ [PLACE] [TIME]      "My sister reads a new book at home."
    intransitive  SUBJ VERB PLACE [TIME]            "The dogs sleep in the garden."
    predicate     SUBJ BE ADJ                       "The red car will be expensive."
    SUBJ          pronoun | NP,   OBJ  NP (never a person or animal)
    NP            DET [ADJ] NOUN, DET one of the / a / my / two..ten

Agreement handled by the realizers: gender/number of articles, possessives,
numerals and adjectives (French and Spanish also agree predicate adjectives),
French and Spanish adjective position, French elision (l', j', mon before a
vowel, vieil/nouvel), German nominative/accusative articles and weak / mixed /
strong adjective endings, German verb-second with a final participle or
infinitive, verb conjugation for person and number, Spanish pro-drop for
"I"/"we", English a/an and third person -s.

Past tense sentences always carry a past time adverb ("yesterday"): without
one, e.g. Spanish "compramos" or English "read" would be ambiguous between
present and past.  Words are stored as space-separated strings; "_" stands for
a space inside one form ("look_for").
"""

from dataclasses import dataclass
from typing import Optional, Union

LANGS = ("fr", "de", "es", "en")
TENSES = ("present", "past", "future")
PERSONS = ("1s", "3s", "1p", "3p")
MIN_WORDS, MAX_WORDS = 3, 12


def _forms(text):
    """Split a space-separated lexicon string; "_" becomes a space inside a form."""
    return [w.replace("_", " ") for w in text.split()]


# ---------------------------------------------------------------------------
# Nouns: class, then per language "gender singular plural" (English: "sg pl").
# Mass nouns have no plural and take only "the"/"my".
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Noun:
    """A noun: semantic class, countability and per-language (gender, sg, pl)."""

    cls: str
    mass: bool
    forms: dict  # lang -> (gender or None, singular, plural or None)


def _noun(cls, en, fr, de, es):
    """Build a Noun from compact strings; a one-word English entry marks a mass noun."""
    en_f = _forms(en)
    mass = len(en_f) == 1
    forms = {"en": (None, en_f[0], None if mass else en_f[1])}
    for lang, text in (("fr", fr), ("de", de), ("es", es)):
        f = _forms(text)
        forms[lang] = (f[0], f[1], None if mass else f[2])
    return Noun(cls, mass, forms)


NOUNS = {
    # people
    "man": _noun("person", "man men", "m homme hommes", "m Mann Männer", "m hombre hombres"),
    "woman": _noun("person", "woman women", "f femme femmes", "f Frau Frauen", "f mujer mujeres"),
    "boy": _noun("person", "boy boys", "m garçon garçons", "m Junge Jungen", "m chico chicos"),
    "girl": _noun("person", "girl girls", "f fille filles", "n Mädchen Mädchen", "f chica chicas"),
    "child": _noun("person", "child children", "m enfant enfants", "n Kind Kinder", "m niño niños"),
    "teacher": _noun("person", "teacher teachers", "m professeur professeurs", "m Lehrer Lehrer",
                     "m profesor profesores"),
    "doctor": _noun("person", "doctor doctors", "m médecin médecins", "m Arzt Ärzte", "m médico médicos"),
    "student": _noun("person", "student students", "m étudiant étudiants", "m Student Studenten",
                     "m estudiante estudiantes"),
    "brother": _noun("person", "brother brothers", "m frère frères", "m Bruder Brüder", "m hermano hermanos"),
    "sister": _noun("person", "sister sisters", "f sœur sœurs", "f Schwester Schwestern", "f hermana hermanas"),
    "mother": _noun("person", "mother mothers", "f mère mères", "f Mutter Mütter", "f madre madres"),
    "father": _noun("person", "father fathers", "m père pères", "m Vater Väter", "m padre padres"),
    "neighbor": _noun("person", "neighbor neighbors", "m voisin voisins", "m Nachbar Nachbarn",
                      "m vecino vecinos"),
    "baker": _noun("person", "baker bakers", "m boulanger boulangers", "m Bäcker Bäcker",
                   "m panadero panaderos"),
    "grandmother": _noun("person", "grandmother grandmothers", "f grand-mère grands-mères",
                         "f Großmutter Großmütter", "f abuela abuelas"),
    "grandfather": _noun("person", "grandfather grandfathers", "m grand-père grands-pères",
                         "m Großvater Großväter", "m abuelo abuelos"),
    "friend": _noun("person", "friend friends", "m ami amis", "m Freund Freunde", "m amigo amigos"),
    # animals
    "dog": _noun("animal", "dog dogs", "m chien chiens", "m Hund Hunde", "m perro perros"),
    "cat": _noun("animal", "cat cats", "m chat chats", "f Katze Katzen", "m gato gatos"),
    "horse": _noun("animal", "horse horses", "m cheval chevaux", "n Pferd Pferde", "m caballo caballos"),
    "bird": _noun("animal", "bird birds", "m oiseau oiseaux", "m Vogel Vögel", "m pájaro pájaros"),
    "cow": _noun("animal", "cow cows", "f vache vaches", "f Kuh Kühe", "f vaca vacas"),
    "mouse": _noun("animal", "mouse mice", "f souris souris", "f Maus Mäuse", "m ratón ratones"),
    # food and drink
    "apple": _noun("food", "apple apples", "f pomme pommes", "m Apfel Äpfel", "f manzana manzanas"),
    "bread": _noun("food", "bread", "m pain", "n Brot", "m pan"),
    "cake": _noun("food", "cake cakes", "m gâteau gâteaux", "m Kuchen Kuchen", "m pastel pasteles"),
    "soup": _noun("food", "soup", "f soupe", "f Suppe", "f sopa"),
    "cheese": _noun("food", "cheese", "m fromage", "m Käse", "m queso"),
    "egg": _noun("food", "egg eggs", "m œuf œufs", "n Ei Eier", "m huevo huevos"),
    "orange": _noun("food", "orange oranges", "f orange oranges", "f Orange Orangen", "f naranja naranjas"),
    "banana": _noun("food", "banana bananas", "f banane bananes", "f Banane Bananen", "m plátano plátanos"),
    "tomato": _noun("food", "tomato tomatoes", "f tomate tomates", "f Tomate Tomaten", "m tomate tomates"),
    "fish": _noun("food", "fish", "m poisson", "m Fisch", "m pescado"),
    "milk": _noun("drink", "milk", "m lait", "f Milch", "f leche"),
    "coffee": _noun("drink", "coffee", "m café", "m Kaffee", "m café"),
    "tea": _noun("drink", "tea", "m thé", "m Tee", "m té"),
    "juice": _noun("drink", "juice", "m jus", "m Saft", "m zumo"),
    # things
    "book": _noun("text", "book books", "m livre livres", "n Buch Bücher", "m libro libros"),
    "letter": _noun("text", "letter letters", "f lettre lettres", "m Brief Briefe", "f carta cartas"),
    "newspaper": _noun("text", "newspaper newspapers", "m journal journaux", "f Zeitung Zeitungen",
                       "m periódico periódicos"),
    "cup": _noun("vessel", "cup cups", "f tasse tasses", "f Tasse Tassen", "f taza tazas"),
    "glass": _noun("vessel", "glass glasses", "m verre verres", "n Glas Gläser", "m vaso vasos"),
    "bottle": _noun("vessel", "bottle bottles", "f bouteille bouteilles", "f Flasche Flaschen",
                    "f botella botellas"),
    "chair": _noun("furniture", "chair chairs", "f chaise chaises", "m Stuhl Stühle", "f silla sillas"),
    "table": _noun("furniture", "table tables", "f table tables", "m Tisch Tische", "f mesa mesas"),
    "door": _noun("opening", "door doors", "f porte portes", "f Tür Türen", "f puerta puertas"),
    "window": _noun("opening", "window windows", "f fenêtre fenêtres", "n Fenster Fenster",
                    "f ventana ventanas"),
    "box": _noun("container", "box boxes", "f boîte boîtes", "f Kiste Kisten", "f caja cajas"),
    "bag": _noun("container", "bag bags", "m sac sacs", "f Tasche Taschen", "f bolsa bolsas"),
    "key": _noun("item", "key keys", "f clé clés", "m Schlüssel Schlüssel", "f llave llaves"),
    "ball": _noun("item", "ball balls", "m ballon ballons", "m Ball Bälle", "f pelota pelotas"),
    "hat": _noun("item", "hat hats", "m chapeau chapeaux", "m Hut Hüte", "m sombrero sombreros"),
    "shirt": _noun("item", "shirt shirts", "f chemise chemises", "n Hemd Hemden", "f camisa camisas"),
    "shoe": _noun("item", "shoe shoes", "f chaussure chaussures", "m Schuh Schuhe", "m zapato zapatos"),
    "phone": _noun("item", "phone phones", "m téléphone téléphones", "n Telefon Telefone",
                   "m teléfono teléfonos"),
    "pen": _noun("item", "pen pens", "m stylo stylos", "m Stift Stifte", "m bolígrafo bolígrafos"),
    "umbrella": _noun("item", "umbrella umbrellas", "m parapluie parapluies", "m Regenschirm Regenschirme",
                      "m paraguas paraguas"),
    "flower": _noun("plant", "flower flowers", "f fleur fleurs", "f Blume Blumen", "f flor flores"),
    "tree": _noun("plant", "tree trees", "m arbre arbres", "m Baum Bäume", "m árbol árboles"),
    "car": _noun("vehicle", "car cars", "f voiture voitures", "n Auto Autos", "m coche coches"),
    "bicycle": _noun("vehicle", "bicycle bicycles", "m vélo vélos", "n Fahrrad Fahrräder",
                     "f bicicleta bicicletas"),
    "house": _noun("building", "house houses", "f maison maisons", "n Haus Häuser", "f casa casas"),
    "picture": _noun("picture", "picture pictures", "m tableau tableaux", "n Bild Bilder", "m cuadro cuadros"),
}

# ---------------------------------------------------------------------------
# Adjectives: the noun classes / nouns they describe, then per language:
#   fr "pre|post ms fs mp fp [masculine singular form before a vowel]"
#   de "predicative [inflection stem]", es "ms fs mp fp", en "form".
# ---------------------------------------------------------------------------

SOLID = "animal food text vessel furniture opening container item plant vehicle building picture"
OBJECTS = "vessel furniture opening container item vehicle building"


@dataclass(frozen=True)
class Adjective:
    """An adjective and the nouns (by class or id) it may describe."""

    applies: frozenset
    fr: tuple
    de: tuple
    es: tuple
    en: str


def _adj(applies, en, fr, de, es):
    """Build an Adjective from compact strings."""
    return Adjective(frozenset(applies.split()), tuple(_forms(fr)), tuple(_forms(de)),
                     tuple(_forms(es)), en)


ADJECTIVES = {
    "big": _adj(SOLID, "big", "pre grand grande grands grandes", "groß", "grande grande grandes grandes"),
    "small": _adj("person " + SOLID, "small", "pre petit petite petits petites", "klein",
                  "pequeño pequeña pequeños pequeñas"),
    "old": _adj("person animal text picture plant " + OBJECTS, "old", "pre vieux vieille vieux vieilles vieil",
                "alt", "viejo vieja viejos viejas"),
    "young": _adj("person animal", "young", "pre jeune jeune jeunes jeunes", "jung",
                  "joven joven jóvenes jóvenes"),
    "new": _adj("text picture " + OBJECTS, "new", "pre nouveau nouvelle nouveaux nouvelles nouvel", "neu",
                "nuevo nueva nuevos nuevas"),
    "good": _adj("food drink text", "good", "pre bon bonne bons bonnes", "gut",
                 "bueno buena buenos buenas"),
    "pretty": _adj("person animal plant picture " + OBJECTS, "pretty", "pre joli jolie jolis jolies", "hübsch",
                   "bonito bonita bonitos bonitas"),
    "red": _adj("plant apple tomato " + OBJECTS, "red", "post rouge rouge rouges rouges", "rot",
                "rojo roja rojos rojas"),
    "green": _adj("plant apple tomato " + OBJECTS, "green", "post vert verte verts vertes", "grün",
                  "verde verde verdes verdes"),
    "blue": _adj("flower " + OBJECTS, "blue", "post bleu bleue bleus bleues", "blau", "azul azul azules azules"),
    "black": _adj("animal " + OBJECTS, "black", "post noir noire noirs noires", "schwarz",
                  "negro negra negros negras"),
    "white": _adj("animal flower " + OBJECTS, "white", "post blanc blanche blancs blanches", "weiß",
                  "blanco blanca blancos blancas"),
    "expensive": _adj("food drink text picture " + OBJECTS, "expensive", "post cher chère chers chères",
                      "teuer teur", "caro cara caros caras"),
    "heavy": _adj("text furniture container vessel", "heavy", "post lourd lourde lourds lourdes", "schwer",
                  "pesado pesada pesados pesadas"),
    "fast": _adj("animal vehicle", "fast", "post rapide rapide rapides rapides", "schnell",
                 "rápido rápida rápidos rápidas"),
    "cold": _adj("drink soup fish", "cold", "post froid froide froids froides", "kalt", "frío fría fríos frías"),
    "hot": _adj("soup coffee tea milk", "hot", "post chaud chaude chauds chaudes", "heiß",
                "caliente caliente calientes calientes"),
}

# ---------------------------------------------------------------------------
# Verbs: subject classes, object classes / nouns (None = intransitive), then
#   en "base 3s past"
#   fr "1s 3s 1p 3p future-stem participle"          (auxiliary avoir)
#   de "1s 3s 1p/infinitive participle [haben|sein]"
#   es "1s 3s 1p 3p preterite-1s 3s 1p 3p future-stem"
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Verb:
    """A verb with its selectional restrictions and per-language forms."""

    subj: frozenset
    obj: Optional[frozenset]
    en: tuple
    fr: tuple
    de: tuple
    es: tuple


def _verb(subj, obj, en, fr, de, es):
    """Build a Verb from compact strings; obj=None makes it intransitive (needs a place)."""
    de_f = _forms(de)
    if len(de_f) == 4:
        de_f.append("haben")
    return Verb(frozenset(subj.split()), None if obj is None else frozenset(obj.split()),
                tuple(_forms(en)), tuple(_forms(fr)), tuple(de_f), tuple(_forms(es)))


PEOPLE, ANIMATE = "person", "person animal"
PORTABLE = "text vessel container item"

VERBS = {
    "eat": _verb(PEOPLE, "food", "eat eats ate", "mange mange mangeons mangent manger mangé",
                 "esse isst essen gegessen", "como come comemos comen comí comió comimos comieron comer"),
    "drink": _verb(PEOPLE, "drink", "drink drinks drank", "bois boit buvons boivent boir bu",
                   "trinke trinkt trinken getrunken",
                   "bebo bebe bebemos beben bebí bebió bebimos bebieron beber"),
    "buy": _verb(PEOPLE, "food drink text picture plant " + OBJECTS, "buy buys bought",
                 "achète achète achetons achètent achèter acheté", "kaufe kauft kaufen gekauft",
                 "compro compra compramos compran compré compró compramos compraron comprar"),
    "sell": _verb(PEOPLE, "food text picture " + OBJECTS, "sell sells sold",
                  "vends vend vendons vendent vendr vendu", "verkaufe verkauft verkaufen verkauft",
                  "vendo vende vendemos venden vendí vendió vendimos vendieron vender"),
    "see": _verb(ANIMATE, SOLID.replace("animal ", ""), "see sees saw", "vois voit voyons voient verr vu",
                 "sehe sieht sehen gesehen", "veo ve vemos ven vi vio vimos vieron ver"),
    "read": _verb(PEOPLE, "text", "read reads read", "lis lit lisons lisent lir lu",
                  "lese liest lesen gelesen", "leo lee leemos leen leí leyó leímos leyeron leer"),
    "write": _verb(PEOPLE, "letter book", "write writes wrote", "écris écrit écrivons écrivent écrir écrit",
                   "schreibe schreibt schreiben geschrieben",
                   "escribo escribe escribimos escriben escribí escribió escribimos escribieron escribir"),
    "open": _verb(PEOPLE, "opening container book letter bottle", "open opens opened",
                  "ouvre ouvre ouvrons ouvrent ouvrir ouvert", "öffne öffnet öffnen geöffnet",
                  "abro abre abrimos abren abrí abrió abrimos abrieron abrir"),
    "close": _verb(PEOPLE, "opening container book", "close closes closed",
                   "ferme ferme fermons ferment fermer fermé", "schließe schließt schließen geschlossen",
                   "cierro cierra cerramos cierran cerré cerró cerramos cerraron cerrar"),
    "carry": _verb(PEOPLE, PORTABLE + " furniture", "carry carries carried",
                   "porte porte portons portent porter porté", "trage trägt tragen getragen",
                   "llevo lleva llevamos llevan llevé llevó llevamos llevaron llevar"),
    "find": _verb(ANIMATE, PORTABLE, "find finds found", "trouve trouve trouvons trouvent trouver trouvé",
                  "finde findet finden gefunden",
                  "encuentro encuentra encontramos encuentran encontré encontró encontramos encontraron "
                  "encontrar"),
    "look_for": _verb(ANIMATE, PORTABLE, "look_for looks_for looked_for",
                      "cherche cherche cherchons cherchent chercher cherché", "suche sucht suchen gesucht",
                      "busco busca buscamos buscan busqué buscó buscamos buscaron buscar"),
    "wash": _verb(PEOPLE, "vessel vehicle shirt shoe hat", "wash washes washed",
                  "lave lave lavons lavent laver lavé", "wasche wäscht waschen gewaschen",
                  "lavo lava lavamos lavan lavé lavó lavamos lavaron lavar"),
    "take": _verb(PEOPLE, "food " + PORTABLE, "take takes took", "prends prend prenons prennent prendr pris",
                  "nehme nimmt nehmen genommen", "tomo toma tomamos toman tomé tomó tomamos tomaron tomar"),
    "paint": _verb(PEOPLE, "furniture opening box building bicycle", "paint paints painted",
                   "peins peint peignons peignent peindr peint", "streiche streicht streichen gestrichen",
                   "pinto pinta pintamos pintan pinté pintó pintamos pintaron pintar"),
    "clean": _verb(PEOPLE, OBJECTS, "clean cleans cleaned", "nettoie nettoie nettoyons nettoient nettoier nettoyé",
                   "putze putzt putzen geputzt",
                   "limpio limpia limpiamos limpian limpié limpió limpiamos limpiaron limpiar"),
    "bring": _verb(PEOPLE, "food drink " + PORTABLE, "bring brings brought",
                   "apporte apporte apportons apportent apporter apporté", "bringe bringt bringen gebracht",
                   "traigo trae traemos traen traje trajo trajimos trajeron traer"),
    "forget": _verb(PEOPLE, PORTABLE, "forget forgets forgot", "oublie oublie oublions oublient oublier oublié",
                    "vergesse vergisst vergessen vergessen",
                    "olvido olvida olvidamos olvidan olvidé olvidó olvidamos olvidaron olvidar"),
    "break": _verb(PEOPLE, "vessel furniture window phone", "break breaks broke",
                   "casse casse cassons cassent casser cassé", "zerbreche zerbricht zerbrechen zerbrochen",
                   "rompo rompe rompemos rompen rompí rompió rompimos rompieron romper"),
    "draw": _verb(PEOPLE, "plant vehicle building item", "draw draws drew",
                  "dessine dessine dessinons dessinent dessiner dessiné", "zeichne zeichnet zeichnen gezeichnet",
                  "dibujo dibuja dibujamos dibujan dibujé dibujó dibujamos dibujaron dibujar"),
    "repair": _verb(PEOPLE, "vehicle furniture opening phone", "repair repairs repaired",
                    "répare répare réparons réparent réparer réparé", "repariere repariert reparieren repariert",
                    "reparo repara reparamos reparan reparé reparó reparamos repararon reparar"),
    # intransitive: always followed by a place
    "work": _verb(PEOPLE, None, "work works worked",
                  "travaille travaille travaillons travaillent travailler travaillé",
                  "arbeite arbeitet arbeiten gearbeitet",
                  "trabajo trabaja trabajamos trabajan trabajé trabajó trabajamos trabajaron trabajar"),
    "play": _verb(ANIMATE, None, "play plays played", "joue joue jouons jouent jouer joué",
                  "spiele spielt spielen gespielt", "juego juega jugamos juegan jugué jugó jugamos jugaron jugar"),
    "sleep": _verb(ANIMATE, None, "sleep sleeps slept", "dors dort dormons dorment dormir dormi",
                   "schlafe schläft schlafen geschlafen",
                   "duermo duerme dormimos duermen dormí durmió dormimos durmieron dormir"),
    "sing": _verb(PEOPLE, None, "sing sings sang", "chante chante chantons chantent chanter chanté",
                  "singe singt singen gesungen", "canto canta cantamos cantan canté cantó cantamos cantaron cantar"),
    "wait": _verb(ANIMATE, None, "wait waits waited", "attends attend attendons attendent attendr attendu",
                  "warte wartet warten gewartet",
                  "espero espera esperamos esperan esperé esperó esperamos esperaron esperar"),
    "run": _verb(ANIMATE, None, "run runs ran", "cours court courons courent courr couru",
                 "laufe läuft laufen gelaufen sein",
                 "corro corre corremos corren corrí corrió corrimos corrieron correr"),
    "dance": _verb(PEOPLE, None, "dance dances danced", "danse danse dansons dansent danser dansé",
                   "tanze tanzt tanzen getanzt", "bailo baila bailamos bailan bailé bailó bailamos bailaron bailar"),
    "cook": _verb(PEOPLE, None, "cook cooks cooked", "cuisine cuisine cuisinons cuisinent cuisiner cuisiné",
                  "koche kocht kochen gekocht",
                  "cocino cocina cocinamos cocinan cociné cocinó cocinamos cocinaron cocinar"),
    "talk": _verb(PEOPLE, None, "talk talks talked", "parle parle parlons parlent parler parlé",
                  "spreche spricht sprechen gesprochen",
                  "hablo habla hablamos hablan hablé habló hablamos hablaron hablar"),
    "study": _verb(PEOPLE, None, "study studies studied", "étudie étudie étudions étudient étudier étudié",
                   "lerne lernt lernen gelernt",
                   "estudio estudia estudiamos estudian estudié estudió estudiamos estudiaron estudiar"),
}

# Auxiliaries and the copula, indexed like PERSONS (1s 3s 1p 3p).
AUX = {
    "en_be": {"present": _forms("am is are are"), "past": _forms("was was were were")},
    "fr_avoir": _forms("ai a avons ont"),
    "fr_etre": {"present": _forms("suis est sommes sont"), "past": _forms("étais était étions étaient"),
                "future": _forms("serai sera serons seront")},
    "de_haben": _forms("habe hat haben haben"),
    "de_sein": {"present": _forms("bin ist sind sind"), "past": _forms("war war waren waren")},
    "de_werden": _forms("werde wird werden werden"),
    "es_ser": {"present": _forms("soy es somos son"), "past": _forms("era era éramos eran"),
               "future": _forms("seré será seremos serán")},
}
FUTURE_ENDINGS = {"fr": _forms("ai a ons ont"), "es": _forms("é á emos án")}

# Subject pronouns: person/number, gender (for predicate agreement), per-language form.
# Spanish drops "yo"/"nosotros" (pro-drop); "they" is always masculine.
PRONOUNS = {
    "I": ("1s", "m", {"en": "I", "fr": "je", "de": "ich", "es": ""}),
    "he": ("3s", "m", {"en": "he", "fr": "il", "de": "er", "es": "él"}),
    "she": ("3s", "f", {"en": "she", "fr": "elle", "de": "sie", "es": "ella"}),
    "we": ("1p", "m", {"en": "we", "fr": "nous", "de": "wir", "es": ""}),
    "they": ("3p", "m", {"en": "they", "fr": "ils", "de": "sie", "es": "ellos"}),
}

NUMERALS = {
    "en": _forms("two three four five six seven eight nine ten"),
    "fr": _forms("deux trois quatre cinq six sept huit neuf dix"),
    "de": _forms("zwei drei vier fünf sechs sieben acht neun zehn"),
    "es": _forms("dos tres cuatro cinco seis siete ocho nueve diez"),
}

PLACES = {
    "garden": {"en": "in the garden", "fr": "dans le jardin", "de": "im Garten", "es": "en el jardín"},
    "kitchen": {"en": "in the kitchen", "fr": "dans la cuisine", "de": "in der Küche", "es": "en la cocina"},
    "park": {"en": "in the park", "fr": "dans le parc", "de": "im Park", "es": "en el parque"},
    "school": {"en": "at school", "fr": "à l'école", "de": "in der Schule", "es": "en la escuela"},
    "market": {"en": "at the market", "fr": "au marché", "de": "auf dem Markt", "es": "en el mercado"},
    "home": {"en": "at home", "fr": "à la maison", "de": "zu Hause", "es": "en casa"},
    "station": {"en": "at the station", "fr": "à la gare", "de": "am Bahnhof", "es": "en la estación"},
    "city": {"en": "in the city", "fr": "en ville", "de": "in der Stadt", "es": "en la ciudad"},
    "beach": {"en": "on the beach", "fr": "sur la plage", "de": "am Strand", "es": "en la playa"},
    "street": {"en": "in the street", "fr": "dans la rue", "de": "auf der Straße", "es": "en la calle"},
    "library": {"en": "at the library", "fr": "à la bibliothèque", "de": "in der Bibliothek",
                "es": "en la biblioteca"},
    "office": {"en": "at the office", "fr": "au bureau", "de": "im Büro", "es": "en la oficina"},
    "forest": {"en": "in the forest", "fr": "dans la forêt", "de": "im Wald", "es": "en el bosque"},
}

TIMES = {
    "present": {
        "today": {"en": "today", "fr": "aujourd'hui", "de": "heute", "es": "hoy"},
        "now": {"en": "now", "fr": "maintenant", "de": "jetzt", "es": "ahora"},
        "every_day": {"en": "every day", "fr": "tous les jours", "de": "jeden Tag", "es": "todos los días"},
        "every_morning": {"en": "every morning", "fr": "tous les matins", "de": "jeden Morgen",
                          "es": "todas las mañanas"},
    },
    "past": {
        "yesterday": {"en": "yesterday", "fr": "hier", "de": "gestern", "es": "ayer"},
        "yesterday_evening": {"en": "yesterday evening", "fr": "hier soir", "de": "gestern Abend",
                              "es": "ayer por la tarde"},
        "last_week": {"en": "last week", "fr": "la semaine dernière", "de": "letzte Woche",
                      "es": "la semana pasada"},
        "last_year": {"en": "last year", "fr": "l'année dernière", "de": "letztes Jahr", "es": "el año pasado"},
    },
    "future": {
        "tomorrow": {"en": "tomorrow", "fr": "demain", "de": "morgen", "es": "mañana"},
        "tomorrow_morning": {"en": "tomorrow morning", "fr": "demain matin", "de": "morgen früh",
                             "es": "mañana por la mañana"},
        "next_week": {"en": "next week", "fr": "la semaine prochaine", "de": "nächste Woche",
                      "es": "la semana que viene"},
        "next_year": {"en": "next year", "fr": "l'année prochaine", "de": "nächstes Jahr",
                      "es": "el año que viene"},
    },
}


# ---------------------------------------------------------------------------
# Abstract meaning
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class NP:
    """Noun phrase meaning. det: "the", "a", "my" or a numeral 2..10 as a string."""

    noun: str
    det: str
    number: str = "sg"
    adj: Optional[str] = None


@dataclass(frozen=True)
class Clause:
    """Sentence meaning. verb "be" + adj is the predicate frame; subject is NP or a PRONOUNS key."""

    subject: Union[NP, str]
    verb: str
    tense: str = "present"
    obj: Optional[NP] = None
    adj: Optional[str] = None
    place: Optional[str] = None
    time: Optional[str] = None


def matches(noun_id, spec):
    """True if a noun is selected by a set of class names / noun ids."""
    return noun_id in spec or NOUNS[noun_id].cls in spec


def validate(clause):
    """Raise ValueError if a clause breaks the grammar's agreement-independent constraints."""
    nps = [clause.subject] if isinstance(clause.subject, NP) else []
    if clause.subject not in PRONOUNS and not nps:
        raise ValueError(f"unknown subject {clause.subject!r}")
    if clause.obj is not None:
        nps.append(clause.obj)
    for np in nps:
        if np.det.isdigit():
            if np.number != "pl" or not 2 <= int(np.det) <= 10:
                raise ValueError(f"numeral {np.det!r} needs a plural noun and 2..10")
        elif np.det not in ("the", "a", "my") or (np.det == "a" and np.number != "sg"):
            raise ValueError(f"bad determiner {np.det!r} for number {np.number!r}")
        if NOUNS[np.noun].mass and (np.number == "pl" or np.det not in ("the", "my")):
            raise ValueError(f"mass noun {np.noun!r} needs the/my and singular")
        if np.adj is not None and not matches(np.noun, ADJECTIVES[np.adj].applies):
            raise ValueError(f"adjective {np.adj!r} does not describe {np.noun!r}")
    if clause.tense not in TENSES:
        raise ValueError(f"unknown tense {clause.tense!r}")
    if clause.tense == "past" and clause.verb != "be" and clause.time is None:
        raise ValueError("past tense needs a time adverb")
    if clause.time is not None and clause.time not in TIMES[clause.tense]:
        raise ValueError(f"time {clause.time!r} does not fit tense {clause.tense!r}")
    if clause.verb == "be":
        if clause.adj is None or clause.obj is not None:
            raise ValueError("predicate clause needs an adjective and no object")
        return
    verb = VERBS[clause.verb]
    if (verb.obj is None) != (clause.obj is None):
        raise ValueError(f"verb {clause.verb!r} object mismatch")
    if verb.obj is None and clause.place is None:
        raise ValueError(f"intransitive verb {clause.verb!r} needs a place")
    if clause.obj is not None and not matches(clause.obj.noun, verb.obj):
        raise ValueError(f"{clause.verb!r} cannot take {clause.obj.noun!r}")


# ---------------------------------------------------------------------------
# Realizers
# ---------------------------------------------------------------------------

def _subject_features(subject, lang):
    """(person, gender, number) of a subject in one language (gender differs per language)."""
    if isinstance(subject, NP):
        gender = NOUNS[subject.noun].forms[lang][0]
        return ("3s" if subject.number == "sg" else "3p"), gender, subject.number
    person, gender, _ = PRONOUNS[subject]
    return person, gender, ("sg" if person.endswith("s") else "pl")


def _agree(forms4, gender, number):
    """Pick the ms/fs/mp/fp form from a French or Spanish 4-form list."""
    return forms4[(0 if gender != "f" else 1) + (0 if number == "sg" else 2)]


def _starts_with_vowel(word):
    """Vowel-initial for elision; every h-word in this lexicon has a mute h."""
    return word[:1].lower() in "aeiouyhàâéèêëîïôœû"


def _np_en(np):
    """English NP: det + adj + noun, a/an by the next word."""
    noun = NOUNS[np.noun].forms["en"]
    words = [noun[1] if np.number == "sg" else noun[2]]
    if np.adj:
        words.insert(0, ADJECTIVES[np.adj].en)
    if np.det == "a":
        det = "an" if words[0][0] in "aeiou" else "a"
    else:
        det = NUMERALS["en"][int(np.det) - 2] if np.det.isdigit() else np.det
    return [det] + words


def _np_fr(np):
    """French NP with article/possessive agreement, adjective position and elision."""
    gender, sg, pl = NOUNS[np.noun].forms["fr"]
    noun = sg if np.number == "sg" else pl
    pre, post = [], []
    if np.adj:
        adj = ADJECTIVES[np.adj].fr
        form = _agree(adj[1:5], gender, np.number)
        if len(adj) > 5 and gender == "m" and np.number == "sg" and _starts_with_vowel(noun):
            form = adj[5]
        (pre if adj[0] == "pre" else post).append(form)
    following = (pre + [noun])[0]
    if np.det.isdigit():
        det = NUMERALS["fr"][int(np.det) - 2]
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


_DE_ARTICLES = {  # (det, case) -> m f n pl
    ("the", "nom"): "der die das die", ("the", "acc"): "den die das die",
    ("a", "nom"): "ein eine ein -", ("a", "acc"): "einen eine ein -",
    ("my", "nom"): "mein meine mein meine", ("my", "acc"): "meinen meine mein meine",
}
_DE_ENDINGS = {  # adjective endings: weak after der, mixed after ein/mein -> m f n pl
    ("weak", "nom"): "e e e en", ("weak", "acc"): "en e e en",
    ("mixed", "nom"): "er e es en", ("mixed", "acc"): "en e es en",
}


def _np_de(np, case):
    """German NP in nominative or accusative with weak/mixed/strong adjective endings."""
    gender, sg, pl = NOUNS[np.noun].forms["de"]
    slot = 3 if np.number == "pl" else "mfn".index(gender)
    if np.det.isdigit():
        det, ending = NUMERALS["de"][int(np.det) - 2], "e"  # strong plural
    else:
        det = _DE_ARTICLES[(np.det, case)].split()[slot]
        ending = _DE_ENDINGS[("weak" if np.det == "the" else "mixed", case)].split()[slot]
    words = [det, sg if np.number == "sg" else pl]
    if np.adj:
        adj = ADJECTIVES[np.adj].de
        words.insert(1, adj[-1] + ending)
    return words


def _np_es(np):
    """Spanish NP: article/possessive + noun + agreeing adjective."""
    gender, sg, pl = NOUNS[np.noun].forms["es"]
    if np.det.isdigit():
        det = NUMERALS["es"][int(np.det) - 2]
    elif np.det == "my":
        det = "mi" if np.number == "sg" else "mis"
    else:
        table = {"the": ("el", "la", "los", "las"), "a": ("un", "una", None, None)}[np.det]
        det = _agree(table, gender, np.number)
    words = [det, sg if np.number == "sg" else pl]
    if np.adj:
        words.append(_agree(ADJECTIVES[np.adj].es, gender, np.number))
    return words


def _np_words(np, lang, case):
    """Words of an NP in one language (case matters only for German)."""
    if lang == "de":
        return _np_de(np, case)
    return {"en": _np_en, "fr": _np_fr, "es": _np_es}[lang](np)


def _subject_words(subject, lang):
    """Words of the subject (empty for a dropped Spanish pronoun)."""
    if isinstance(subject, NP):
        return _np_words(subject, lang, "nom")
    word = PRONOUNS[subject][2][lang]
    return [word] if word else []


def _verb_en(clause, person):
    """English verb group (copula included)."""
    if clause.verb == "be":
        if clause.tense == "future":
            return ["will", "be"]
        return [AUX["en_be"][clause.tense][PERSONS.index(person)]]
    base, third, past = VERBS[clause.verb].en
    return {"present": [third if person == "3s" else base], "past": [past],
            "future": ["will", base]}[clause.tense]


def _verb_fr(clause, person):
    """French verb group: present, passé composé (avoir) or simple future."""
    i = PERSONS.index(person)
    if clause.verb == "be":
        return [AUX["fr_etre"][clause.tense][i]]
    forms = VERBS[clause.verb].fr
    return {"present": [forms[i]], "past": [AUX["fr_avoir"][i], forms[5]],
            "future": [forms[4] + FUTURE_ENDINGS["fr"][i]]}[clause.tense]


def _verb_es(clause, person):
    """Spanish verb: present, preterite or simple future."""
    i = PERSONS.index(person)
    if clause.verb == "be":
        return [AUX["es_ser"][clause.tense][i]]
    forms = VERBS[clause.verb].es
    return {"present": [forms[i]], "past": [forms[4 + i]],
            "future": [forms[8] + FUTURE_ENDINGS["es"][i]]}[clause.tense]


def _verb_de(clause, person):
    """German (finite verb, clause-final non-finite part or None)."""
    i = PERSONS.index(person)
    if clause.verb == "be":
        if clause.tense == "future":
            return AUX["de_werden"][i], "sein"
        return AUX["de_sein"][clause.tense][i], None
    first, third, plural, participle, aux = VERBS[clause.verb].de
    if clause.tense == "present":
        return (first, third, plural, plural)[i], None
    if clause.tense == "future":
        return AUX["de_werden"][i], plural
    finite = AUX["de_haben"][i] if aux == "haben" else AUX["de_sein"]["present"][i]
    return finite, participle


def _realize_words(clause, lang):
    """The words of a clause in one language, before punctuation."""
    person, gender, number = _subject_features(clause.subject, lang)
    subject = _subject_words(clause.subject, lang)
    place = [PLACES[clause.place][lang]] if clause.place else []
    time = [TIMES[clause.tense][clause.time][lang]] if clause.time else []
    if clause.verb == "be":
        adj = ADJECTIVES[clause.adj]
        if lang == "de":
            finite, rest = _verb_de(clause, person)
            return subject + [finite, adj.de[0]] + ([rest] if rest else [])
        if lang == "en":
            return subject + _verb_en(clause, person) + [adj.en]
        forms = adj.fr[1:5] if lang == "fr" else adj.es
        verb = _verb_fr(clause, person) if lang == "fr" else _verb_es(clause, person)
        return subject + verb + [_agree(forms, gender, number)]
    obj = _np_words(clause.obj, lang, "acc") if clause.obj else []
    if lang == "de":
        finite, rest = _verb_de(clause, person)
        return subject + [finite] + time + obj + place + ([rest] if rest else [])
    verb = {"en": _verb_en, "fr": _verb_fr, "es": _verb_es}[lang](clause, person)
    return subject + verb + obj + place + time


def _elide_fr(text):
    """French subject clitic elision: je + vowel -> j' (articles elide in _np_fr)."""
    out = []
    for word in text.split(" "):
        if out and out[-1] == "je" and _starts_with_vowel(word):
            out[-1] = "j'" + word
        else:
            out.append(word)
    return " ".join(out)


def realize(clause, lang):
    """Render a clause as a capitalized sentence with a final period."""
    validate(clause)
    text = " ".join(_realize_words(clause, lang))
    if lang == "fr":
        text = _elide_fr(text)
    return text[0].upper() + text[1:] + "."


def realize_all(clause):
    """The clause in every language: {lang: sentence}."""
    return {lang: realize(clause, lang) for lang in LANGS}


# ---------------------------------------------------------------------------
# Sampling and counting meanings
# ---------------------------------------------------------------------------

FRAME_WEIGHTS = {"transitive": 5, "intransitive": 3, "predicate": 2}
PRONOUN_P, ADJ_P, PLACE_P, TIME_P, PLURAL_P = 0.3, 0.35, 0.35, 0.4, 0.35
DET_WEIGHTS = {"the": 9, "a": 4, "my": 3, "numeral": 4}
PREDICATE_PRONOUNS = ("he", "she", "they")  # gender known, so predicate adjectives agree


def nouns_for(spec):
    """Sorted noun ids selected by a set of classes / ids."""
    return sorted(n for n in NOUNS if matches(n, spec))


def adjectives_for(noun_id):
    """Sorted adjective ids that may describe a noun."""
    return sorted(a for a, adj in ADJECTIVES.items() if matches(noun_id, adj.applies))


def sample_np(rng, spec, with_adj=True):
    """A random NP whose noun is selected by spec."""
    noun = rng.choice(nouns_for(spec))
    if NOUNS[noun].mass:
        det, number = rng.choice(("the", "my")), "sg"
    else:
        det = rng.choices(list(DET_WEIGHTS), weights=list(DET_WEIGHTS.values()))[0]
        if det == "numeral":
            det, number = str(rng.randint(2, 10)), "pl"
        else:
            number = "pl" if det != "a" and rng.random() < PLURAL_P else "sg"
    adjs = adjectives_for(noun)
    adj = rng.choice(adjs) if with_adj and adjs and rng.random() < ADJ_P else None
    return NP(noun, det, number, adj)


def _sample_frame(rng, frame, tense):
    """One clause of the given frame, without the sentence-length check."""
    if frame == "predicate":
        if rng.random() < PRONOUN_P / 2:
            return Clause(rng.choice(PREDICATE_PRONOUNS), "be", tense,
                          adj=rng.choice(adjectives_for("man")))
        subject = sample_np(rng, set(NOUNS), with_adj=False)
        return Clause(subject, "be", tense, adj=rng.choice(adjectives_for(subject.noun)))
    transitive = frame == "transitive"
    verb_id = rng.choice(sorted(v for v, verb in VERBS.items() if (verb.obj is not None) == transitive))
    verb = VERBS[verb_id]
    if "person" in verb.subj and rng.random() < PRONOUN_P:
        subject = rng.choice(sorted(PRONOUNS))
    else:
        subject = sample_np(rng, verb.subj)
    obj = sample_np(rng, verb.obj) if transitive else None
    place = rng.choice(sorted(PLACES)) if not transitive or rng.random() < PLACE_P else None
    time = rng.choice(sorted(TIMES[tense])) if tense == "past" or rng.random() < TIME_P else None
    return Clause(subject, verb_id, tense, obj=obj, place=place, time=time)


def sample_clause(rng):
    """A random clause whose sentences have MIN_WORDS..MAX_WORDS words in every language."""
    while True:
        frame = rng.choices(list(FRAME_WEIGHTS), weights=list(FRAME_WEIGHTS.values()))[0]
        clause = _sample_frame(rng, frame, rng.choice(TENSES))
        if all(MIN_WORDS <= len(s.split()) <= MAX_WORDS for s in realize_all(clause).values()):
            return clause


def _count_nps(spec, with_adj=True):
    """Number of distinct NPs over nouns selected by spec."""
    total = 0
    for noun in nouns_for(spec):
        dets = 2 if NOUNS[noun].mass else 2 + 1 + 2 + 9  # the sg/pl, a, my sg/pl, two..ten
        total += dets * (1 + len(adjectives_for(noun)) if with_adj else 1)
    return total


def count_meanings():
    """Distinct clauses the sampler can draw, per frame, before the sentence-length filter."""
    adverbials = {"transitive": 0, "intransitive": 0}
    for tense in TENSES:
        times = len(TIMES[tense]) + (tense != "past")  # past always has a time adverb
        adverbials["transitive"] += (len(PLACES) + 1) * times
        adverbials["intransitive"] += len(PLACES) * times
    counts = {"transitive": 0, "intransitive": 0}
    for verb in VERBS.values():
        frame = "intransitive" if verb.obj is None else "transitive"
        subjects = _count_nps(verb.subj) + (len(PRONOUNS) if "person" in verb.subj else 0)
        objects = 1 if verb.obj is None else _count_nps(verb.obj)
        counts[frame] += subjects * objects * adverbials[frame]
    predicate = len(PREDICATE_PRONOUNS) * len(adjectives_for("man"))
    for noun in NOUNS:
        predicate += _count_nps({noun}, with_adj=False) * len(adjectives_for(noun))
    counts["predicate"] = predicate * len(TENSES)
    return counts
