#!/usr/bin/env python3
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

    python scripts/prep_fleurs.py --fleurs-root fleurs/data --pairs fr_fr-en_us de_de-en_us \\
        --out-dir data/fleurs --zip
"""
import argparse
import os
import shutil
import sys
import tarfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import s2t_manifest as m  # noqa: E402

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


def audio_source(args, lang, split, file_name):
    """Where a clip is read from: the unpacked file, or its staging path when the split only
    comes as ``audio/<split>.tar.gz`` (filled by :func:`extract_from_archives`)."""
    unpacked = os.path.join(args.fleurs_root, lang, "audio", split)
    if os.path.isdir(unpacked):
        return os.path.join(unpacked, file_name)
    return os.path.join(args.out_dir, EXTRACT_DIR, lang, split, file_name)


def pair_items(args, src, tgt, rejected):
    """Items for direction ``src-tgt`` over all splits; unusable rows go to ``rejected``."""
    direction = f"{src}-{tgt}"
    items = []
    for split in m.SPLITS:
        tsv = os.path.join(args.fleurs_root, src, f"{split}.tsv")
        if not os.path.isfile(tsv):
            print(f"[warning] {tsv} not found: no {split} rows for {direction}", file=sys.stderr)
            continue
        targets = target_sentences(args.fleurs_root, tgt, split)
        for line, fields in read_fleurs_tsv(tsv):
            if fields is None:
                m.reject(rejected, direction, split, f"line {line}", "malformed row",
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
                m.reject(rejected, direction, split, utt_id, reason, detail)
                continue
            items.append({
                "direction": direction, "split": split, "id": utt_id,
                "src_lang": src, "tgt_lang": tgt,
                "src_text": raw_text, "tgt_text": targets[sentence_id], "speaker": "",
                "audio_key": f"{src}/{stem}",
                "audio_src": audio_source(args, src, split, file_name),
                "archive": os.path.join(args.fleurs_root, src, "audio", f"{split}.tar.gz"),
            })
    return items


def extract_from_archives(args, items):
    """Extract, one sequential pass per ``.tar.gz``, the clips that are still to be converted and
    only exist in an archive; clips absent from their archive stay missing (reported later).

    The member names of each scanned archive are cached (see :func:`cached_members`), so a rerun
    does not decompress an archive again just to find that a clip is still not in it.
    """
    zipped = m.stored_clips(args)
    wanted = {}
    for item in items:
        staged = item["audio_src"].startswith(os.path.join(args.out_dir, EXTRACT_DIR))
        if staged and not os.path.isfile(item["audio_src"]) and not m.audio_done(
                args.out_dir, item["audio_key"], args.audio_format, zipped):
            wanted.setdefault(item["archive"], {})[os.path.basename(item["audio_src"])] = \
                item["audio_src"]
    for archive, names in wanted.items():
        if not os.path.isfile(archive):
            continue
        index = os.path.join(args.out_dir, "archive_index", os.path.relpath(
            archive, args.fleurs_root).replace(os.sep, "__") + ".txt")
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
    lines = m.read_lines(index)
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


def parse_pair(pair):
    """``"fr_fr-en_us"`` -> ``("fr_fr", "en_us")``."""
    src, sep, tgt = pair.partition("-")
    if not sep or not src or not tgt:
        raise argparse.ArgumentTypeError(f"pair {pair!r} is not <src>-<tgt>, e.g. fr_fr-en_us")
    return src, tgt


def get_parser():
    """The command-line parser."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fleurs-root", required=True,
                        help="FLEURS data directory holding <lang>/{train,dev,test}.tsv and "
                             "<lang>/audio/ (or the dataset repo holding data/)")
    parser.add_argument("--pairs", nargs="+", type=parse_pair, required=True,
                        help="directions as <src>-<tgt> FLEURS codes, e.g. fr_fr-en_us en_us-de_de")
    m.add_common_args(parser)
    return parser


def main(argv=None):
    """Prepare FLEURS X->Y manifests; returns the summary dict."""
    args = get_parser().parse_args(argv)
    args.fleurs_root = resolve_root(args.fleurs_root)
    for lang in {lang for pair in args.pairs for lang in pair}:
        if not os.path.isdir(os.path.join(args.fleurs_root, lang)):
            raise SystemExit(f"no FLEURS language directory {args.fleurs_root}/{lang}")
    items, rejected = [], []
    for src, tgt in args.pairs:
        items += pair_items(args, src, tgt, rejected)
    extract_from_archives(args, items)
    summary = m.run_pipeline(args, items, rejected, [f"{s}-{t}" for s, t in args.pairs])
    shutil.rmtree(os.path.join(args.out_dir, EXTRACT_DIR), ignore_errors=True)
    return summary


if __name__ == "__main__":
    main()
