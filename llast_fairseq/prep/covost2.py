"""CoVoST 2 -> fairseq S2T manifests with raw 16 kHz audio, for LLaST.

Inputs (official layouts):

* a Common Voice release: ``<cv-root>/<src_lang>/validated.tsv`` and
  ``<cv-root>/<src_lang>/clips/*.mp3``
* the CoVoST 2 translation TSVs ``<covost-root>/covost_v2.<src>_<tgt>.tsv`` (columns path, sentence,
  translation, client_id, split)

Rows are selected like the official ``get_covost_splits.py`` (facebookresearch/covost) and fairseq's
``examples/speech_to_text/prep_covost_data.py``: an inner join of validated.tsv (path, sentence,
client_id) with the CoVoST TSV (path, translation, split) on ``path``; train is
``split in {train, train_covost}``, dev is ``dev``, test is ``test``. Unlike those two, rows whose
translation holds the translators' ``REMOVE`` marker (instead of a translation) are dropped, as
CoVoST's authors drop them when they reuse the translations (common-voice/common-voice#3015).
Every CoVoST row not used (another split value, no validated.tsv entry, empty text, the REMOVE
marker, missing/undecodable/too long audio) is listed in ``rejected.tsv``.

Outputs in ``--out-dir``: ``{train,dev,test}_<src>_<tgt>.tsv``, ``train_joint.tsv`` (+
``train_joint.sampling.tsv``), ``config.yaml``, ``rejected.tsv`` and ``audio/`` or ``audio.zip``.

Example::

    llast-prep-covost2 --cv-root cv-corpus-4 --covost-root covost_tsv \\
        --pairs fr_en de_en --out-dir data/covost2 --zip --temperature 5
"""
import csv
import os
import re

from .pipeline import PrepConfig, reject, run_pipeline

TRAIN_SPLITS = {"train", "train_covost"}  # CoVoST 2: train also takes the "train_covost" rows
REMOVE_MARKER = re.compile(r"\bREMOVE\b")  # a translator's "no translation possible"


def read_official_tsv(path):
    """Yield ``(line_number, row)`` of a Common Voice / CoVoST TSV with a header line.

    Parsed like the official readers' ``pd.read_csv(sep="\\t", header=0, escapechar="\\\\",
    quoting=csv.QUOTE_NONE, na_filter=False)``: quote characters are literal, a backslash escapes
    the next character, blank lines are skipped, values stay strings. ``row`` is None for a line
    with more fields than the header (pandas would stop with an error); short lines are padded
    with empty strings.
    """
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")
        header = next(reader)
        for fields in reader:
            if not fields:
                continue
            if len(fields) > len(header):
                yield reader.line_num, None
                continue
            fields += [""] * (len(header) - len(fields))
            yield reader.line_num, dict(zip(header, fields))


def split_of(value):
    """The manifest split of a CoVoST 2 ``split`` value, or None if the official recipe skips it."""
    if value in TRAIN_SPLITS:
        return "train"
    return value if value in ("dev", "test") else None


def load_validated(cv_root, lang):
    """``{path: (sentence, client_id)}`` from ``<cv_root>/<lang>/validated.tsv``."""
    path = os.path.join(cv_root, lang, "validated.tsv")
    rows = {}
    for _, row in read_official_tsv(path):
        if row is not None:
            rows[row["path"]] = (row["sentence"], row["client_id"])
    return rows


def direction_items(cv_root, covost_root, src, tgt, validated, rejected):
    """Items for direction ``src_tgt`` from its CoVoST TSV; unusable rows go to ``rejected``."""
    direction = f"{src}_{tgt}"
    covost_tsv = os.path.join(covost_root, f"covost_v2.{src}_{tgt}.tsv")
    items, seen = [], set()
    for line, row in read_official_tsv(covost_tsv):
        if row is None:
            reject(rejected, direction, "", f"line {line}", "malformed row",
                     f"{covost_tsv}: more fields than the header")
            continue
        utt_id = os.path.splitext(row["path"])[0]
        split = split_of(row["split"])
        reason = None
        if split is None:
            reason, detail = "unused split", row["split"]
        elif row["path"] in seen:
            reason, detail = "duplicate row", row["path"]
        elif row["path"] not in validated:
            reason, detail = "not in validated.tsv", row["path"]
        elif not row["translation"].strip():
            reason, detail = "empty translation", ""
        elif REMOVE_MARKER.search(row["translation"]):
            reason, detail = "REMOVE marker in translation", row["translation"]
        elif not validated[row["path"]][0].strip():
            reason, detail = "empty transcription", ""
        if reason is not None:
            reject(rejected, direction, split or row["split"], utt_id, reason, detail)
            continue
        seen.add(row["path"])
        sentence, client_id = validated[row["path"]]
        items.append({
            "direction": direction, "split": split, "id": utt_id,
            "src_lang": src, "tgt_lang": tgt,
            "src_text": sentence, "tgt_text": row["translation"], "speaker": client_id,
            "audio_key": f"{src}/{utt_id}",
            "audio_src": os.path.join(cv_root, src, "clips", row["path"]),
        })
    return items


def prepare(cv_root, pairs, out_dir, covost_root=None, cfg=None):
    """Prepare CoVoST 2 manifests for ``pairs`` (``[(src, tgt), ...]``) in ``out_dir``;
    ``covost_root`` defaults to ``cv_root``, ``cfg`` to ``PrepConfig()``. Returns the summary."""
    covost_root = covost_root or cv_root
    items, rejected, validated = [], [], {}
    for src, tgt in pairs:
        if src not in validated:
            validated[src] = load_validated(cv_root, src)
        items += direction_items(cv_root, covost_root, src, tgt, validated[src], rejected)
    directions = [f"{s}_{t}" for s, t in pairs]
    return run_pipeline(out_dir, items, rejected, directions, cfg or PrepConfig())
