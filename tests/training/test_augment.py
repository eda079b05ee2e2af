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


def test_a_phone_call_keeps_the_voice_inside_a_phone_band(voice):
    from avemo.training.augment import PHONE_CODECS, phone_call

    for seed in range(6):  # each draw its own chain: room or not, noise or not, one of the codecs
        called = phone_call(voice, np.random.default_rng(seed), [load_audio(NO_FACE_VIDEO)])
        assert len(called) == len(voice) and called.dtype == np.float32
        spectrum = np.abs(np.fft.rfft(called)) ** 2
        freqs = np.fft.rfftfreq(len(called), 1 / 16000)
        assert spectrum[freqs > 4200].sum() < 0.01 * spectrum.sum()  # an 8 kHz line carries nothing above 4 kHz
        assert np.sqrt(np.mean(called ** 2)) > 0.01  # gain control brings a quiet voice up
    narrow = band_limited(voice, 300, 3400)
    for codec, fmt, rates in PHONE_CODECS:
        back = through_codec(narrow, codec, fmt, rates[0], rate=48000 if codec == "libopus" else 8000)
        assert np.corrcoef(narrow, back)[0, 1] > 0.8  # the lowest rate of each still carries the voice, in place


def test_a_face_as_video_shows_it_is_a_real_face_still_but_altered():
    import cv2

    from avemo.training.augment import face_as_video

    from ..conftest import DATA

    crop = cv2.imread(str(next((DATA / "fer2013" / "val" / "happy").iterdir())), cv2.IMREAD_GRAYSCALE)
    rng = np.random.default_rng(0)
    shown = [face_as_video(crop, rng) for _ in range(40)]
    assert all(s.shape == crop.shape and s.dtype == np.uint8 for s in shown)
    changed = [float(np.abs(s.astype(float) - crop).mean()) for s in shown]
    assert sum(c > 1.0 for c in changed) >= 30  # most copies altered (each step is drawn, all may be skipped)
    assert np.median([np.corrcoef(s.ravel(), crop.ravel())[0, 1] for s in shown]) > 0.8  # still that face
