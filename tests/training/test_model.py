import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the [train] extra

from avemo.errors import AvemoError
from avemo.shipped import default_model_dir
from avemo.training.model import AvemoNet, ModelConfig, load_net, save_model

from ..conftest import DATA

TINY = ModelConfig(audio_channels=8, audio_hidden=8, face_channels=4, embed_dim=8)


def test_shipped_model_loads_and_carries_its_card():
    net, meta = load_net(default_model_dir())
    assert sum(p.numel() for p in net.parameters()) > 100_000
    assert (default_model_dir() / "model.safetensors").stat().st_size <= 30e6  # issue 10: the model stays <= 30 MB
    test = meta["training"]["test"]
    for modality in ("audio", "face"):
        scores = test[modality]["emotion"]
        assert not scores["collapsed"]
        assert scores["accuracy"] > scores["majority_accuracy"] + 0.15, modality
    assert meta["training"]["held_out"]["audio"]  # speakers kept out of training


def test_save_load_roundtrip(tmp_path):
    net = AvemoNet(TINY).eval()
    save_model(net, tmp_path)
    loaded, meta = load_net(tmp_path)
    mel, lengths = torch.randn(2, 50, 64), torch.tensor([50, 30])
    assert torch.allclose(net(mel=mel, mel_lengths=lengths)[0], loaded(mel=mel, mel_lengths=lengths)[0])
    assert meta["architecture"]["face_channels"] == 4


def _saved_with(folder, **architecture):
    """A saved tiny model whose config.json then says `architecture` (its weights unchanged)."""
    save_model(AvemoNet(TINY), folder)
    meta = json.loads((folder / "config.json").read_text())
    meta["architecture"].update(architecture)
    (folder / "config.json").write_text(json.dumps(meta))
    return folder


def test_config_and_weights_must_match(tmp_path):
    with pytest.raises(AvemoError, match="weights do not match"):
        load_net(_saved_with(tmp_path / "wide", embed_dim=16))
    with pytest.raises(AvemoError, match="label sets"):
        load_net(_saved_with(tmp_path / "labels", embed_dim=16, emotions=["happy", "sad"]))
    with pytest.raises(AvemoError, match="whisper_layers 5"):  # a cut the encoder does not have
        load_net(_saved_with(tmp_path / "cut", whisper_layers=5))
    with pytest.raises(AvemoError, match="max_faces 0"):  # a face segment judged on no crop
        load_net(_saved_with(tmp_path / "no crops", max_faces=0))
    with pytest.raises(AvemoError, match="must be whisper"):  # stacked states of a log-Mel front-end
        load_net(_saved_with(tmp_path / "stacked", whisper_stack=True))
    with pytest.raises(AvemoError, match="face_blocks 5"):  # a 48-pixel crop pooled to nothing
        load_net(_saved_with(tmp_path / "deep", face_blocks=5))
    with pytest.raises(AvemoError, match="weights do not match"):  # a stage the weights lack
        load_net(_saved_with(tmp_path / "four", face_blocks=4))


def test_missing_modality_drops_out_of_the_fusion():
    net = AvemoNet(TINY).eval()
    mel, lengths = torch.randn(2, 40, 64), torch.tensor([40, 40])
    crops = torch.randint(0, 255, (2, 3, 48, 48), dtype=torch.uint8)
    mask = torch.tensor([[True, True, False], [False, False, False]])
    both = net(mel=mel, mel_lengths=lengths, crops=crops, crop_mask=mask, has_face=mask.any(1))[0]
    voice = net(mel=mel, mel_lengths=lengths)[0]
    assert torch.allclose(both[1], voice[1], atol=1e-6)  # no face in row 1: the voice alone decides
    assert not torch.allclose(both[0], voice[0], atol=1e-4)


def test_fused_logits_are_the_mean_of_each_modalitys_over_its_temperature(tmp_path):
    net = AvemoNet(TINY).eval()
    net.temperature.copy_(torch.tensor([2.0, 0.5]))
    voice, face = torch.randn(3, 8), torch.randn(3, 8)
    present = torch.tensor([[True, True], [True, False], [False, True]])
    _, emotion, sentiment = net.decide(voice, face, present)
    own = {m: net.emotion_head(net.norm(x)) / t for m, x, t in (("voice", voice, 2.0), ("face", face, 0.5))}
    assert torch.allclose(emotion[0], (own["voice"][0] + own["face"][0]) / 2, atol=1e-5)
    assert torch.allclose(emotion[1], own["voice"][1], atol=1e-5) and torch.allclose(emotion[2], own["face"][2], atol=1e-5)
    assert torch.allclose(sentiment[1], net.sentiment_head(net.norm(voice))[1] / 2.0, atol=1e-5)

    # the temperatures travel with the weights; a model saved before them loads with 1 (plain mean)
    save_model(net, tmp_path)
    assert load_net(tmp_path)[0].temperature.tolist() == [2.0, 0.5]
    from safetensors.torch import load_file, save_file

    state = load_file(str(tmp_path / "model.safetensors"))
    del state["temperature"]
    save_file(state, str(tmp_path / "model.safetensors"))
    old = load_net(tmp_path)[0]
    _, emotion, _ = old.decide(voice, face, present)
    mean = (old.emotion_head(old.norm(voice)) + old.emotion_head(old.norm(face))) / 2
    assert old.temperature.tolist() == [1.0, 1.0] and torch.allclose(emotion[0], mean[0], atol=1e-5)


