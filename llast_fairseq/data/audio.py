"""The one audio decoder: every waveform the task, the prep pipeline and the corpus maker read
goes through :func:`to_mono_16k` (channels averaged, resampled to 16 kHz with soxr's HQ setting).

Paths follow fairseq's syntax (``fairseq.data.audio.audio_utils.parse_path``): a plain audio file
(wav, flac, ogg, mp3: whatever soundfile reads) or ``archive.zip:byte_offset:byte_length`` for an
entry of an uncompressed zip.
"""
import io
import os

import numpy as np
import soundfile as sf
import soxr
from fairseq.data.audio.audio_utils import parse_path, read_from_stored_zip

SAMPLE_RATE = 16000
RESAMPLE_QUALITY = "HQ"


def to_mono_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    """Samples ``[samples]`` or ``[samples, channels]`` at ``rate`` Hz as float32 mono at 16 kHz,
    shape ``[samples]``; :func:`resampled_length` gives its length."""
    mono = samples.mean(axis=1) if samples.ndim == 2 else samples
    if rate != SAMPLE_RATE and len(mono) > 0:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality=RESAMPLE_QUALITY)
    return np.ascontiguousarray(mono, dtype=np.float32)


def resampled_length(frames: int, rate: int) -> int:
    """Samples that :func:`to_mono_16k` makes of ``frames`` samples at ``rate`` Hz (soxr rounds
    ``frames * 16000 / rate`` to the nearest whole sample, halves up)."""
    return (2 * frames * SAMPLE_RATE + rate) // (2 * rate)


def decode_audio(source, name: str = None) -> np.ndarray:
    """A file path or file object that soundfile reads, as float32 mono 16 kHz ``[samples]``.

    Raises ValueError naming ``name`` (default: ``source``) if it cannot be decoded."""
    try:
        samples, rate = sf.read(source, dtype="float32", always_2d=True)
    except sf.LibsndfileError as e:
        raise ValueError(f"cannot decode audio {name or source!r}: {e}") from e
    return to_mono_16k(samples, rate)


def _source(path: str):
    """A file path or an in-memory zip entry that soundfile can open."""
    file_path, slice_ptr = parse_path(path)
    return io.BytesIO(read_from_stored_zip(file_path, *slice_ptr)) if slice_ptr else file_path


def waveform_length(path: str) -> int:
    """Samples of ``path`` at 16 kHz, from its header (nothing is decoded)."""
    info = sf.info(_source(path))
    return resampled_length(info.frames, info.samplerate)


def load_waveform(path: str) -> np.ndarray:
    """Read ``path`` (fairseq manifest syntax) as float32 mono 16 kHz samples, shape ``[samples]``."""
    return decode_audio(_source(path), path)


def write_pcm16(path: str, samples: np.ndarray, fmt: str = "wav"):
    """Write 16 kHz mono ``samples`` as a PCM-16 ``fmt`` (wav or flac) file, clipped to [-1, 1];
    written to ``path + ".part"`` and renamed, so a file at ``path`` is always complete."""
    tmp = f"{path}.part"
    sf.write(tmp, np.clip(samples, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16", format=fmt.upper())
    os.replace(tmp, path)
