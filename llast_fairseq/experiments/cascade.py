"""A test set decoded through the cascade (``LlastTranslator.cascade``: the model transcribes,
then translates its transcript), written as fairseq-generate writes, to be scored the same way.

``<out>/generate-<subset>.txt`` holds, for manifest row ``i``: ``T-i`` (the manifest's
``tgt_text``), ``ASR-i`` (the transcript) and ``D-i<tab>nan<tab>translation`` (``nan``: two
searches, no one score). ``<out>/seconds.json``: ``utterances``, ``asr_seconds`` and
``mt_seconds`` (the cascade's two steps) and ``e2e_seconds``, end-to-end translation of the same
audio by ``LlastTranslator.generate`` in the same process (after one warm-up utterance), so the
two times compare under the same load and definition (wall time per batch: loading, collating,
beam search, detokenizing).
"""
import json
import os
from pathlib import Path
from typing import Optional

from ..data.manifest import clean_text
from ..evaluation import GEN_PREFIX, GEN_SUFFIX, load_manifest


def decode_cascade(data: str, subset: str, checkpoint: str, out: str, llm_path: Optional[str] = None,
                   batch_size: int = 8, device: str = "cpu", **generation) -> dict:
    """Decode ``subset`` of ``data`` through the cascade and end to end; returns seconds.json's dict.
    ``generation``: beam, max_len_b, ... as for :class:`LlastTranslator`."""
    from fairseq.data.audio.data_cfg import S2TDataConfig

    from ..api import LlastTranslator

    rows = load_manifest(data, subset)
    audio_root = Path(S2TDataConfig(Path(data) / "config.yaml").audio_root)
    translator = LlastTranslator.from_checkpoint(checkpoint, llm_path, device=device, **generation)
    directions = {}
    for i, row in enumerate(rows):
        directions.setdefault((row["src_lang"], row["tgt_lang"]), []).append(i)
    results = [None] * len(rows)
    seconds = {"utterances": len(rows), "asr_seconds": 0.0, "mt_seconds": 0.0, "e2e_seconds": 0.0}
    for (src, tgt), indices in directions.items():
        paths = [(audio_root / rows[i]["audio"]).as_posix() for i in indices]
        translator.generate(paths[:1], src, tgt, batch_size)  # warm-up, not timed
        for i, r in zip(indices, translator.cascade(paths, src, tgt, batch_size)):
            results[i] = r
            seconds["asr_seconds"] += r["asr_seconds"]
            seconds["mt_seconds"] += r["mt_seconds"]
        seconds["e2e_seconds"] += sum(r["seconds"] for r in translator.generate(paths, src, tgt, batch_size))
    os.makedirs(out, exist_ok=True)
    path = Path(out) / f"{GEN_PREFIX}{subset}{GEN_SUFFIX}"
    with open(f"{path}.part", "w", encoding="utf-8") as f:
        for i, (row, r) in enumerate(zip(rows, results)):
            f.write(f"T-{i}\t{row['tgt_text']}\nASR-{i}\t{clean_text(r['transcript'])}\n"
                    f"D-{i}\tnan\t{clean_text(r['translation'])}\n")
    os.replace(f"{path}.part", path)
    (Path(out) / "seconds.json").write_text(json.dumps(seconds, indent=1) + "\n")
    return seconds
