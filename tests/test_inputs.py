"""Real-world input: phone videos, photos with EXIF orientation, several audio tracks, broken
samples, the user's own segments, and every mistake a user can make, on real media."""

import json
import math
import os
import shutil
import struct
import subprocess
import sys

import av
import cv2
import numpy as np
import pytest

import avemo
from avemo.cli import main
from avemo.errors import AvemoError
from avemo.media import iter_frames, load_audio, probe
from avemo.segments import Segment, read_segments
from avemo.shipped import default_model_dir
from avemo.training.composite import mux_clip

from .conftest import ANGRY, FACE_VIDEO, HAPPY, MEDIA, NO_FACE_VIDEO, write_wav


@pytest.fixture(scope="module")
def model():
    return avemo.load_model()


@pytest.fixture(scope="module")
def upright_clip(tmp_path_factory):
    return mux_clip(FACE_VIDEO, [(0.3, ANGRY)], tmp_path_factory.mktemp("turned") / "upright.mp4", duration=3.0)


# ------------------------------------------------------------------ rotation

@pytest.mark.parametrize("rotation,hflip", [(90, False), (-90, False), (180, False), (0, True), (90, True)])
def test_phone_video_is_turned_upright_as_its_display_matrix_says(model, upright_clip, tmp_path, rotation, hflip):
    clip = mux_clip(FACE_VIDEO, [(0.3, ANGRY)], tmp_path / "phone.mp4", duration=3.0, rotation=rotation, hflip=hflip)
    with av.open(str(clip)) as c:  # stored turned, as a phone stores portrait video
        stored = next(c.decode(video=0)).to_ndarray(format="gray")
    assert stored.shape == ((640, 360) if rotation % 180 else (360, 640))
    info = probe(clip)
    assert (info.width, info.height) == (640, 360)
    (t0, first), = [f for f in iter_frames(clip, 5.0)][:1]
    (_, reference), = [f for f in iter_frames(upright_clip, 5.0)][:1]
    assert first.shape == reference.shape and np.abs(first.astype(int) - reference).mean() < 6  # codec noise only
    (seg,) = model.predict(clip)
    (ref,) = model.predict(upright_clip)
    assert seg.modalities == ["audio", "face"]
    # face_box in the upright picture's pixels: where the clip stored upright has it
    assert np.abs(np.subtract(seg.face_box, ref.face_box)).max() <= 12


def _with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """`jpeg` with an EXIF block (APP1) whose only tag is Orientation."""
    ifd = struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0)
    body = b"Exif\x00\x00" + b"MM\x00*" + struct.pack(">I", 8) + ifd
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body + jpeg[2:]


@pytest.mark.parametrize("orientation,stored_turn", [(3, cv2.ROTATE_180), (6, cv2.ROTATE_90_COUNTERCLOCKWISE),
                                                     (8, cv2.ROTATE_90_CLOCKWISE)])
def test_photo_follows_its_exif_orientation(model, tmp_path, orientation, stored_turn):
    upright = cv2.imread(str(MEDIA / "single_face.jpg"))
    ok, jpeg = cv2.imencode(".jpg", cv2.rotate(upright, stored_turn))  # stored as a camera held sideways stores it
    photo = tmp_path / f"exif{orientation}.jpg"
    photo.write_bytes(_with_exif_orientation(jpeg.tobytes(), orientation))
    info = probe(photo)
    assert (info.width, info.height) == (upright.shape[1], upright.shape[0])
    (seg,) = model.predict(photo)
    (ref,) = model.predict(MEDIA / "single_face.jpg")
    assert seg.faces == 1 and seg.modalities == ["face"]
    assert np.abs(np.subtract(seg.face_box, ref.face_box)).max() <= 12


# ------------------------------------------------------------------ audio tracks

def test_a_silent_default_track_does_not_hide_a_spoken_second_one(model, tmp_path, caplog):
    clip = mux_clip(FACE_VIDEO, None, tmp_path / "two_tracks.mp4", duration=4.0, tracks=[[], [(0.3, HAPPY)]])
    (seg,) = model.predict(clip)
    assert seg.modalities == ["audio", "face"]
    assert "audio track 2 of 2 used; track 1 is silent" in caplog.text
    np.testing.assert_allclose(load_audio(clip)[int(0.3 * 16000):][:16000], load_audio(HAPPY)[:16000], atol=0.05)


