"""Awkward input a new user hands avemo (issue 44): stills in every storage, speech the VAD
misses, arguments of the wrong kind, names that are not UTF-8, outputs that cannot be written.
Each gets a right answer or one clear line and a non-zero exit; the API raises only AvemoError."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import avemo
from avemo.cli import main
from avemo.errors import AvemoError
from avemo.media import load_audio
from avemo.segments import Segment
from avemo.training.composite import mux_clip, still_variants

from .conftest import ANGRY, DATA, FACE_VIDEO, MEDIA, NO_FACE_VIDEO, REPO

#: Loud fearful speech that silero-vad gives no chunk of 0.5 (one of RAVDESS's 14 such files).
SCREAM = DATA / "ravdess_speech" / "Actor_20" / "03-01-06-02-02-02-20.flac"


@pytest.fixture(scope="module")
def model():
    return avemo.load_model()


@pytest.fixture(scope="module")
def stills(tmp_path_factory):
    return still_variants(MEDIA / "single_face.jpg", tmp_path_factory.mktemp("stills"))


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "internal error" not in err, err
    return err


# ------------------------------------------------------------------ stills (the PNG segfault)

def test_every_still_format_is_judged_in_a_process_that_then_frees_everything(stills):
    """PNGs carry side data with metadata (their ICC profile's name) that PyAV freed twice when its
    `side_data` was read: the process crashed once the frame was collected (exit 139)."""
    script = ("import gc, json, sys, avemo\n"
              "m = avemo.load_model()\n"
              "out = {p: [r.to_dict() for r in m.predict(p)] for p in sys.argv[1:]}\n"
              "gc.collect()\n"
              "print(json.dumps(out))\n")
    proc = subprocess.run([sys.executable, "-c", script, *map(str, stills.values())], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert len(out) == len(stills) == 11
    for path, (seg,) in out.items():
        assert seg["faces"] == 1 and seg["modalities"] == ["face"] and seg["emotion"] == "joy", path


@pytest.mark.parametrize("name", ["png_rgb24", "png_gray16be", "png_palette"])
def test_a_png_through_the_cli_exits_0_with_its_row(stills, name):
    proc = subprocess.run([sys.executable, "-m", "avemo", "predict", str(stills[name]), "--format", "json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["segments"][0]["faces"] == 1


def test_a_video_named_like_a_photo_is_read_as_the_video_it_is(model, tmp_path):
    video = mux_clip(FACE_VIDEO, None, tmp_path / "picture_only.mp4", duration=4.0)  # no sound: as a photo has none
    clip = video.rename(tmp_path / "clip.jpg")
    results = model.predict(clip)
    assert len(results) >= 1 and results[-1].end > 3.0 and all(r.modalities == ["face"] for r in results)


# ------------------------------------------------------------------ speech the VAD misses

def test_a_scream_the_vad_misses_is_judged_by_its_voice(model):
    (seg,) = model.predict(SCREAM)
    assert seg.modalities == ["audio"] and seg.emotion == "fear"


def test_music_is_still_no_speech(model):
    with pytest.raises(AvemoError, match="no speech"):
        model.predict(NO_FACE_VIDEO, modalities=["audio"])


def test_the_users_own_windows_are_judged_by_the_voice_where_the_vad_hears_none(model):
    wave = load_audio(NO_FACE_VIDEO)  # music: no speech for the VAD, but the user asked for these stretches
    for kwargs in ({"every": 2.0}, {"segments": [(0.0, 2.0), (2.0, 3.9)]}):
        results = model.predict(wave, **kwargs)
        assert [r.modalities for r in results] == [["audio"], ["audio"]]


def test_silent_windows_stay_unjudged_by_the_voice(model):
    results = model.predict(FACE_VIDEO, every=5.0)  # its sound track is digital silence
    assert results and all(r.modalities == ["face"] for r in results)


# ------------------------------------------------------------------ the API's arguments

@pytest.mark.parametrize("call,message", [
    (lambda m: m.predict([0.1, 0.2]), "item 1 of the list is the number 0.1, not a file path: a signal is a numpy array"),
    (lambda m: m.predict(None), "source is a NoneType: give a file path"),
    (lambda m: m.predict(3), "source is the number 3, not a file path"),
    (lambda m: m.predict(ANGRY, every="5"), "every is a number of seconds, not '5'"),
    (lambda m: m.predict(ANGRY, every=float("nan")), "every must be a finite number of seconds, at least 0.5"),
    (lambda m: m.predict(ANGRY, every=0.001), "at least 0.5"),
    (lambda m: m.predict(ANGRY, segments=[Segment(5, 3)]), r"segments item 1 \(5-3 s\) ends at or before it starts"),
    (lambda m: m.predict(ANGRY, segments=[]), "segments is empty"),
    (lambda m: m.predict(ANGRY, segments=[Segment(float("nan"), 2)]), "start and end must be finite numbers"),
    (lambda m: m.predict(ANGRY, segments=[(1, 2, 3)]), "give a Segment or a"),
    (lambda m: m.predict(ANGRY, segments=5), "segments is a list of Segment or"),
    (lambda m: m.predict(ANGRY, segments="missing.csv"), "missing.csv: no such segments file"),
    (lambda m: m.predict(ANGRY, segments=[(0, 1)], every=2), "give segments or every, not both"),
    (lambda m: list(m.stream(ANGRY, every=-1)), "at least 0.5"),
    (lambda m: m.predict(np.full(16000, 3000.0)), "a float signal runs from -1 to 1, but this one reaches 3000"),
    (lambda m: m.predict(np.zeros(16000, complex)), "a signal is an array of real numbers"),
])
def test_bad_arguments_raise_avemo_error_saying_what_is_wrong(model, call, message):
    with pytest.raises(AvemoError, match=message):
        call(model)


def test_reasonable_arguments_are_taken(model, tmp_path):
    (tmp_path / "s.csv").write_text("start,end\n0.5,2.5\n")
    by_pair = model.predict(ANGRY, segments=[(0.5, 2.5)])
    assert [(r.start, r.end) for r in by_pair] == [(0.5, 2.5)]
    assert model.predict(ANGRY, segments=tmp_path / "s.csv") == by_pair == model.predict(ANGRY, segments=str(tmp_path / "s.csv"))
    assert model.predict(os.fsencode(ANGRY)) == model.predict(ANGRY)  # a bytes path


def test_integer_pcm_is_scaled_as_the_float_signal_it_is(model):
    wave = load_audio(ANGRY)
    (as_float,) = model.predict(wave)
    for pcm in ((wave * 32767).astype(np.int16), (wave * 2**31 * 0.999).astype(np.int32)):
        (r,) = model.predict(pcm)
        assert r.emotion == as_float.emotion == "anger"
        assert abs(r.emotion_probs["anger"] - as_float.emotion_probs["anger"]) < 0.02


# ------------------------------------------------------------------ the CLI's inputs and outputs

def test_a_name_that_is_not_utf8_is_written_as_its_bytes_escaped(tmp_path, capsys):
    folder = tmp_path / "clips"
    folder.mkdir()
    odd = os.fsencode(folder) + b"/bad\xff\xfename.flac"
    with open(odd, "wb") as f:
        f.write(ANGRY.read_bytes())
    (folder / "good.flac").write_bytes(ANGRY.read_bytes())
    shown = f"{folder}/bad\\xff\\xfename.flac"
    for fmt in ("csv", "json", "jsonl", "srt", "txt"):
        out = tmp_path / f"r.{fmt}"
        assert main(["-q", "predict", str(folder), "--out", str(out)]) == 0, capsys.readouterr().err
        text = out.read_text(encoding="utf-8")
        if fmt in ("csv", "jsonl", "txt"):
            assert text.count("anger") >= 2 and (shown in text or shown.replace("\\", "\\\\") in text)
        if fmt == "json":
            assert [d["file"] for d in json.loads(text)] == [shown, str(folder / "good.flac")]
    assert main(["-q", "predict", str(folder), "--out", str(tmp_path / "r.csv"), "--resume"]) == 0


@pytest.mark.parametrize("make,message", [
    (lambda d: (d / "m.csv").write_text("path\n") and [str(d / "m.csv")], "the manifest lists no files"),
    (lambda d: (d / "s.csv").write_text("start,end\n") and [str(ANGRY), "--segments", str(d / "s.csv")], "no segments in it"),
    (lambda d: [str(ANGRY), "--every", "nan"], "every must be a finite number of seconds"),
    (lambda d: [str(ANGRY), "--every", "inf"], "every must be a finite number of seconds"),
    (lambda d: [str(ANGRY), "--every", "0.001"], "at least 0.5"),
    (lambda d: os.symlink("loop_b", d / "loop_a") or os.symlink("loop_a", d / "loop_b") or [str(d / "loop_a")],
     "a symbolic link loop"),
    (lambda d: os.symlink("nowhere.mp4", d / "broken.mp4") or [str(d / "broken.mp4")], "a broken symbolic link"),
    (lambda d: [str(ANGRY), "--out", "/sys/avemo-results.json"], "cannot write --out /sys/avemo-results.json: "),
    (lambda d: [str(ANGRY), "--out", "/proc/none/r.csv"], "cannot write --out /proc/none/r.csv: No such file"),
    (lambda d: [str(ANGRY), "--out", "/dev/full", "--format", "csv"], "/dev/full: No space left on device"),
    (lambda d: [str(ANGRY), "--out", "/dev/full", "--format", "json"], "/dev/full: No space left on device"),
])
def test_user_and_disk_failures_are_one_line_and_exit_1(tmp_path, capsys, make, message):
    assert main(["predict", *make(tmp_path)]) == 1
    assert message in _one_line(capsys)


def test_verbose_says_which_audio_track_was_used(tmp_path):
    two = mux_clip(FACE_VIDEO, None, tmp_path / "two_tracks.mp4", duration=3.0, tracks=[[(0.3, ANGRY)], []])
    proc = subprocess.run([sys.executable, "-m", "avemo", "-v", "predict", str(two)], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert proc.returncode == 0 and "audio track 1 of 2 used" in proc.stderr, proc.stderr

