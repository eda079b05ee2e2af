import numpy as np
import pytest

from avemo.metrics import classification_report, summary_line


def test_majority_answer_is_flagged_as_collapsed():
    y = np.array([0] * 48 + [1] * 30 + [2] * 22)
    rep = classification_report(y, np.zeros_like(y), ["neutral", "joy", "sadness"])
    assert rep["accuracy"] == pytest.approx(0.48) == rep["majority_accuracy"]
    assert rep["collapsed"] and "COLLAPSED" in summary_line("x", rep)
    assert rep["macro_f1"] == pytest.approx((2 * 0.48 / 1.48) / 3)


def test_perfect_and_confusion():
    y = np.array([0, 1, 2, 2])
    p = np.array([0, 1, 2, 1])
    rep = classification_report(y, p, ["a", "b", "c"])
    assert rep["confusion"]["matrix"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert rep["per_class"]["c"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert rep["uar"] == pytest.approx((1 + 1 + 0.5) / 3) and not rep["collapsed"]


def report_from(path):
    import json

    return json.loads(path.read_text())


def _manifest(path, rows):
    path.write_text("path,emotion\n" + "".join(f"{p},{e}\n" for p, e in rows))
    return path


def test_evaluate_cli_on_photos_audio_and_videos(clips, tmp_path, capsys):
    import json

    from avemo.cli import main

    from .conftest import ANGRY, DATA, HAPPY

    fer = DATA / "fer2013" / "val"
    photos = [(p, lab) for lab in ("happy", "angry", "sad") for p in sorted((fer / lab).glob("*.jpg"))[:4]]
    audio = [(ANGRY, "angry"), (HAPPY, "happy"), (clips["music_wav"], "neutral")]
    videos = [(clips["talking_face"], "anger"), (clips["two_utterances"], "anger")]
    for name, rows in (("photos", photos), ("audio", audio), ("videos", videos)):
        report_path = tmp_path / f"{name}.json"
        assert main(["-q", "evaluate", "--manifest", str(_manifest(tmp_path / f"{name}.csv", rows)),
                     "--report", str(report_path)]) == 0
        report = json.loads(report_path.read_text())
        # every file is judged: a manifest's row is a stretch the user asked for, judged by the voice
        # wherever it holds sound (the music file too, which the VAD hears no speech in)
        assert report["n"] == len(rows) and report["emotion"]["n"] == len(rows) and not report["skipped"]
        for key in ("accuracy", "weighted_f1", "macro_f1", "uar", "majority_accuracy", "per_class", "confusion", "collapsed"):
            assert key in report["emotion"] and key in report["sentiment"]
        assert (tmp_path / f"{name}_emotion.png").stat().st_size > 1000
    out = capsys.readouterr().out
    assert "emotion: n=12 accuracy" in out and "(majority 0.333)" in out


def test_evaluate_without_a_report_prints_the_scores_and_each_skipped_file(clips, tmp_path, capsys, monkeypatch):
    from avemo.cli import main

    from .conftest import DATA

    rows = [(DATA / "av_clips" / "1001_DFA_ANG_XX.flv", "anger"), (DATA / "av_clips" / "1001_DFA_HAP_XX.flv", "joy"),
            (clips["silence_wav"], "neutral")]
    manifest = _manifest(tmp_path / "m.csv", rows)
    monkeypatch.chdir(tmp_path)
    assert main(["-q", "evaluate", "--manifest", str(manifest)]) == 0
    out = capsys.readouterr().out
    assert "emotion: n=2 accuracy" in out and "sentiment: n=2 accuracy" in out
    assert f"skipped 1 of 3 files:\n  {clips['silence_wav']}: " in out and "no speech (silent audio)" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv"]  # no report, no confusion PNGs


def test_evaluate_meld_split_restricted_to_one_modality(meld_fixture, tmp_path):
    from avemo.cli import main

    assert main(["-q", "evaluate", "--data", f"meld:{meld_fixture}", "--split", "test", "--modalities", "face",
                 "--report", str(tmp_path / "r.json")]) == 0
    report = report_from(tmp_path / "r.json")
    assert report["n"] == 10 and report["modalities"] == ["face"]
    assert report["sentiment"]["n"] == 10  # MELD carries its own sentiment labels


def test_test_split_is_the_speakers_the_model_held_out():
    import avemo
    from avemo.evaluate import test_items
    from avemo.training.datasets import load_spec
    from avemo.training.splits import held_out_name

    from .conftest import DATA

    model = avemo.load_model()
    recorded = {name for name in model.meta["training"]["held_out"]["audio"] if name.startswith("ravdess:")}
    items = test_items(load_spec(f"ravdess:{DATA / 'ravdess_speech'}"), model.meta)
    assert {held_out_name(i) for i in items} == recorded and len(items) == 60 * len(recorded) == 240
    ased = test_items(load_spec(f"manifest:{DATA / 'ased' / 'ased.csv'}"), model.meta)  # each corpus its own speakers
    assert {i.speaker for i in ased} and {held_out_name(i) for i in ased} <= set(model.meta["training"]["held_out"]["audio"])
    # a model that records nothing gets a fresh speaker-independent split
    fresh = test_items(load_spec(f"ravdess:{DATA / 'ravdess_speech'}"), {})
    assert len({i.speaker for i in fresh}) == 4


def test_evaluate_normalises_each_speaker_over_their_files_or_each_file_alone(tmp_path):
    """The shipped voice reads speech beside its speaker's statistics: evaluate gathers each
    speaker's from all of their files first (the default where a manifest names speakers),
    or takes each file's own; a mode the model was not trained for is one error."""
    import avemo
    from avemo.errors import AvemoError
    from avemo.evaluate import evaluate_items
    from avemo.training.datasets import load_spec

    from .conftest import DATA

    model = avemo.load_model()
    assert model.cfg.voice_norm == "group"
    items = [i for i in load_spec(f"ravdess:{DATA / 'ravdess_speech'}")
             if i.speaker in ("ravdess-04", "ravdess-15") and i.path.name.split("-")[2] in ("01", "03", "05")
             and i.path.name.split("-")[3] == "01"]  # neutral, happy, angry at normal intensity
    assert len(items) == 2 * 3 * 4
    by_speaker = evaluate_items(model, items, ("audio",))
    alone = evaluate_items(model, items, ("audio",), normalise="file")
    assert by_speaker["normalise"] == "speaker" and alone["normalise"] == "file"
    assert by_speaker["n"] == alone["n"] == len(items)
    assert by_speaker["predicted"] != alone["predicted"]  # the same files, read against other statistics
    assert by_speaker["emotion"]["accuracy"] > 1 / 3 and not by_speaker["emotion"]["collapsed"]
    with pytest.raises(AvemoError, match="not none"):
        evaluate_items(model, items, ("audio",), normalise="none")
