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
import torch


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
def _mel_filterbank(settings: MelSettings) -> torch.Tensor:
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
    fb = np.maximum(0.0, np.minimum(up, down)).T
    return torch.from_numpy(fb.astype(np.float32))


def log_mel(wave: np.ndarray, settings: MelSettings = MelSettings()) -> np.ndarray:
    """Normalised log-Mel frames of a 16 kHz mono signal, shape (frames, n_mels), float32."""
    win = int(settings.sample_rate * settings.win_ms / 1000)
    hop = int(settings.sample_rate * settings.hop_ms / 1000)
    x = torch.from_numpy(np.asarray(wave, dtype=np.float32))
    if x.numel() < win:
        x = torch.nn.functional.pad(x, (0, win - x.numel()))
    spec = torch.stft(
        x,
        n_fft=settings.n_fft,
        hop_length=hop,
        win_length=win,
        window=torch.hann_window(win),
        center=True,
        return_complex=True,
    )
    power = spec.abs().pow(2).T  # (frames, freqs)
    mel = torch.log(power @ _mel_filterbank(settings) + 1e-6)
    mel = (mel - mel.mean(0)) / (mel.std(0) + 1e-5) if mel.shape[0] > 1 else mel - mel.mean(0)
    return mel.numpy().astype(np.float32)


def voice_features(wave: np.ndarray, front: str, settings: MelSettings = MelSettings()) -> np.ndarray:
    """The voice branch's input frames (frames, bands) for a model's `audio_front`: this
    module's log-Mel, or Whisper's own 80-band log-Mel for its encoder."""
    if front == "whisper":
        from .whisper import whisper_log_mel

        return np.ascontiguousarray(whisper_log_mel(wave).T)
    return log_mel(wave, settings)
