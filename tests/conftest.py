"""Shared fixtures: tiny random-init models in the real formats and tiny real speech.

Speech is synthesized by espeak-ng (real audio files, 22.05 kHz wav, so the loader resamples),
the LLM tokenizer is a SentencePiece model trained on the corpus text, and both models are
saved exactly as a user's real checkpoints would be (openai-whisper .pt, HF directory).
"""
import io
import os
import subprocess
from pathlib import Path

import pytest
import soundfile as sf
import yaml

REPO = Path(__file__).resolve().parents[1]

from llast_fairseq.tiny_models import make_tiny_llm, make_tiny_whisper  # noqa: E402

from llast_fairseq.data.manifest import MANIFEST_COLUMNS, write_config, write_tsv  # noqa: E402

# The longest files (about 4 and 1.5 minutes at one thread) start first, so that under make test's
# pytest-xdist (one file per worker, in this order: --no-loadscope-reorder) no worker is left
# running one of them after the others are done.
LONGEST_FIRST = ("test_demo.py", "test_experiment.py")


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: item.path.name not in LONGEST_FIRST)  # stable: the rest keep their order


# (source, translation, src_lang, tgt_lang)
PAIRS = [
    ("Le chat mange une pomme.", "The cat eats an apple.", "fr", "en"),
    ("Le chien dort dans le jardin.", "The dog sleeps in the garden.", "fr", "en"),
    ("La femme lit un livre.", "The woman reads a book.", "fr", "en"),
    ("Les enfants jouent au parc.", "The children play in the park.", "fr", "en"),
    ("Der Mann trinkt Wasser.", "The man drinks water.", "de", "en"),
    ("Die Frau kauft Brot.", "The woman buys bread.", "de", "en"),
    ("The cat sleeps.", "Le chat dort.", "en", "fr"),
    ("We love music.", "Nous aimons la musique.", "en", "fr"),
]


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """Eight utterances (fr->en, de->en, en->fr) as espeak-ng wav files with S2T manifests:
    train.tsv (all), test.tsv (all), test_fr_en.tsv, and config.yaml."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "audio").mkdir()
    rows = []
    for i, (src, tgt, sl, tl) in enumerate(PAIRS):
        wav = root / "audio" / f"utt{i}.wav"
        voice = f"{sl}+m{1 + i % 3}"
        subprocess.run(["espeak-ng", "-v", voice, "-s", "170", "-w", str(wav), src], check=True)
        rows.append(dict(id=f"utt{i}", audio=f"audio/utt{i}.wav", n_frames=sf.info(wav).frames,
                         tgt_text=tgt, src_text=src, src_lang=sl, tgt_lang=tl, speaker=voice))
    write_tsv(root / "train.tsv", rows)
    write_tsv(root / "test.tsv", rows)
    write_tsv(root / "test_fr_en.tsv", [r for r in rows if r["src_lang"] == "fr"])
    write_config(root)
    return root


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    """whisper.pt (openai-whisper format, 80 mels) and llm/ (HF Llama + SentencePiece tokenizer)."""
    root = tmp_path_factory.mktemp("models")
    texts = [t for src, tgt, _, _ in PAIRS for t in (src, tgt)] * 20
    make_tiny_whisper(str(root / "whisper.pt"), seed=0)
    make_tiny_llm(str(root / "llm"), texts, vocab_size=360, hidden=64, layers=2, heads=4, seed=0)
    return root


def fairseq_cfg(data: Path, models: Path, *extra: str):
    """A fairseq-train config from command-line words, as fairseq-train parses them."""
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    argv = [str(data), "--user-dir", str(REPO / "llast_fairseq"), "--task", "llast_st",
            "--llm-path", str(models / "llm"), "--arch", "llast_tiny",
            "--whisper-path", str(models / "whisper.pt"), "--criterion", "llast_cross_entropy",
            "--optimizer", "adam", "--lr", "1e-3", "--batch-size", "4", "--cpu", *extra]
    parser = options.get_training_parser()
    return convert_namespace_to_omegaconf(options.parse_args_and_arch(parser, argv))


def build_task_and_model(data: Path, models: Path, *extra: str):
    from fairseq import tasks, utils

    cfg = fairseq_cfg(data, models, *extra)
    utils.import_user_module(cfg.common)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    return cfg, task, model


def first_batch(task, split: str, batch_size: int = 4):
    """A collated batch of the first ``batch_size`` examples of ``split`` (loaded if needed)."""
    if split not in task.datasets:
        task.load_dataset(split)
    dataset = task.dataset(split)
    return dataset.collater([dataset[i] for i in range(min(batch_size, len(dataset)))])


# Data preparation (tests/unit/test_prep_*.py): speech for the tiny corpus trees, manifest checks

QUOTED_FR = 'Il a dit "bonjour" à l\'ami.'
QUOTED_EN = '"Hello," he said to his friend\'s dog.'


def speak(text, voice="en"):
    """Mono float32 speech for ``text`` synthesized by espeak-ng, and its sample rate."""
    wav = subprocess.run(["espeak-ng", "-v", voice, "--stdout", text],
                         check=True, capture_output=True).stdout
    samples, rate = sf.read(io.BytesIO(wav), dtype="float32")
    return samples, rate


def check_manifest(out_dir, split, expect_zip):
    """Load ``split`` with fairseq's reader and decode every audio entry the way fairseq locates
    it (``parse_path`` + ``read_from_stored_zip``); returns the rows."""
    from fairseq.data.audio.audio_utils import parse_path, read_from_stored_zip
    from fairseq.data.audio.speech_to_text_dataset import SpeechToTextDatasetCreator

    config = yaml.safe_load(open(os.path.join(out_dir, "config.yaml")))
    samples = SpeechToTextDatasetCreator._load_samples_from_tsv(str(out_dir), split)
    for s in samples:
        assert tuple(s) == MANIFEST_COLUMNS
        path, slice_ptr = parse_path(os.path.join(config["audio_root"], s["audio"]))
        assert bool(slice_ptr) == expect_zip
        source = io.BytesIO(read_from_stored_zip(path, *slice_ptr)) if slice_ptr else path
        waveform, rate = sf.read(source, dtype="float32")
        assert rate == 16000 and waveform.ndim == 1
        assert len(waveform) == int(s["n_frames"]) > 0
    return samples
