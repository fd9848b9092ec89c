"""FLEURS -> fairseq S2T manifests with raw 16 kHz audio for X->Y speech translation, for LLaST.

Input: the official FLEURS layout (the ``data/`` directory of the google/fleurs dataset repo):
``<root>/<lang>/{train,dev,test}.tsv`` (no header; tab-separated id, file name, raw transcription,
transcription, phonemes, number of samples, gender) and the audio either unpacked as
``<root>/<lang>/audio/<split>/<file name>`` or as the archive ``<root>/<lang>/audio/<split>.tar.gz``
(members matched by base name). ``<root>`` may also be the dataset repo itself (holding ``data/``).

FLEURS is n-way parallel: a sentence ``id`` is shared by all languages, and each language has one
or more recordings of it. An X->Y pair takes every recording of X in a split and, as target text,
the raw transcription of the same sentence id in the same split of Y; the source text is X's raw
transcription. Rows without a target sentence, with empty text, or with missing, undecodable or
too long audio are listed in ``rejected.tsv``.

Outputs in ``--out-dir``: ``{train,dev,test}_<src>-<tgt>.tsv``, ``train_joint.tsv`` (+
``train_joint.sampling.tsv``), ``config.yaml``, ``rejected.tsv`` and ``audio/`` or ``audio.zip``.

Example::

    llast-prep-fleurs --fleurs-root fleurs/data --pairs fr_fr-en_us de_de-en_us \\
        --out-dir data/fleurs --zip
"""
import os
import shutil
import sys
import tarfile

from .pipeline import SPLITS, PrepConfig, audio_done, reject, run_pipeline, stored_clips

N_FIELDS = 7  # id, file name, raw transcription, transcription, phonemes, num samples, gender
EXTRACT_DIR = "extract.part"  # staging area under --out-dir for clips taken from .tar.gz archives


def read_fleurs_tsv(path):
    """Yield ``(line_number, fields)`` of a header-less FLEURS TSV; ``fields`` is None for a line
    without exactly 7 tab-separated fields. Fields are split on tabs only (no quoting), as in the
    official loading script."""
    with open(path, encoding="utf-8", newline="") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            yield number, (fields if len(fields) == N_FIELDS else None)


def target_sentences(root, lang, split):
    """``{sentence id: raw transcription}`` of ``lang``'s ``split`` (first recording wins)."""
    path = os.path.join(root, lang, f"{split}.tsv")
    sentences = {}
    if os.path.isfile(path):
        for _, fields in read_fleurs_tsv(path):
            if fields is not None:
                sentences.setdefault(fields[0], fields[2])
    return sentences


def audio_source(root, out_dir, lang, split, file_name):
    """Where a clip is read from: the unpacked file, or its staging path when the split only
    comes as ``audio/<split>.tar.gz`` (filled by :func:`extract_from_archives`)."""
    unpacked = os.path.join(root, lang, "audio", split)
    if os.path.isdir(unpacked):
        return os.path.join(unpacked, file_name)
    return os.path.join(out_dir, EXTRACT_DIR, lang, split, file_name)


def pair_items(root, out_dir, src, tgt, rejected):
    """Items for direction ``src-tgt`` over all splits; unusable rows go to ``rejected``."""
    direction = f"{src}-{tgt}"
    items = []
    for split in SPLITS:
        tsv = os.path.join(root, src, f"{split}.tsv")
        if not os.path.isfile(tsv):
            print(f"[warning] {tsv} not found: no {split} rows for {direction}", file=sys.stderr)
            continue
        targets = target_sentences(root, tgt, split)
        for line, fields in read_fleurs_tsv(tsv):
            if fields is None:
                reject(rejected, direction, split, f"line {line}", "malformed row",
                       f"{tsv}: not {N_FIELDS} tab-separated fields")
                continue
            sentence_id, file_name, raw_text = fields[0], fields[1], fields[2]
            stem = os.path.splitext(file_name)[0]
            utt_id = f"{src}_{stem}"
            reason = None
            if sentence_id not in targets:
                reason, detail = "no target sentence", f"id {sentence_id} not in {tgt}/{split}.tsv"
            elif not targets[sentence_id].strip():
                reason, detail = "empty translation", f"{tgt}/{split}.tsv id {sentence_id}"
            elif not raw_text.strip():
                reason, detail = "empty transcription", ""
            if reason is not None:
                reject(rejected, direction, split, utt_id, reason, detail)
                continue
            items.append({
                "direction": direction, "split": split, "id": utt_id,
                "src_lang": src, "tgt_lang": tgt,
                "src_text": raw_text, "tgt_text": targets[sentence_id], "speaker": "",
                "audio_key": f"{src}/{stem}",
                "audio_src": audio_source(root, out_dir, src, split, file_name),
                "archive": os.path.join(root, src, "audio", f"{split}.tar.gz"),
            })
    return items


