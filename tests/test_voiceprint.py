"""The voiceprint beside Whisper's states: its front-end, its windows, and that it knows voices."""

import numpy as np
import pytest

from avemo.audio import PRINT_MELS, slaney_filters, voice_features, voiceprint_mel, whisper_log_mel
from avemo.media import load_audio
from avemo.voiceprint import WINDOW, pooled, windows, with_voiceprints

from .conftest import ANGRY, HAPPY, RAVDESS


def test_front_end_is_resemblyzers_mel_power_frame_for_frame_beside_whisper():
    torch = pytest.importorskip("torch")
    wave = load_audio(ANGRY)
    ours = voiceprint_mel(wave)
    x = torch.from_numpy(wave.astype(np.float64))
    rms = float(x.square().mean().sqrt())
    if rms < 10 ** (-30 / 20):  # Resemblyzer raises a quiet utterance to -30 dBFS
        x = x * (10 ** (-30 / 20) / rms)
    spec = torch.stft(x, 400, 160, window=torch.hann_window(400, dtype=torch.float64), center=True,
                      pad_mode="constant", return_complex=True).abs() ** 2
    ref = (torch.from_numpy(slaney_filters(n_mels=PRINT_MELS).astype(np.float64)) @ spec[:, :-1]).T.numpy()
    assert ours.shape == (whisper_log_mel(wave).shape[1], PRINT_MELS)
    np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-6 * ref.max())
    both = voice_features(wave, "whisper", voiceprint=True)
    assert both.shape == (ours.shape[0], 80 + PRINT_MELS) and np.array_equal(both[:, 80:], ours)


def test_a_quiet_voice_is_raised_to_one_level_a_loud_one_is_not():
    wave = load_audio(HAPPY)
    wave = wave / np.sqrt(np.mean(wave ** 2))  # at 0 dBFS RMS
    quiet, louder = voiceprint_mel(wave * 10 ** (-50 / 20)), voiceprint_mel(wave * 10 ** (-40 / 20))
    assert np.allclose(quiet, louder, rtol=1e-3, atol=1e-6 * louder.max())
    loud = voiceprint_mel(wave * 10 ** (-20 / 20))
    assert np.allclose(voiceprint_mel(wave * 2 * 10 ** (-20 / 20)), 4 * loud, rtol=1e-3, atol=1e-6 * loud.max())


def test_windows_cut_each_row_as_resemblyzer_does():
    mel = np.random.default_rng(0).random((3, 400, PRINT_MELS)).astype(np.float32)
    cut, owners = windows(mel, np.array([300, 100, 400]))
    # 300 frames: windows at 0, 77, 154 (the last covers 146 of 160 frames: kept); 100: one, zero-padded;
    # 400: 0, 77, 154, 231 (its last, at 308, would cover 92 of 160: dropped)
    assert owners.tolist() == [0, 0, 0, 1, 2, 2, 2, 2]
    assert cut.shape == (8, WINDOW, PRINT_MELS)
    assert np.array_equal(cut[2, :146], mel[0, 154:300]) and not cut[2, 146:].any()
    assert np.array_equal(cut[3, :100], mel[1, :100]) and not cut[3, 100:].any()
    prints = pooled(np.random.default_rng(1).random((8, 4)).astype(np.float32), owners, 3)
    assert np.allclose(np.linalg.norm(prints, axis=1), 1.0)
    states = with_voiceprints(np.ones((3, 5, 2), np.float32), np.array([5, 2, 4]), np.concatenate(
        [np.zeros((3, 400, 80), np.float32), mel], 2), np.array([300, 100, 400]), lambda w: np.ones((len(w), 4), np.float32))
    assert states.shape == (3, 5, 6) and np.allclose(states[0, :, 2:], 0.5) and not states[1, 2:, 2:].any()


def test_a_voiceprint_knows_its_speaker():
    torch = pytest.importorskip("torch")
    from avemo.training.model import VoiceprintLSTM
    from avemo.training.pretrained import voiceprint_state

    encoder = VoiceprintLSTM()
    encoder.load_state_dict(voiceprint_state())
    files = {a: sorted((RAVDESS / f"Actor_{a}").glob("*.flac"))[:4] for a in ("01", "02")}
    prints = {}
    for actor, paths in files.items():
        mels = [voiceprint_mel(load_audio(p)) for p in paths]
        n = max(len(m) for m in mels)
        batch = np.stack([np.pad(m, ((0, n - len(m)), (0, 0))) for m in mels])
        cut, owners = windows(batch, np.array([len(m) for m in mels]))
        with torch.no_grad():
            prints[actor] = pooled(encoder(torch.from_numpy(cut)).numpy(), owners, len(mels))
    same = [float(p @ q) for v in prints.values() for i, p in enumerate(v) for q in v[i + 1:]]
    other = [float(p @ q) for p in prints["01"] for q in prints["02"]]
    assert min(same) > max(other)
