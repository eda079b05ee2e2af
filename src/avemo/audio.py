"""Audio features: log-Mel frames, the input of the voice branch.

64 Mel bands over 25 ms windows every 10 ms, the front-end used by most speech
emotion work. Each utterance is normalised per band (mean and variance over its own
frames), which removes the microphone and room colouring that otherwise differs
most between corpora, while keeping the prosody inside the utterance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class MelSettings:
    """Feature settings; stored in each model's config and checked on load."""

    sample_rate: int = 16000
    n_mels: int = 64
    win_ms: float = 25.0
    hop_ms: float = 10.0
    n_fft: int = 512
    fmin: float = 50.0
    fmax: float = 8000.0

    def to_dict(self) -> dict:
        return asdict(self)


@lru_cache(maxsize=4)
def _mel_filterbank(settings: MelSettings) -> np.ndarray:
    """Triangular filters on the HTK Mel scale, shape (n_fft//2+1, n_mels)."""

    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    n_freqs = settings.n_fft // 2 + 1
    freqs = np.linspace(0, settings.sample_rate / 2, n_freqs)
    mels = np.linspace(hz_to_mel(np.array(settings.fmin)), hz_to_mel(np.array(settings.fmax)), settings.n_mels + 2)
    edges = mel_to_hz(mels)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None, :] - lower) / (centre - lower)
    down = (upper - freqs[None, :]) / (upper - centre)
    return np.maximum(0.0, np.minimum(up, down)).T.astype(np.float32)


def log_mel(wave: np.ndarray, settings: MelSettings = MelSettings()) -> np.ndarray:
    """Normalised log-Mel frames of a 16 kHz mono signal, shape (frames, n_mels), float32.

    numpy only (no torch at inference): a centred STFT with reflect padding and a periodic
    Hann window of `win_ms` zero-padded to `n_fft`, as `torch.stft` computes it (the same
    frames to 1e-5 of torch computing them in float64; tested)."""
    win = int(settings.sample_rate * settings.win_ms / 1000)
    hop = int(settings.sample_rate * settings.hop_ms / 1000)
    x = np.asarray(wave, dtype=np.float32)
    if len(x) < win:
        x = np.pad(x, (0, win - len(x)))
    half = settings.n_fft // 2
    x = np.pad(x, half, mode="reflect") if len(x) > half else np.pad(x, half)
    n = 1 + (len(x) - settings.n_fft) // hop
    frames = np.lib.stride_tricks.as_strided(x, (n, settings.n_fft), (x.strides[0] * hop, x.strides[0]))
    window = np.zeros(settings.n_fft, np.float32)
    start = (settings.n_fft - win) // 2
    window[start:start + win] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2  # (frames, freqs)
    mel = np.log(power.astype(np.float32) @ _mel_filterbank(settings) + 1e-6)
    mel = (mel - mel.mean(0)) / (mel.std(0, ddof=1) + 1e-5) if mel.shape[0] > 1 else mel - mel.mean(0)
    return mel.astype(np.float32)


# ---------------------------------------------------------------- Whisper's own front-end

#: Whisper's log-Mel: 80 bands, 400-sample (25 ms) windows every 160 samples (10 ms).
WHISPER_MELS = 80
WHISPER_N_FFT = 400
WHISPER_HOP = 160
#: Width of Whisper tiny.en's encoder states (`whisper.py`): what the voice branch reads after it.
WHISPER_WIDTH = 384


@lru_cache(maxsize=4)
def slaney_filters(sample_rate: int = 16000, n_fft: int = WHISPER_N_FFT, n_mels: int = WHISPER_MELS) -> np.ndarray:
    """Slaney-scale, area-normalised triangular filters (n_mels, n_fft//2+1), as librosa's
    `filters.mel` gives them and Whisper uses."""
    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        f = np.asarray(f, dtype=np.float64)
        lin = f / (200.0 / 3)
        log_part = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
        return np.where(f >= 1000.0, log_part, lin)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        m = np.asarray(m, dtype=np.float64)
        return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), m * (200.0 / 3))

    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


