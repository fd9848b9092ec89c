"""The one audio decoder: every waveform the task, the prep pipeline and the corpus maker read
goes through :func:`to_mono_16k` (channels averaged, resampled to 16 kHz with soxr's HQ setting).

Paths follow fairseq's syntax (``fairseq.data.audio.audio_utils.parse_path``): a plain audio file
(wav, flac, ogg, mp3: whatever soundfile reads) or ``archive.zip:byte_offset:byte_length`` for an
entry of an uncompressed zip.
"""
import io
import os
from typing import Optional, Tuple

import numpy as np
import soundfile as sf
import soxr
from fairseq.data.audio.audio_utils import parse_path, read_from_stored_zip

SAMPLE_RATE = 16000
RESAMPLE_QUALITY = "HQ"
LOSSY_FORMATS = ("MP3", "OGG")  # soundfile's names of mp3 and ogg (vorbis, opus) files
LOSSY_SLACK = 2 * 1152  # two MPEG layer III frames, in samples at the clip's own rate


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


def length_tolerance(fmt: str, rate: int, count_rate: int) -> int:
    """How far two sample counts of one clip may differ and still agree, in samples at
    ``count_rate`` Hz, for a clip of soundfile format ``fmt`` stored at ``rate`` Hz.

    PCM formats (wav, flac): 1 sample, for resamplers that round the other way. Lossy formats (mp3,
    ogg): two MPEG layer III frames at the clip's rate (48 ms at 48 kHz), the encoder's delay and
    the padding of its last frame, which a decoder that honours the gapless header drops and one
    that does not keeps (a CBR mp3 written by libsndfile decodes to 1,467 samples more than the
    PCM it was made from, at 22.05 kHz). A cut-off or wrong clip differs by far more (say, a
    header of 28 samples for a row of 27,208)."""
    if fmt not in LOSSY_FORMATS:
        return 1
    return -(-LOSSY_SLACK * count_rate // rate)


def _read(source, name) -> Tuple[np.ndarray, int, str]:
    """``(samples [samples, channels], rate, soundfile format)``; ValueError naming ``name``."""
    try:
        with sf.SoundFile(source) as f:
            return f.read(dtype="float32", always_2d=True), f.samplerate, f.format
    except sf.LibsndfileError as e:
        raise ValueError(f"cannot decode audio {name!r}: {e}") from e


def decode_audio(source, name: str = None) -> np.ndarray:
    """A file path or file object that soundfile reads, as float32 mono 16 kHz ``[samples]``.

    Raises ValueError naming ``name`` (default: ``source``) if it cannot be decoded."""
    samples, rate, _ = _read(source, name or source)
    return to_mono_16k(samples, rate)


def _source(path: str):
    """A file path or an in-memory zip entry that soundfile can open."""
    file_path, slice_ptr = parse_path(path)
    return io.BytesIO(read_from_stored_zip(file_path, *slice_ptr)) if slice_ptr else file_path


def waveform_length(path: str) -> int:
    """Samples of ``path`` at 16 kHz, from its header (nothing is decoded)."""
    info = sf.info(_source(path))
    return resampled_length(info.frames, info.samplerate)


def load_waveform(path: str, expected: Optional[int] = None) -> np.ndarray:
    """Read ``path`` (fairseq manifest syntax) as float32 mono 16 kHz samples, shape ``[samples]``.

    ``expected``: the length at 16 kHz its manifest row gives; a decoded length that does not
    agree (:func:`length_tolerance`) raises ValueError, as does audio that cannot be decoded."""
    samples, rate, fmt = _read(_source(path), path)
    waveform = to_mono_16k(samples, rate)
    if expected is not None and abs(len(waveform) - expected) > length_tolerance(fmt, rate, SAMPLE_RATE):
        raise ValueError(f"{path} decodes to {len(waveform)} samples at 16 kHz where its row says {expected} "
                         "(its header agreed when the split was checked): the clip is damaged or was changed "
                         "since; replace it, or correct or remove its row")
    return waveform


def write_pcm16(path: str, samples: np.ndarray, fmt: str = "wav"):
    """Write 16 kHz mono ``samples`` as a PCM-16 ``fmt`` (wav or flac) file, clipped to [-1, 1];
    written to ``path + ".part"`` and renamed, so a file at ``path`` is always complete."""
    tmp = f"{path}.part"
    sf.write(tmp, np.clip(samples, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16", format=fmt.upper())
    os.replace(tmp, path)