def test_the_default_flagged_track_is_used_when_it_has_sound(model, tmp_path, caplog):
    clip = mux_clip(FACE_VIDEO, None, tmp_path / "dub.mp4", duration=4.0, tracks=[[(0.3, ANGRY)], [(0.3, HAPPY)]],
                    default_track=1)
    model.predict(clip)
    assert "audio track 2 of 2 used" in caplog.text and "silent" not in caplog.text
    heard = load_audio(clip)[int(0.3 * 16000):][:16000]
    assert np.abs(heard - load_audio(HAPPY)[:16000]).mean() < np.abs(heard - load_audio(ANGRY)[:16000]).mean()


# ------------------------------------------------------------------ non-finite samples, strict JSON

@pytest.fixture(scope="module")
def nan_wav(tmp_path_factory):
    """HAPPY as a 48 kHz float WAV with 12 samples that are not numbers."""
    wave = load_audio(HAPPY)
    x = np.interp(np.linspace(0, len(wave) - 1, 3 * len(wave)), np.arange(len(wave)), wave).astype(np.float32)
    x[30000:30010], x[50000], x[70000] = np.nan, np.inf, -np.inf
    return write_wav(tmp_path_factory.mktemp("nan") / "float_nan.wav", x, 48000, floats=True)


def test_non_finite_samples_are_counted_replaced_and_named(model, nan_wav, caplog):
    wave = load_audio(nan_wav)
    assert np.isfinite(wave).all()
    assert "12 audio samples were not numbers (NaN or infinite) and were replaced by silence" in caplog.text
    (seg,) = model.predict(nan_wav)
    probs = [*seg.emotion_probs.values(), *seg.sentiment_probs.values()]
    assert seg.modalities == ["audio"] and all(math.isfinite(p) for p in probs)


def test_json_output_is_strict(nan_wav, capsys):
    assert main(["-q", "predict", str(nan_wav), "--format", "json"]) == 0
    out = capsys.readouterr().out

    def refuse(token):
        raise ValueError(f"bare {token} in JSON")

    doc = json.loads(out, parse_constant=refuse)
    assert doc["segments"][0]["modalities"] == ["audio"]
    if shutil.which("node"):  # the reader of a web page
        subprocess.run(["node", "-e", "JSON.parse(require('fs').readFileSync(0, 'utf8'))"], input=out, text=True, check=True)


# ------------------------------------------------------------------ the user's segments

def test_segments_outside_the_clip_are_clipped_with_their_rows_named(clips, tmp_path, capsys):
    (tmp_path / "s.csv").write_text("start,end\n-1.5,2\n3,4\n12,20\n")  # two_utterances lasts 14 s
    assert main(["predict", str(clips["two_utterances"]), "--segments", str(tmp_path / "s.csv"), "--format", "csv"]) == 0
    captured = capsys.readouterr()
    assert "segments rows 1, 3 reach outside the media (0-14.0" in captured.err
    rows = [r.split(",") for r in captured.out.splitlines()[1:]]
    assert [(float(r[1]), float(r[2])) for r in rows] == [(0.0, 2.0), (3.0, 4.0), (12.0, pytest.approx(14.0, abs=0.05))]