def test_lstm_variant_builds(tmp_path):
    cfg = ModelConfig(**{**TINY.__dict__, "rnn": "lstm"})
    save_model(AvemoNet(cfg), tmp_path)
    assert isinstance(load_net(tmp_path)[0].audio.rnn, torch.nn.LSTM)


def test_copied_shipped_model_loads_by_path(tmp_path):
    shutil.copytree(default_model_dir(), tmp_path / "m")
    import avemo

    assert avemo.load_model(tmp_path / "m").cfg.emotions[0] == "neutral"


def test_face_embedding_reads_only_the_crops_that_are_there():
    """Inference skips the padding slots (and runs channels-last); the answer is the mean
    over the real crops, as when every slot went through the CNN."""
    net, _ = load_net(default_model_dir())
    net.eval()
    crops = torch.randint(0, 255, (3, 16, 48, 48), dtype=torch.uint8)
    mask = torch.zeros(3, 16, dtype=torch.bool)
    mask[0, :5] = mask[2, :16] = True  # row 1: no face at all
    with torch.no_grad():
        every_slot = net.face.embed_crops(crops.reshape(48, 48, 48)).reshape(3, 16, -1)
        expected = torch.stack([every_slot[i][mask[i]].mean(0) if mask[i].any() else torch.zeros(every_slot.shape[-1])
                                for i in range(3)])
        net.face.for_inference()
        assert torch.allclose(net.face(crops, mask), expected, atol=1e-4)


def test_a_mirroring_face_judges_a_crop_and_its_mirror_image_alike():
    """With face_mirror, inference embeds each crop as the mean of its own and its mirror
    image's embeddings (so a face and its mirror image read the same); training sees crops as
    they come (its flips are the augmentation's)."""
    import cv2

    faces = sorted((DATA / "fer2013" / "val" / "happy").glob("*.jpg"))[:3]
    crops = torch.from_numpy(np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in faces]))
    mirrored = crops.flip(-1)
    mirroring = load_net(default_model_dir())[0].face.eval()
    assert mirroring.mirror  # the shipped model's config.json says face_mirror
    plain = load_net(default_model_dir())[0].face.eval()
    plain.mirror = False
    with torch.no_grad():
        own, mirror = plain.embed_crops(crops), plain.embed_crops(mirrored)
        assert not torch.allclose(own, mirror, atol=1e-2)  # the CNN alone reads a face and its mirror differently
        assert torch.allclose(mirroring.embed_crops(crops), (own + mirror) / 2, atol=1e-5)
        assert torch.allclose(mirroring.embed_crops(mirrored), mirroring.embed_crops(crops), atol=1e-5)
        torch.manual_seed(0)  # the same dropout units in both
        trained = mirroring.train().embed_crops(crops)
        torch.manual_seed(0)
        assert torch.allclose(trained, plain.train().embed_crops(crops))
        plain.eval()  # both BatchNorms' running statistics moved alike in training
        both = (plain.embed_crops(crops) + plain.embed_crops(mirrored)) / 2
        assert torch.allclose(mirroring.eval().for_inference().embed_crops(crops), both, atol=1e-4)  # folded, channels-last


def test_a_deeper_face_cnn_trains_in_bfloat16_and_runs_float32(tmp_path):
    """Four stages end at 3x3 with 8x the first width; trained in bfloat16 where the CPU has it,
    the loss and gradients stay close to float32's, and the saved model answers in float32."""
    torch.manual_seed(0)
    net = AvemoNet(ModelConfig(audio_channels=8, audio_hidden=8, face_channels=8, face_blocks=4, embed_dim=8)).train()
    assert net.face.cnn[-1][3].out_channels == 64
    assert not net.face.train_in_bf16(torch.device("cuda"))  # a GPU keeps its float32 training
    crops = torch.randint(0, 255, (16, 1, 48, 48), dtype=torch.uint8)
    mask = torch.ones(16, 1, dtype=torch.bool)

    def loss_and_grad():
        net.zero_grad()
        loss = net(crops=crops, crop_mask=mask)[0].logsumexp(1).mean()
        loss.backward()
        return loss.item(), torch.cat([p.grad.flatten() for p in net.face.parameters()])

    for dropout in (m for m in net.modules() if isinstance(m, torch.nn.Dropout)):
        dropout.eval()  # the same units in both passes
    full, full_grad = loss_and_grad()
    if not net.face.train_in_bf16(torch.device("cpu")):
        pytest.skip("this CPU has no native bfloat16: training stays float32")
    half, half_grad = loss_and_grad()
    assert half == pytest.approx(full, rel=0.02)
    assert torch.nn.functional.cosine_similarity(half_grad, full_grad, 0) > 0.95
    save_model(net.eval(), tmp_path)
    loaded = load_net(tmp_path)[0].eval()
    with torch.no_grad():
        assert torch.allclose(loaded.face(crops, mask), net.face(crops, mask), atol=1e-5)  # eval: float32 both
