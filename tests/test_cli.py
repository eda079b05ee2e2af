"""The command line as a user types it: output formats, batch behaviour, one-line errors."""

import json
import subprocess
import sys

import pytest

from avemo.cli import main

from .conftest import MEDIA, REPO


def test_json_to_stdout(clips, capsys):
    assert main(["predict", str(clips["talking_face"]), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["file"] == str(clips["talking_face"]) and doc["segments"][0]["modalities"] == ["audio", "face"]


def test_srt_and_csv_files_by_suffix(clips, tmp_path, capsys):
    assert main(["predict", str(clips["two_utterances"]), "--out", str(tmp_path / "r.srt")]) == 0
    srt = (tmp_path / "r.srt").read_text()
    assert srt.startswith("1\n00:00:00,000 --> ") and "[audio+face]" in srt
    assert main(["predict", str(clips["two_utterances"]), "--out", str(tmp_path / "r.csv")]) == 0
    assert (tmp_path / "r.csv").read_text().splitlines()[0].startswith("file,start,end,person,emotion,")


def test_every_gives_fixed_windows_and_excludes_segments(clips, tmp_path, capsys):
    assert main(["predict", str(clips["talking_face"]), "--every", "1", "--format", "csv"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert [r.split(",")[1:3] for r in rows] == [[f"{a}.000", f"{a + 1}.000"] for a in range(5)]
    (tmp_path / "s.csv").write_text("start,end\n0,1\n")
    assert main(["predict", str(clips["talking_face"]), "--every", "1", "--segments", str(tmp_path / "s.csv")]) == 1
    assert "give --segments or --every, not both" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
def test_an_interrupted_batch_resumes_where_it_stopped(clips, tmp_path, capsys, suffix):
    files = [str(MEDIA / "single_face.jpg"), str(clips["speech_flac"]), str(clips["two_utterances"])]
    out = tmp_path / f"r.{suffix}"
    assert main(["-q", "predict", *files, "--out", str(out)]) == 0
    whole = out.read_text()
    lines = whole.splitlines(keepends=True)
    assert sum(files[2] in line for line in lines) >= 3  # the last file's rows are written one by one
    # as if killed while writing the last file's rows: cut off after its first row, then inside its second
    first_row = next(i for i, line in enumerate(lines) if files[2] in line)
    for cut in ("".join(lines[:first_row + 1]), "".join(lines[:first_row + 1]) + lines[first_row + 1][:25]):
        out.write_text(cut)
        assert main(["predict", *files, "--out", str(out), "--resume"]) == 0
        assert "resuming: 2 files already in" in capsys.readouterr().err
        assert out.read_text() == whole
    assert main(["predict", files[0], "--resume"]) == 1  # nothing to resume into
    assert "--resume goes on with an --out file" in capsys.readouterr().err


def test_folder_batch_reports_bad_file_and_finishes_the_rest(clips, tmp_path, capsys):
    folder = tmp_path / "batch"
    folder.mkdir()
    for name in ("speech_flac", "text_as_mp4", "talking_face"):
        (folder / clips[name].name).write_bytes(clips[name].read_bytes())
    code = main(["predict", str(folder), "--out", str(tmp_path / "all.csv")])
    err = capsys.readouterr().err
    assert code == 1
    assert "notes.mp4: not a readable media file" in err and "1 of 3 files failed" in err
    rows = (tmp_path / "all.csv").read_text().splitlines()[1:]
    assert {r.split(",")[0].rsplit("/", 1)[-1] for r in rows} == {"speech.flac", "talking_face.mp4"}


@pytest.mark.parametrize("args,message", [
    (["predict", "/no/such/clip.mp4"], "avemo: error: /no/such/clip.mp4: no such file"),
    (["predict", str(MEDIA / "no_face.mp4")], "nothing to analyse: no speech and no face in any frame"),
    (["predict", str(MEDIA / "single_face.jpg"), "--model", "/no/model"], "not a model folder"),
    (["predict", str(REPO / "examples" / "sample.mp4"), "--normalise", "none"],
     "this model reads voices beside their speaker's statistics: normalise by file or segment (evaluate: or speaker), not none"),
    (["train", "--data", f"ravdess:{MEDIA}", "--whisper-stack", "--out", "/tmp/never"],
     "--voiceprint and --whisper-stack need --audio-front whisper"),
])
def test_user_errors_are_one_line_and_exit_1(args, message, capsys):
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_console_script_exits_nonzero_without_traceback(clips):
    proc = subprocess.run([sys.executable, "-m", "avemo", "predict", str(clips["empty"])], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().endswith("empty file (0 bytes)") and "Traceback" not in proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize("command", ["train", "export"])
def test_commands_that_need_torch_say_so_in_one_line_without_it(command, tmp_path):
    """train and export in a process that cannot import torch (the default, ONNX-only install)."""
    args = {"train": ["train", "--data", f"ravdess:{MEDIA}", "--out", str(tmp_path / "out")],
            "export": ["export", "--onnx", str(tmp_path / "out")]}[command]
    code = ("import sys; sys.modules['torch'] = None\n"  # any import of torch now fails
            "from avemo.cli import main\n"
            f"sys.exit(main({args!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert out.stderr.strip() == f"avemo: error: {command} needs torch: pip install 'avemo[train]' (torch is missing)"


def test_train_options_default_to_the_model_config():
    # the parser keeps its own copies of ModelConfig's defaults (importing config.py would slow --help):
    # a default changed in one place and not the other would train another model than the card says
    from avemo.cli import build_parser
    from avemo.config import ModelConfig

    args = vars(build_parser().parse_args(["train", "--data", "ravdess:x", "--out", "o"]))
    default = ModelConfig()
    shared = [name for name in args if hasattr(default, name)]
    assert {"max_faces", "face_channels", "face_blocks", "whisper_layers", "voice_norm", "audio_front"} <= set(shared)
    assert {name: args[name] for name in shared} == {name: getattr(default, name) for name in shared}
    assert args["arch"] == default.rnn


def test_train_optimiser_options_default_to_the_training_settings():
    pytest.importorskip("torch")  # TrainSettings lives with the training code
    from avemo.cli import build_parser
    from avemo.training.train import TrainSettings

    args = build_parser().parse_args(["train", "--data", "ravdess:x", "--out", "o"])
    assert (args.patience, args.lr, args.weight_decay) == (TrainSettings.patience, TrainSettings.lr, TrainSettings.weight_decay)
    assert build_parser().parse_args(["train", "--data", "ravdess:x", "--out", "o", "--patience", "40"]).patience == 40
