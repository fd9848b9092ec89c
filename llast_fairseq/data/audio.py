"""Waveforms from fairseq S2T manifest paths, without torchaudio.

Paths follow fairseq's syntax (``fairseq.data.audio.audio_utils.parse_path``): a plain audio file
(wav, flac, ogg, mp3: whatever soundfile reads) or ``archive.zip:byte_offset:byte_length`` for an
entry of an uncompressed zip. Audio is downmixed to mono and resampled to 16 kHz with soxr.
"""
import io

import numpy as np
import soundfile as sf
import soxr
from fairseq.data.audio.audio_utils import parse_path, read_from_stored_zip

SAMPLE_RATE = 16000


def _source(path: str):
    """A file path or an in-memory zip entry that soundfile can open."""
    file_path, slice_ptr = parse_path(path)
    return io.BytesIO(read_from_stored_zip(file_path, *slice_ptr)) if slice_ptr else file_path


def waveform_length(path: str) -> int:
    """Samples of ``path`` at 16 kHz, from its header (nothing is decoded)."""
    info = sf.info(_source(path))
    return info.frames * SAMPLE_RATE // info.samplerate


def load_waveform(path: str) -> np.ndarray:
    """Read ``path`` (fairseq manifest syntax) as float32 mono 16 kHz samples, shape ``[samples]``."""
    source = _source(path)
    try:
        samples, rate = sf.read(source, dtype="float32", always_2d=True)
    except sf.LibsndfileError as e:
        raise ValueError(f"cannot decode audio {path!r}: {e}") from e
    mono = samples.mean(axis=1)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)
