"""Training copies of real speech as real videos carry it: codecs, noise, gain, a narrow band."""

import numpy as np
import pytest

from avemo.media import load_audio
from avemo.training.augment import CODECS, band_limited, real_world, through_codec, with_noise

from ..conftest import HAPPY, NO_FACE_VIDEO


@pytest.fixture(scope="module")
def voice():
    return load_audio(HAPPY)


@pytest.mark.parametrize("codec,fmt", [(c, f) for c, f, _ in CODECS])
def test_a_codec_round_trip_keeps_the_voice_in_place(voice, codec, fmt):
    for kbps, least in ((64, 0.99), (16, 0.9)):
        back = through_codec(voice, codec, fmt, kbps)
        assert len(back) == len(voice) and back.dtype == np.float32
        assert np.corrcoef(voice, back)[0, 1] > least  # aligned despite the encoder's delay
        if kbps == 16:
            assert np.abs(back - voice).mean() > 1e-4  # and really lossy


def test_noise_is_mixed_at_the_asked_snr(voice):
    music = load_audio(NO_FACE_VIDEO)
    noisy = with_noise(voice, music, 10.0)
    added = noisy - voice
    assert 10 * np.log10(np.mean(voice ** 2) / np.mean(added ** 2)) == pytest.approx(10.0, abs=0.01)


def test_band_limiting_removes_what_lies_outside(voice):
    narrow = band_limited(voice, 300, 3400)
    spectrum = np.abs(np.fft.rfft(narrow))
    freqs = np.fft.rfftfreq(len(narrow), 1 / 16000)
    assert spectrum[freqs > 3500].max() < 1e-3 * spectrum.max()


def test_a_seeded_chain_is_made_again_the_same(voice):
    music = load_audio(NO_FACE_VIDEO)
    copies = [real_world(voice, np.random.default_rng(7), [music]) for _ in range(2)]
    assert np.array_equal(*copies) and len(copies[0]) == len(voice) and np.isfinite(copies[0]).all()
    other = real_world(voice, np.random.default_rng(8), [music])
    assert not np.array_equal(copies[0], other)