@pytest.mark.parametrize("text,message", [
    ("start,end\n0,1\n2,2\n3,1\n", "rows 2, 3 end at or before they start"),
    ("start,end\n0,1\n30,40\n", "segments rows 2 lie outside the media (0-14.0"),
    ("start,end\n0,1\nsoon,2\n", "'start' and 'end' must be numbers of seconds (rows 2)"),
])
def test_impossible_segments_are_refused_by_row(clips, tmp_path, capsys, text, message):
    (tmp_path / "s.csv").write_text(text)
    assert main(["predict", str(clips["two_utterances"]), "--segments", str(tmp_path / "s.csv")]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_a_headerless_csv_of_two_numbers_is_start_end(tmp_path):
    (tmp_path / "s.csv").write_text("0.5,2.25\n3,4\n")
    assert read_segments(tmp_path / "s.csv") == [Segment(0.5, 2.25), Segment(3.0, 4.0)]


def test_segments_work_for_a_list_of_files(model, clips):
    out = model.predict([clips["two_utterances"], clips["talking_face"]], segments=[Segment(0.0, 1.0), Segment(1.0, 2.5)])
    assert [[(r.start, r.end) for r in rs] for rs in out] == [[(0.0, 1.0), (1.0, 2.5)]] * 2


# ------------------------------------------------------------------ one line, exit 1

def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_out_pointing_at_a_folder(tmp_path, capsys):
    assert main(["predict", str(MEDIA / "single_face.jpg"), "--out", str(tmp_path)]) == 1
    assert "is a folder; give a file name" in _one_line(capsys)


@pytest.mark.parametrize("name,text,message", [
    ("other.csv", "id,score\n1,2\n", "is not a CSV avemo wrote (its header differs)"),
    ("other.jsonl", '{"id": 1}\n', "is not a JSONL file avemo wrote"),
    ("other.jsonl", "not json at all\n", "is not a JSONL file avemo wrote"),
])
def test_resume_onto_a_file_avemo_did_not_write(tmp_path, capsys, name, text, message):
    out = tmp_path / name
    out.write_text(text)
    assert main(["predict", str(MEDIA / "single_face.jpg"), "--out", str(out), "--resume"]) == 1
    assert message in _one_line(capsys)
    assert out.read_text() == text  # left as it was


@pytest.mark.parametrize("runtime", ["onnx", "torch"])
@pytest.mark.parametrize("config,message", [
    ("{", "config.json: not valid JSON"),
    ('{"format_version": 1, "architecture": {"embed_dim": "wide"}}', "its architecture is not one avemo knows"),
    ('{"format_version": 1, "architecture": {"layers_of_doom": 3}}', "its architecture is not one avemo knows"),
    ('{"format_version": 1}', "its architecture is not one avemo knows"),
    ('{"format_version": 1, "architecture": {"voiceprint": true}}', "its architecture is not one avemo knows"),
    ('{"format_version": 1, "architecture": {"embed_dim": 64}}', "do not match config.json"),
])
def test_a_model_folder_with_a_broken_config(tmp_path, capsys, config, message, runtime):
    """The same checks whichever runtime reads the folder: its weights (torch) or its graphs."""
    if runtime == "torch":
        pytest.importorskip("torch")
    for name in ("model.safetensors",) if runtime == "torch" else ("encoder.onnx", "voice.onnx", "face.onnx", "fusion.onnx"):
        shutil.copy(default_model_dir() / name, tmp_path)
    (tmp_path / "config.json").write_text(config)
    assert main(["predict", str(MEDIA / "single_face.jpg"), "--model", str(tmp_path), "--runtime", runtime]) == 1
    assert message in _one_line(capsys)


def test_an_unreadable_file_says_permission_denied(tmp_path):
    locked = tmp_path / "locked.jpg"
    shutil.copy(MEDIA / "single_face.jpg", locked)
    locked.chmod(0)
    command = [sys.executable, "-m", "avemo", "predict", str(locked)]
    if os.geteuid() == 0:  # root reads anything: run without the capabilities that let it
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv to drop CAP_DAC_OVERRIDE")
        command = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *command]
    proc = subprocess.run(command, capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"avemo: error: {locked}: permission denied (not readable by this user)"


@pytest.mark.parametrize("args,message", [
    (["predict", "-"], "reading media from standard input ('-') is not supported"),
    (["predict", str(MEDIA / "single_face.jpg"), "--workers", "2"], "--workers and --address go with --engine ray"),
    (["predict", str(MEDIA / "single_face.jpg"), "--format", "json", "--out", "r.csv"], "--format json contradicts --out r.csv"),
    (["predict", str(HAPPY), "--modalities", "face"], "has no picture (sound only), and only the face was asked for"),
    (["predict", str(MEDIA / "single_face.jpg"), "--modalities", "audio"], "has no audio track (a photo), and only the voice"),
])
def test_user_mistakes_are_one_line_and_exit_1(capsys, args, message):
    assert main(args) == 1
    assert message in _one_line(capsys)


def test_a_damaged_jpeg_says_damaged_image(tmp_path, capsys):
    whole = (MEDIA / "single_face.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(whole[:3000])
    assert main(["predict", str(tmp_path / "cut.jpg")]) == 1
    assert "cut.jpg: damaged image" in _one_line(capsys)


def test_an_internal_error_is_one_line_exit_2_and_debug_shows_it(monkeypatch, capsys):
    import avemo.cli

    def broken(args):
        raise RuntimeError("a bug\nwith a second line")

    monkeypatch.setattr(avemo.cli, "_predict", broken)
    assert main(["predict", str(HAPPY)]) == 2
    assert _one_line(capsys) == ("avemo: internal error: RuntimeError: a bug "
                                 "(please report; rerun with --debug for the traceback)")
    with pytest.raises(RuntimeError):
        main(["predict", str(HAPPY), "--debug"])


def test_evaluate_says_why_a_file_was_skipped(tmp_path, capsys):
    frame = next(iter_frames(NO_FACE_VIDEO, 1.0))[1]
    cv2.imwrite(str(tmp_path / "no_face.jpg"), frame)
    shutil.copy(HAPPY, tmp_path / "happy.flac")
    shutil.copy(MEDIA / "single_face.jpg", tmp_path / "face.jpg")
    (tmp_path / "m.csv").write_text("path,emotion\nno_face.jpg,neutral\nhappy.flac,joy\nface.jpg,joy\n")
    assert main(["-q", "evaluate", "--manifest", str(tmp_path / "m.csv"), "--modalities", "face",
                 "--report", str(tmp_path / "r.json")]) == 0
    reasons = {os.path.basename(s["path"]): s["reason"] for s in json.loads((tmp_path / "r.json").read_text())["skipped"]}
    assert "no face in the photo" in reasons["no_face.jpg"]
    assert "has no picture (sound only), and only the face was asked for" in reasons["happy.flac"]
    assert not any("damaged" in r for r in reasons.values())


def test_folder_scans_skip_hidden_files_and_resource_forks(tmp_path, capsys):
    shutil.copy(MEDIA / "single_face.jpg", tmp_path / "face.jpg")
    (tmp_path / "._face.jpg").write_bytes(b"\x00\x05\x16\x07" + bytes(60))  # what macOS leaves on other disks
    (tmp_path / ".hidden").mkdir()
    shutil.copy(MEDIA / "single_face.jpg", tmp_path / ".hidden" / "copy.jpg")
    assert main(["-q", "predict", str(tmp_path), "--format", "csv"]) == 0
    files = {line.split(",")[0] for line in capsys.readouterr().out.splitlines()[1:]}
    assert files == {str(tmp_path / "face.jpg")}


# ------------------------------------------------------------------ the API mirrors the CLI

@pytest.mark.parametrize("signal,rate,message", [
    (np.zeros(16000, np.float32), 0, "sampling_rate must be a positive number"),
    (np.zeros(16000, np.float32), -8000, "sampling_rate must be a positive number"),
    (np.zeros(0, np.float32), 16000, "the signal is empty"),
    (np.array([0.1, np.nan, np.inf] * 8000, np.float32), 16000, "16000 samples that are not numbers"),
])
def test_bad_signals_are_refused_clearly(model, signal, rate, message):
    with pytest.raises(AvemoError, match=message.replace("(", r"\(")):
        model.predict(signal, sampling_rate=rate)


def test_modalities_as_a_string_is_refused(model):
    with pytest.raises(AvemoError, match=r"modalities is a list, such as \['audio', 'face'\] or \['face'\]"):
        model.predict(MEDIA / "single_face.jpg", modalities="face")


def test_list_gives_the_same_results_and_failures_as_the_cli_batch(model, clips, tmp_path, capsys):
    files = [clips["speech_flac"], clips["empty"], MEDIA / "single_face.jpg"]
    out = model.predict(files)
    assert main(["-q", "predict", *map(str, files), "--out", str(tmp_path / "r.jsonl")]) == 1
    assert "empty file (0 bytes)" in capsys.readouterr().err and "empty file (0 bytes)" in str(out[1])
    rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    api = [(str(f), r.emotion, r.emotion_probs) for f, rs in zip(files, out) if not isinstance(rs, AvemoError) for r in rs]
    assert [(r["file"], r["emotion"], r["emotion_probs"]) for r in rows] == api


# ------------------------------------------------------------------ start-up

def test_version_and_quiet_after_the_command(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"avemo {avemo.__version__}"
    assert main(["predict", str(MEDIA / "single_face.jpg"), "-q", "--format", "csv"]) == 0
    assert capsys.readouterr().err == ""


def test_help_imports_neither_torch_nor_opencv():
    code = "import sys; from avemo.cli import main; import avemo; print(sorted({'torch', 'cv2', 'av'} & set(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
    help_ = subprocess.run([sys.executable, "-m", "avemo", "--help"], capture_output=True, text=True)
    assert help_.returncode == 0 and "predict" in help_.stdout


# ------------------------------------------------------------------ fuzz: a fixed set of broken and odd files

def _odd_files(clips, d):
    """Real media cut, garbled and shrunk in fixed ways (seeded), plus things that are not media."""
    rng = np.random.default_rng(9)
    video, voice, photo = clips["two_utterances"].read_bytes(), HAPPY.read_bytes(), (MEDIA / "single_face.jpg").read_bytes()
    files = {}
    for share in (0.002, 0.02, 0.2, 0.5, 0.9, 0.999):
        files[f"video_cut_{share}.mp4"] = video[: int(len(video) * share)]
    for share in (0.05, 0.5):
        files[f"voice_cut_{share}.flac"] = voice[: int(len(voice) * share)]
        files[f"photo_cut_{share}.jpg"] = photo[: int(len(photo) * share)]
    for name, data in (("garbled.mp4", video), ("garbled.flac", voice), ("garbled.jpg", photo)):
        spoilt = bytearray(data)
        at = rng.integers(len(data) // 10, len(data) // 2, 20)
        spoilt[at[0]:at[0] + 2000] = rng.integers(0, 256, 2000, dtype=np.uint8).tobytes()
        for a in at[1:]:
            spoilt[a] ^= 0xFF
        files[name] = bytes(spoilt)
    for suffix in (".mp4", ".wav", ".jpg", ".mov"):
        files[f"noise{suffix}"] = rng.integers(0, 256, 5000, dtype=np.uint8).tobytes()
    files["zeros.mp4"] = bytes(100_000)
    files["one_byte.wav"] = b"R"
    files["words.wav"] = b"RIFF and then some words, not a wave\n" * 10
    files["head_only.mp4"] = video[:64]
    waves = {name: np.clip(rng.standard_normal(samples) * (10 if name == "clipping.wav" else 0.1), -1, 1)
             for name, samples in (("no_samples.wav", 0), ("ten_ms.wav", 160), ("clipping.wav", 16000))}
    ok, dot = cv2.imencode(".png", np.full((1, 1), 128, np.uint8))
    files["one_pixel.png"] = dot.tobytes()
    ok, flat = cv2.imencode(".jpg", np.full((480, 640), 90, np.uint8))
    files["grey_wall.jpg"] = flat.tobytes()
    paths = []
    for name, data in files.items():
        (d / name).write_bytes(data)
        paths.append(d / name)
    paths += [write_wav(d / name, wave) for name, wave in waves.items()]
    paths.append(mux_clip(FACE_VIDEO, [(0.0, HAPPY)], d / "one_frame.mp4", duration=0.05))
    paths.append(mux_clip(NO_FACE_VIDEO, None, d / "music_picture_no_sound.mp4", duration=2.0))
    return paths


def test_fuzz_broken_and_odd_files_end_in_a_result_or_one_line(clips, tmp_path, capsys):
    outcomes = {}
    for path in _odd_files(clips, tmp_path):
        code = main(["-q", "predict", str(path), "--format", "json"])
        out, err = capsys.readouterr()
        assert code in (0, 1), f"{path.name}: exit {code}: {err}"
        assert "Traceback" not in err and "internal error" not in err, f"{path.name}: {err}"
        if code == 0:
            doc = json.loads(out, parse_constant=lambda token, name=path.name: pytest.fail(f"{name}: bare {token}"))
            assert doc["segments"] and all(s["end"] >= s["start"] >= 0 for s in doc["segments"]), path.name
        else:
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"avemo: error: {path}: "), f"{path.name}: {err}"
        outcomes[path.name] = code
    # the cut-offs that keep their start still give what decoded; nothing from noise
    assert outcomes["video_cut_0.9.mp4"] == 0 and outcomes["noise.mp4"] == 1 and outcomes["one_byte.wav"] == 1
    assert outcomes["one_pixel.png"] == 1 and outcomes["grey_wall.jpg"] == 1  # no face to judge in either


def test_a_real_flv_of_a_persons_own_face_and_voice_is_read_together(model):
    """CREMA-D's FLV (VP6 + MP3): a format that cannot seek back, read once per stream."""
    clip = MEDIA.parent / "av_clips" / "1001_DFA_NEU_XX.flv"
    info = probe(clip)
    assert info.has_audio and info.has_video and (info.width, info.height) == (480, 360)
    (seg,) = model.predict(clip)
    assert seg.modalities == ["audio", "face"] and seg.faces == 1