def _whisper_power(x: np.ndarray, pad: str) -> np.ndarray:
    """Power spectra (frames, 201) of float32 `x` on Whisper's frames: a centred STFT (`pad`:
    "reflect" as Whisper pads, "constant" as librosa does), periodic Hann window of 400
    samples, hop 160, the last frame dropped as Whisper drops it."""
    if len(x) < WHISPER_N_FFT:
        x = np.pad(x, (0, WHISPER_N_FFT - len(x)))
    x = np.pad(x, WHISPER_N_FFT // 2, mode=pad)
    n = 1 + (len(x) - WHISPER_N_FFT) // WHISPER_HOP
    frames = np.lib.stride_tricks.as_strided(x, (n, WHISPER_N_FFT), (x.strides[0] * WHISPER_HOP, x.strides[0]))
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WHISPER_N_FFT) / WHISPER_N_FFT)).astype(np.float32)
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    return (power[:-1] if n > 1 else power).astype(np.float32)


def whisper_log_mel(wave: np.ndarray) -> np.ndarray:
    """Whisper's log-Mel input of a 16 kHz mono signal: (80, frames) float32, one frame per 10 ms."""
    mel = slaney_filters() @ _whisper_power(np.asarray(wave, dtype=np.float32), "reflect").T
    log = np.log10(np.maximum(mel, 1e-10))
    log = np.maximum(log, log.max() - 8.0)
    return ((log + 4.0) / 4.0).astype(np.float32)


# ---------------------------------------------------------------- the voiceprint's front-end

#: Bands of the voiceprint encoder's Mel power frames (`voiceprint.py`), on Whisper's window and hop.
PRINT_MELS = 40
#: Width of the voiceprint (`voiceprint.py`): what the voice branch reads beside Whisper's states.
PRINT_WIDTH = 256
#: Resemblyzer raises a quieter utterance to this level (dBFS) before its Mel frames.
PRINT_LEVEL_DBFS = -30.0


def voiceprint_mel(wave: np.ndarray) -> np.ndarray:
    """Resemblyzer's input of a 16 kHz mono signal: (frames, 40) Mel power (not log), one frame
    per 10 ms, as many frames as `whisper_log_mel` gives. As Resemblyzer computes it (librosa's
    centred, zero-padded STFT, periodic Hann window of 400 samples, Slaney filters to 8 kHz),
    after its volume normalisation: a signal quieter than -30 dBFS is raised to it."""
    x = np.asarray(wave, dtype=np.float32)
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0
    return voiceprint_power(x) * np.float32(voiceprint_gain(rms) ** 2)


def voiceprint_power(wave: np.ndarray) -> np.ndarray:
    """`voiceprint_mel` before the volume normalisation: power scales with the square of the
    gain, so a long stretch's frames, computed once, can be raised window by window."""
    return (_whisper_power(np.asarray(wave, dtype=np.float32), "constant") @ slaney_filters(n_mels=PRINT_MELS).T).astype(np.float32)


def voiceprint_gain(rms: float) -> float:
    """Resemblyzer's volume normalisation: the gain that raises a signal of this level, if
    quieter than -30 dBFS, to it (1 otherwise, and for silence)."""
    target = 10 ** (PRINT_LEVEL_DBFS / 20)
    return target / rms if 0.0 < rms < target else 1.0


def voice_features(wave: np.ndarray, front: str, settings: MelSettings = MelSettings(),
                   voiceprint: bool = False) -> np.ndarray:
    """The voice branch's input frames (frames, bands) for a model's `audio_front`: this
    module's log-Mel, or Whisper's own 80-band log-Mel for its encoder; with `voiceprint`,
    the voiceprint encoder's 40 bands beside Whisper's (frames, 120)."""
    if front == "whisper":
        whisper = np.ascontiguousarray(whisper_log_mel(wave).T)
        return np.concatenate([whisper, voiceprint_mel(wave)], axis=1) if voiceprint else whisper
    return log_mel(wave, settings)
