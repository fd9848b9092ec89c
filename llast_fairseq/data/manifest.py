"""fairseq S2T manifests as written here: the column schema, the TSV writer and config.yaml.

TSVs are written as the exact inverse of fairseq's reader
(``SpeechToTextDatasetCreator._load_samples_from_tsv``: tab-separated, ``csv.QUOTE_NONE``, no quote
character, no escape character). fairseq's ``save_df_to_tsv`` also passes ``escapechar="\\"``, but
then a ``"`` in a sentence is written as ``\\"`` and read back by that reader as two characters;
writing without escapes keeps every sentence byte-exact. Tabs and line breaks cannot be represented
in this format: :func:`clean_text` replaces them by a space.
"""
import csv
import os

import yaml

MANIFEST_COLUMNS = ("id", "audio", "n_frames", "tgt_text", "src_text", "src_lang", "tgt_lang", "speaker")
JOINT_TRAIN = "train_joint"  # the split holding every direction's train rows


def clean_text(text: str) -> str:
    """``text`` with tabs and line breaks (unrepresentable in a fairseq TSV) replaced by spaces."""
    return text.replace("\r\n", " ").replace("\t", " ").replace("\n", " ").replace("\r", " ")


def write_tsv(path, rows, columns=MANIFEST_COLUMNS):
    """Write dict ``rows`` to ``path`` as a headed TSV that fairseq's reader returns byte-exact.

    Written to ``path + ".part"`` and renamed. Raises ``csv.Error`` if a field holds a tab or line
    break (clean text fields with :func:`clean_text` first).
    """
    tmp = f"{path}.part"
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_NONE, quotechar=None,
                            lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([row[c] for c in columns])
    os.replace(tmp, path)


def write_config(out_dir):
    """Create or update ``<out_dir>/config.yaml``: ``audio_root`` (``out_dir``, absolute) and
    ``use_audio_input: true``; other keys of an existing file are kept."""
    out_dir = os.path.abspath(out_dir)
    path = os.path.join(out_dir, "config.yaml")
    config = {}
    if os.path.isfile(path):
        with open(path) as f:
            config = yaml.safe_load(f) or {}
    config["audio_root"] = out_dir
    config["use_audio_input"] = True
    with open(f"{path}.part", "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    os.replace(f"{path}.part", path)