def extract_from_archives(root, out_dir, items, cfg):
    """Extract, one sequential pass per ``.tar.gz``, the clips that are still to be converted and
    only exist in an archive; clips absent from their archive stay missing (reported later).

    The member names of each scanned archive are cached (see :func:`cached_members`), so a rerun
    does not decompress an archive again just to find that a clip is still not in it.
    """
    zipped = stored_clips(out_dir, cfg)
    wanted = {}
    for item in items:
        staged = item["audio_src"].startswith(os.path.join(out_dir, EXTRACT_DIR))
        if staged and not os.path.isfile(item["audio_src"]) and not audio_done(
                out_dir, item["audio_key"], cfg.audio_format, zipped):
            wanted.setdefault(item["archive"], {})[os.path.basename(item["audio_src"])] = \
                item["audio_src"]
    for archive, names in wanted.items():
        if not os.path.isfile(archive):
            continue
        index = os.path.join(out_dir, "archive_index", os.path.relpath(
            archive, root).replace(os.sep, "__") + ".txt")
        members = cached_members(archive, index)
        if members is not None and not members & set(names):
            continue
        members = set()
        with tarfile.open(archive, "r|gz") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                members.add(os.path.basename(member.name))
                dst = names.get(os.path.basename(member.name))
                if dst is not None:
                    os.makedirs(os.path.dirname(dst), exist_ok=True)
                    with tar.extractfile(member) as src, open(f"{dst}.part", "wb") as out:
                        shutil.copyfileobj(src, out)
                    os.replace(f"{dst}.part", dst)
        save_members(archive, index, members)


def archive_stamp(archive):
    """Size and modification time of ``archive``, to tell whether a cached index is current."""
    stat = os.stat(archive)
    return f"{stat.st_size} {stat.st_mtime_ns}"


def cached_members(archive, index):
    """Member base names of ``archive`` from the index file ``index``, or None if absent/stale."""
    if not os.path.isfile(index):
        return None
    with open(index, encoding="utf-8") as f:
        lines = f.read().splitlines()
    return set(lines[1:]) if lines and lines[0] == archive_stamp(archive) else None


def save_members(archive, index, members):
    """Write the index of ``archive``'s member base names (first line: its size and mtime)."""
    os.makedirs(os.path.dirname(index), exist_ok=True)
    with open(f"{index}.part", "w", encoding="utf-8") as f:
        f.write("\n".join([archive_stamp(archive)] + sorted(members)) + "\n")
    os.replace(f"{index}.part", index)


def resolve_root(root):
    """``root`` itself, or its ``data/`` directory when given the dataset repo."""
    data = os.path.join(root, "data")
    return data if os.path.isdir(data) else root


def prepare(fleurs_root, pairs, out_dir, cfg=None):
    """Prepare FLEURS X->Y manifests for ``pairs`` (``[(src, tgt), ...]`` of FLEURS codes) in
    ``out_dir``; ``cfg`` defaults to ``PrepConfig()``. Returns the summary.

    Raises FileNotFoundError if a language of ``pairs`` has no directory under ``fleurs_root``.
    """
    cfg = cfg or PrepConfig()
    root = resolve_root(fleurs_root)
    for lang in sorted({lang for pair in pairs for lang in pair}):
        if not os.path.isdir(os.path.join(root, lang)):
            raise FileNotFoundError(f"no FLEURS language directory {root}/{lang}: check the "
                                    f"language codes of the pairs (e.g. fr_fr-en_us)")
    items, rejected = [], []
    for src, tgt in pairs:
        items += pair_items(root, out_dir, src, tgt, rejected)
    extract_from_archives(root, out_dir, items, cfg)
    summary = run_pipeline(out_dir, items, rejected, [f"{s}-{t}" for s, t in pairs], cfg)
    shutil.rmtree(os.path.join(out_dir, EXTRACT_DIR), ignore_errors=True)
    return summary
