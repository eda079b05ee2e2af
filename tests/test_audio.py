"""The log-Mel front-end, in numpy, against torch.stft computing the same thing."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the [train] extra

from avemo.audio import MelSettings, _mel_filterbank, log_mel, voice_features
from avemo.media import load_audio

from .conftest import ANGRY, HAPPY


def torch_log_mel(wave: np.ndarray, dtype: torch.dtype = torch.float64) -> np.ndarray:
    s = MelSettings()
    win, hop = int(s.sample_rate * s.win_ms / 1000), int(s.sample_rate * s.hop_ms / 1000)
    x = torch.nn.functional.pad(torch.from_numpy(wave).to(dtype), (0, max(0, win - len(wave))))
    spec = torch.stft(x, n_fft=s.n_fft, hop_length=hop, win_length=win, window=torch.hann_window(win, dtype=dtype),
                      center=True, return_complex=True)
    mel = torch.log(spec.abs().pow(2).T @ torch.from_numpy(_mel_filterbank(s)).to(dtype) + 1e-6)
    return ((mel - mel.mean(0)) / (mel.std(0) + 1e-5)).numpy()


@pytest.mark.parametrize("path", [ANGRY, HAPPY])
def test_numpy_log_mel_is_torchs(path):
    """Within 1e-5 of torch.stft's log-Mel computed exactly (float64); torch's own float32
    run is itself 2e-5 from that, ours 5e-5 at most from it."""
    wave = load_audio(path)
    ours, theirs = log_mel(wave), torch_log_mel(wave)
    assert ours.shape == theirs.shape == (len(wave) // 160 + 1, 64) and ours.dtype == np.float32
    assert np.abs(ours - theirs).max() < 1e-5
    assert np.abs(ours - torch_log_mel(wave, torch.float32)).max() < 5e-5


def test_a_clip_shorter_than_a_window_still_gives_a_frame():
    wave = np.random.default_rng(0).standard_normal(200).astype(np.float32) * 0.1
    assert log_mel(wave).shape == (3, 64) and np.isfinite(log_mel(wave)).all()


def test_each_front_end_gets_its_own_features():
    wave = load_audio(ANGRY)
    assert voice_features(wave, "logmel").shape[1] == 64 and voice_features(wave, "whisper").shape[1] == 80
