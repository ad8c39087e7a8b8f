"""Audio without torch: decoding (libsndfile through soundfile), mono mix-down, resampling (soxr),
the backbone's features in numpy (Whisper's log-mel spectrogram, or wav2vec2's normalised
waveform), the checks validate runs and the summary features the production log keeps.

Training, export's parity check and serving all compute features here, so what the model
is trained on and what it serves are the same arrays; tests compare the log-mel with the
transformers feature extractor's.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.inputs import InputRejected, TooLarge
from pipeline.data.image_files import read_data_file

EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif")
SILENCE_DBFS = -50.0  # a 20 ms frame quieter than this (RMS, dB full scale) counts as silence
CLIP_LEVEL = 0.999  # |sample| at or above this counts as clipped


class TooLong(TooLarge):
    """A clip over the duration limit (a server answers 413, not 422)."""


def _info(source: bytes | Path) -> Any:
    import soundfile as sf

    return sf.info(io.BytesIO(source) if isinstance(source, bytes) else str(source))


def read_audio(source: bytes | Path, where: str, max_seconds: float = 0.0) -> tuple[np.ndarray, int]:
    """(mono float32 samples in [-1, 1], sample rate). The duration is read from the header and
    checked against `max_seconds` (0 = none) before anything is decoded."""
    import soundfile as sf

    try:
        info = _info(source)
        seconds = info.frames / info.samplerate if info.samplerate else 0.0
        if max_seconds and seconds > max_seconds:
            raise TooLong(f"{where} is {seconds:,.1f} s long, over the limit of {max_seconds:g} s; cut it shorter")
        data, rate = sf.read(io.BytesIO(source) if isinstance(source, bytes) else str(source),
                             dtype="float32", always_2d=True)
    except InputRejected:
        raise
    except Exception as exc:  # libsndfile reports every malformed file as one of several types
        # its own words, without the "Error opening <_io.BytesIO object at 0x...>" it puts first
        why = getattr(exc, "error_string", None) or str(exc).rsplit(": ", 1)[-1]
        raise InputRejected(f"{where}: not readable audio ({why[:200]}); send WAV, FLAC, OGG or MP3") from None
    if data.size == 0:
        raise InputRejected(f"{where}: the audio holds no samples; send a recording")
    wave = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(wave).all():
        raise InputRejected(f"{where}: the audio holds NaN or infinite samples; re-export it")
    return np.ascontiguousarray(wave, dtype=np.float32), int(rate)


def resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return wave
    import soxr

    return soxr.resample(wave, rate, target, quality="HQ").astype(np.float32)


def _frame_rms(wave: np.ndarray, rate: int) -> np.ndarray:
    n = max(1, int(rate * 0.02))
    frames = wave[: len(wave) // n * n].reshape(-1, n) if len(wave) >= n else wave.reshape(1, -1)
    return np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1))


def _dbfs(rms: np.ndarray | float) -> np.ndarray | float:
    return 20 * np.log10(np.maximum(rms, 1e-10))


def audio_features(wave: np.ndarray, rate: int) -> dict[str, float]:
    """Duration (s), loudness (RMS dBFS), silence share (20 ms frames under -50 dBFS), spectral
    centroid (Hz, power-weighted over the clip) and the sample rate as received."""
    rms = _frame_rms(wave, rate)
    spectrum = np.abs(np.fft.rfft(wave[: rate * 30].astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(min(len(wave), rate * 30), 1.0 / rate)
    centroid = float((spectrum * freqs).sum() / spectrum.sum()) if spectrum.sum() > 0 else 0.0
    return {"duration": float(len(wave) / rate),
            "loudness": float(_dbfs(np.sqrt((wave.astype(np.float64) ** 2).mean()))),
            "silence_share": float((_dbfs(rms) < SILENCE_DBFS).mean()),
            "spectral_centroid": centroid, "sample_rate": float(rate)}


# ---------------------------------------------------------------- prepare and validate (worker processes)


def audio_facts(args: tuple[str, str]) -> dict[str, Any]:
    """Hash one file and read its header (duration, rate, channels, format) without decoding it."""
    root, rel = args
    facts: dict[str, Any] = {"sha256": None, "bytes": None, "seconds": None, "sample_rate": None,
                             "channels": None, "format": None, "error": None}
    data, facts["error"] = read_data_file(root, rel)
    if data is None:
        return facts
    facts.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    try:
        info = _info(data)
        if not info.samplerate or info.frames <= 0:
            raise ValueError("no samples")
        facts.update(seconds=float(info.frames / info.samplerate), sample_rate=int(info.samplerate),
                     channels=int(info.channels), format=f"{info.format}/{info.subtype}")
    except Exception as exc:
        what = "holds no samples" if str(exc) == "no samples" else f"is not readable audio ({type(exc).__name__})"
        facts["error"] = f"the file {what}; re-export it as WAV, FLAC, OGG or MP3, or remove it"
    return facts


def audio_check(args: tuple[str, str, dict[str, float]]) -> str | None:
    """None if the clip decodes and its clipping and silence shares are within the limits, else why."""
    root, rel, limits = args
    try:
        wave, rate = read_audio(Path(root) / rel, rel, limits["max_seconds"])
    except InputRejected as exc:
        return f"{exc}; re-export or remove the file"
    clipped = float((np.abs(wave) >= CLIP_LEVEL).mean())
    if clipped > limits["max_clipping_share"]:
        return (f"{clipped:.1%} of the samples are clipped (validate.audio.max_clipping_share="
                f"{limits['max_clipping_share']:g}); record it at a lower level or raise the limit")
    silent = float((_dbfs(_frame_rms(wave, rate)) < SILENCE_DBFS).mean())
    if silent > limits["max_silence_share"]:
        return (f"{silent:.0%} of the clip is silence (below {SILENCE_DBFS:g} dBFS; validate.audio."
                f"max_silence_share={limits['max_silence_share']:g}); remove it or raise the limit")
    return None


# ---------------------------------------------------------------- the backbone's features


def fit_window(wave: np.ndarray, samples: int, offset: int = 0) -> tuple[np.ndarray, int]:
    """The clip from `offset`, cut or zero-padded to `samples`; and how many samples hold audio."""
    clip = wave[offset: offset + samples]
    n = len(clip)
    return (np.pad(clip, (0, samples - n)) if n < samples else clip), n


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:  # Slaney's scale: linear below 1 kHz, log above
    hz = np.asarray(hz, dtype=np.float64)
    return np.where(hz < 1000.0, 3.0 * hz / 200.0, 15.0 + np.log(np.maximum(hz, 1e-9) / 1000.0) * 27.0 / np.log(6.4))


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return np.where(mel < 15.0, 200.0 * mel / 3.0, 1000.0 * np.exp(np.log(6.4) * (mel - 15.0) / 27.0))


def mel_filters(n_fft: int, n_mels: int, rate: int) -> np.ndarray:
    """Slaney-normalised triangular mel filters on Slaney's mel scale, 0 Hz to Nyquist: what Whisper's
    feature extractor uses; (n_fft // 2 + 1, n_mels)."""
    fft_freqs = np.linspace(0, rate // 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(rate / 2), n_mels + 2))
    slopes = edges[None, :] - fft_freqs[:, None]
    diff = np.diff(edges)
    bank = np.maximum(0.0, np.minimum(-slopes[:, :-2] / diff[:-1], slopes[:, 2:] / diff[1:]))
    return bank * (2.0 / (edges[2:] - edges[:-2]))[None, :]


def _stft_power(wave: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """|STFT|^2 with a periodic Hann window and centred reflect padding: (n_fft // 2 + 1, frames)."""
    padded = np.pad(wave.astype(np.float64), n_fft // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    return (np.abs(np.fft.rfft(frames * window, n=n_fft, axis=1)) ** 2).T


def log_mel(wave: np.ndarray, filters: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Whisper's log-mel spectrogram of a clip already padded to its window: (mels, samples // hop)."""
    mel = filters.T.astype(np.float64) @ _stft_power(wave, n_fft, hop)
    spec = np.log10(np.maximum(mel, 1e-10))[:, :-1]
    spec = np.maximum(spec, spec.max() - 8.0)
    return ((spec + 4.0) / 4.0).astype(np.float32)


def model_input(wave: np.ndarray, preprocess: dict[str, Any], filters: np.ndarray | None,
                offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(features, mask) of one clip at the backbone's rate. Log-mel models: (mels, frames) and a
    0/1 mask per frame; waveform models: the normalised samples and a mask per sample."""
    samples = int(preprocess["window_samples"])
    window, n = fit_window(wave, samples, offset)
    if preprocess["features"] == "log_mel":
        hop = int(preprocess["hop_length"])
        feats = log_mel(window, filters, int(preprocess["n_fft"]), hop)
        mask = (np.arange(feats.shape[1]) < max(1, -(-n // hop))).astype(np.float32)
        return feats, mask
    if preprocess.get("normalize", True):
        real = window[:n]
        window = np.where(np.arange(samples) < n, (window - real.mean()) / np.sqrt(real.var() + 1e-7), 0.0)
    return window.astype(np.float32), (np.arange(samples) < n).astype(np.float32)


def filters_for(preprocess: dict[str, Any]) -> np.ndarray | None:
    if preprocess.get("features") != "log_mel":
        return None
    return mel_filters(int(preprocess["n_fft"]), int(preprocess["n_mels"]), int(preprocess["sampling_rate"]))
