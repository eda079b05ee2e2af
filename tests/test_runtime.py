"""The two runtimes: the shipped ONNX graphs on ONNX Runtime against the same weights in
torch, on real media and corpora; export of other models; inference without torch."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import avemo
from avemo.errors import AvemoError
from avemo.runtime import softmax
from avemo.shipped import default_model_dir

from .conftest import ANGRY, DATA, FACE_VIDEO, MEDIA, REPO

REAL = [
    REPO / "examples" / "sample.mp4",  # voice and face
    ANGRY,  # a RAVDESS utterance (voice only)
    DATA / "av_clips" / "1001_DFA_HAP_XX.flv",  # CREMA-D: a person's own face and voice
    *sorted((DATA / "fer2013" / "val" / "happy").glob("*"))[:1],  # (the shared data may be absent: then all skip)
    DATA / "jaffe" / "KA.AN1.39.jpg",  # a photo: face found by the detector
    *sorted(p for p in (DATA / "tess").rglob("*.*") if p.suffix in (".opus", ".wav", ".ogg"))[:1],
]


def _probabilities(model: avemo.Model, path) -> list[np.ndarray]:
    """The emotion and sentiment probabilities of every batch the model judged for `path`,
    unrounded (results round them to four places)."""
    seen, fusion = [], model.runtime.fusion

    def recording(*arrays):
        out = fusion(*arrays)
        seen.extend(softmax(x) for x in out[1:])
        return out

    model.runtime.fusion = recording
    model.predict(path)
    return seen


@pytest.fixture(scope="module")
def float_graphs(tmp_path_factory):
    """The shipped weights exported as float graphs (the shipped folder's face and encoder graphs are int8)."""
    pytest.importorskip("torch")
    from avemo.training.export import export_onnx

    folder = tmp_path_factory.mktemp("fp32")
    shutil.copyfile(default_model_dir() / "model.safetensors", folder / "model.safetensors")
    shutil.copyfile(default_model_dir() / "config.json", folder / "config.json")
    record = export_onnx(folder, folder)
    assert "int8" not in record
    return folder


@pytest.mark.torch
def test_onnx_runtime_gives_torchs_probabilities_on_real_media(float_graphs):
    onnx_model, torch_model = avemo.load_model(float_graphs, runtime="onnx"), avemo.load_model(runtime="torch")
    assert (onnx_model.runtime.name, torch_model.runtime.name) == ("onnx", "torch")
    worst = 0.0
    for path in REAL:
        ours, theirs = _probabilities(onnx_model, path), _probabilities(torch_model, path)
        assert len(ours) == len(theirs) > 0, path
        worst = max(worst, *(float(np.abs(a - b).max()) for a, b in zip(ours, theirs)))
    assert worst <= 1e-4
    print(f"largest ONNX/torch probability difference over {len(REAL)} real files: {worst:.1e}")


@pytest.mark.torch
def test_the_shipped_int8_graphs_give_the_float_graphs_answers_on_real_media(float_graphs):
    """The shipped model's int8 face CNN and encoder products (`training/quantise.py`) against the same
    weights as float graphs, segment by segment, on real media: the shared media, the sample, real voices
    and faces. benchmarks/agreement.py measures the same on every held-out set (98.1-100% agree)."""
    shipped, float_model = avemo.load_model(), avemo.load_model(float_graphs)
    assert shipped.meta["onnx"]["int8"] == ["encoder", "face"]
    media = [*REAL, *sorted(p for p in MEDIA.iterdir() if p.is_file()),
             *sorted((DATA / "av_clips").glob("*.flv"))[:3], *sorted((DATA / "fer2013" / "val" / "sad").glob("*"))[:10]]
    same, gaps = 0, []
    for path in (p for p in media if p.name != "no_face.mp4"):  # nothing in it to judge
        ours, theirs = shipped.predict(path), float_model.predict(path)
        assert [(r.start, r.end) for r in ours] == [(r.start, r.end) for r in theirs], path
        same += sum(a.emotion == b.emotion for a, b in zip(ours, theirs))
        gaps += [abs(a.emotion_probs[k] - b.emotion_probs[k]) for a, b in zip(ours, theirs) for k in a.emotion_probs]
    total = len(gaps) // len(shipped.cfg.emotions)
    assert total >= 30 and same >= 0.9 * total, f"{same} of {total} segments kept their emotion"
    assert np.mean(gaps) < 0.02 and max(gaps) < 0.25
    print(f"int8 against float: {same} of {total} segments the same emotion; probabilities {np.mean(gaps):.4f} apart "
          f"on average, {max(gaps):.3f} at most")


def test_the_shipped_model_runs_without_torch():
    """predict in a fresh process that cannot import torch at all."""
    code = ("import sys; sys.modules['torch'] = None\n"  # any import of torch now fails
            "import avemo\n"
            f"r = avemo.load_model().predict({str(REPO / 'examples' / 'sample.mp4')!r})\n"
            "print(len(r), sorted({m for s in r for m in s.modalities}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    count, modalities = out.stdout.strip().split(" ", 1)
    assert int(count) >= 3 and modalities == "['audio', 'face']"


def test_graphs_of_other_weights_are_refused(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(default_model_dir(), folder)
    card = json.loads((folder / "config.json").read_text())
    card["onnx"]["weights_sha1"] = "0" * 40  # as if the weights had been retrained since the export
    (folder / "config.json").write_text(json.dumps(card))
    with pytest.raises(AvemoError, match="exported from other weights"):
        avemo.load_model(folder)


def test_a_folder_of_graphs_alone_loads_and_a_damaged_graph_is_one_error(tmp_path):
    folder = tmp_path / "graphs"
    folder.mkdir()
    for name in ("config.json", "voice.onnx", "face.onnx", "fusion.onnx"):
        shutil.copyfile(default_model_dir() / name, folder / name)
    with pytest.raises(AvemoError, match="encoder.onnx is missing"):  # the shipped voice reads Whisper's states
        avemo.load_model(folder)
    shutil.copyfile(default_model_dir() / "encoder.onnx", folder / "encoder.onnx")
    with pytest.raises(AvemoError, match="voiceprint.onnx is missing"):  # and each voice's voiceprint beside them
        avemo.load_model(folder)
    shutil.copyfile(default_model_dir() / "voiceprint.onnx", folder / "voiceprint.onnx")
    results = avemo.load_model(folder).predict(FACE_VIDEO)
    assert results and all(r.modalities == ["face"] for r in results)
    (folder / "face.onnx").write_bytes(b"not a graph")
    with pytest.raises(AvemoError, match="face.onnx: does not load"):
        avemo.load_model(folder)


@pytest.mark.torch
def test_export_writes_graphs_that_match_torch_for_a_model_with_a_context_stage(tmp_path):
    """A log-Mel model with an LSTM, a context stage (the shipped one has neither) and calibrated modalities."""
    torch = pytest.importorskip("torch")
    from avemo.training.export import export_onnx
    from avemo.training.model import AvemoNet, ModelConfig, save_model

    torch.manual_seed(0)
    net = AvemoNet(ModelConfig(rnn="lstm", audio_channels=16, audio_hidden=16, face_channels=8, embed_dim=16,
                               context_hidden=8)).eval()
    net.temperature.copy_(torch.tensor([1.5, 0.6]))  # calibrated: the fusion graph carries its temperatures
    save_model(net, tmp_path / "m")
    record = export_onnx(tmp_path / "m", tmp_path / "onnx")
    assert record["graphs"] == ["voice", "face", "fusion", "context"] and record["max_difference"] <= 1e-4
    onnx_model, torch_model = avemo.load_model(tmp_path / "onnx"), avemo.load_model(tmp_path / "m")
    ours, theirs = onnx_model.predict(REPO / "examples" / "sample.mp4"), torch_model.predict(REPO / "examples" / "sample.mp4")
    assert len(ours) == len(theirs) >= 3
    flat = [[list(r.emotion_probs.values()) + list(r.sentiment_probs.values()) for r in rs] for rs in (ours, theirs)]
    assert np.abs(np.array(flat[0]) - np.array(flat[1])).max() <= 2e-4  # rounded to four places


def test_export_from_the_cli_needs_a_model_with_weights(tmp_path, capsys):
    from avemo.cli import main

    folder = tmp_path / "graphs"
    folder.mkdir()
    shutil.copyfile(default_model_dir() / "config.json", folder / "config.json")
    assert main(["export", "--onnx", str(tmp_path / "out"), "--model", str(folder)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("model.safetensors" in err or "needs torch" in err)


@pytest.mark.torch
def test_a_voice_probe_mixes_into_the_voice_logits_and_exports_to_graphs_that_match_torch(tmp_path):
    """The probe's logits ride beside the voice embedding; a voice alone gets (1 - share) of its
    head's logits and share of the probe's (a share for emotion, one for sentiment), over its temperature;
    a face alone none of the probe. A face judged with its mirror image exports too."""
    torch = pytest.importorskip("torch")
    from avemo.training.export import export_onnx
    from avemo.training.model import AvemoNet, ModelConfig, save_model

    torch.manual_seed(0)
    net = AvemoNet(ModelConfig(audio_channels=16, audio_hidden=16, face_channels=8, embed_dim=16, voice_probe=True,
                               face_mirror=True)).eval()
    net.temperature.copy_(torch.tensor([1.5, 0.6]))
    net.probe.share.copy_(torch.tensor([0.5, 0.25]))
    torch.nn.init.normal_(net.probe.linear.weight, std=0.5)
    states, lengths = torch.randn(2, 30, 64), torch.tensor([30, 12])
    voice = net.voice_out(states, lengths)
    assert voice.shape == (2, 16 + 7 + 3)
    face = torch.randn(2, 16)
    with torch.no_grad():
        _, alone, _ = net.decide(voice, face, torch.tensor([[True, False], [True, False]]))
        own = net.emotion_head(net.norm(voice[:, :16]))
        assert torch.allclose(alone, (0.5 * own + 0.5 * voice[:, 16:23]) / 1.5, atol=1e-5)
        _, _, feeling = net.decide(voice, face, torch.tensor([[True, False], [True, False]]))
        own = net.sentiment_head(net.norm(voice[:, :16]))
        assert torch.allclose(feeling, (0.75 * own + 0.25 * voice[:, 23:]) / 1.5, atol=1e-5)
        _, seen, _ = net.decide(voice, face, torch.tensor([[False, True], [False, True]]))
        assert torch.allclose(seen, net.emotion_head(net.norm(face)) / 0.6, atol=1e-5)
    save_model(net, tmp_path / "m")
    record = export_onnx(tmp_path / "m", tmp_path / "onnx")
    assert record["max_difference"] <= 1e-4
    ours = avemo.load_model(tmp_path / "onnx").predict(REPO / "examples" / "sample.mp4")
    theirs = avemo.load_model(tmp_path / "m").predict(REPO / "examples" / "sample.mp4")
    flat = [[list(r.emotion_probs.values()) for r in rs] for rs in (ours, theirs)]
    assert len(ours) == len(theirs) >= 3 and np.abs(np.array(flat[0]) - np.array(flat[1])).max() <= 2e-4


@pytest.mark.torch
def test_a_whisper_front_with_stacked_states_exports_to_graphs_that_match_torch(tmp_path):
    """Stacked states (each block's beside the others', `--whisper-stack`) widen what the encoder
    graph gives and the voice graph reads; both runtimes agree on real speech."""
    torch = pytest.importorskip("torch")
    from avemo.training.export import export_onnx
    from avemo.training.model import AvemoNet, ModelConfig, save_model

    torch.manual_seed(0)
    cfg = ModelConfig(audio_front="whisper", whisper_layers=2, whisper_stack=True, audio_channels=16, audio_hidden=16,
                      face_channels=8, embed_dim=16)
    assert cfg.state_width == 2 * 384
    save_model(AvemoNet(cfg).eval(), tmp_path / "m")
    record = export_onnx(tmp_path / "m", tmp_path / "onnx")
    assert "encoder" in record["graphs"] and record["max_difference"] <= 1e-4
    ours, theirs = (avemo.load_model(tmp_path / d).predict(ANGRY) for d in ("onnx", "m"))
    flat = [[list(r.emotion_probs.values()) for r in rs] for rs in (ours, theirs)]
    assert len(ours) == len(theirs) >= 1 and np.abs(np.array(flat[0]) - np.array(flat[1])).max() <= 2e-4


@pytest.mark.torch
def test_export_int8_from_the_cli_quantises_the_encoder_and_the_face_on_real_calibration_faces(tmp_path, capsys):
    """`avemo export --int8 encoder,face --calibration DIR`: Whisper's encoder with int8 matrix products, the face CNN
    with int8 convolutions calibrated on real faces; the model it writes loads and judges the sample
    as the shipped int8 model does. --calibration alone is refused in one line."""
    pytest.importorskip("torch")
    import onnx

    from avemo.cli import main

    faces = tmp_path / "faces"
    faces.mkdir()
    for photo in sorted((DATA / "fer2013" / "train" / "happy").glob("*"))[:40] + \
            sorted((DATA / "fer2013" / "train" / "angry").glob("*"))[:40]:
        shutil.copyfile(photo, faces / f"{photo.parent.name}-{photo.name}")
    for wrong in (["--calibration", str(faces)], ["--int8", "face"], ["--int8", "voice", "--calibration", str(faces)]):
        assert main(["export", "--onnx", str(tmp_path / "out"), *wrong]) == 1
        assert capsys.readouterr().err.count("\n") == 1
    assert main(["export", "--onnx", str(tmp_path / "out"), "--int8", "encoder,face", "--calibration", str(faces)]) == 0
    record = json.loads((tmp_path / "out" / "config.json").read_text())["onnx"]
    assert record["int8"] == ["encoder", "face"] and record["int8_calibration"] == "tmp_path0/faces".replace("tmp_path0", tmp_path.name)
    ops = {g: {n.op_type for n in onnx.load(str(tmp_path / "out" / f"{g}.onnx")).graph.node} for g in ("encoder", "face", "voiceprint")}
    assert "MatMulInteger" in ops["encoder"] or "DynamicQuantizeMatMul" in ops["encoder"]
    assert "QuantizeLinear" in ops["face"] and "QuantizeLinear" not in ops["voiceprint"]
    ours, shipped = avemo.load_model(tmp_path / "out").predict(REPO / "examples" / "sample.mp4"), \
        avemo.load_model().predict(REPO / "examples" / "sample.mp4")
    assert [r.emotion for r in ours] == [r.emotion for r in shipped]
