"""recipes/default.sh: the one command that trains the shipped default model.

Training it takes hours, so here `avemo` is a stand-in on PATH that parses each call with
avemo's real parser (a misspelt flag fails as it would) and, for `train`, only writes the
finished model's config.json. What is tested is the recipe itself: that its stages chain
(each starts from the one before), name corpora that exist, describe the shipped
architecture, stop at a failing stage and resume after the finished ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from avemo.cli import build_parser

from ..conftest import DATA, REPO

RECIPE = REPO / "recipes" / "default.sh"
STAGES = ["joint", "voice", "face1", "face2", "face3", "face4", "face_video", "voice_phone", "final"]

STAND_IN = f"""#!{sys.executable}
import json, os, sys
from pathlib import Path
from avemo.cli import build_parser
args = build_parser().parse_args(sys.argv[1:])
with open(os.environ["CALLS"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
if args.command == "train":
    if Path(args.out).name == os.environ.get("FAIL_AT"):
        sys.exit(1)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "config.json").write_text("{{}}")
"""


def _run(tmp_path: Path, fail_at: str = "") -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    stand_in = bin_dir / "avemo"
    stand_in.write_text(STAND_IN)
    stand_in.chmod(0o755)
    calls = tmp_path / "calls.jsonl"
    calls.unlink(missing_ok=True)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "CALLS": str(calls), "FAIL_AT": fail_at}
    done = subprocess.run(["bash", str(RECIPE), str(DATA), str(tmp_path / "out")], env=env, capture_output=True, text=True)
    return done, [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []


def _value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_the_stages_chain_each_from_the_one_before_on_corpora_that_exist(tmp_path):
    done, calls = _run(tmp_path)
    assert done.returncode == 0, done.stderr
    trains = [c for c in calls if c[0] == "train"]
    assert [Path(_value(c, "--out")).name for c in trains] == STAGES
    assert "--init" not in trains[0]  # from nothing but the corpora
    for before, after in zip(trains, trains[1:]):
        assert _value(after, "--init") == _value(before, "--out")
    assert "--warm" not in trains[1] and "--warm" not in trains[2]  # a fresh voice, then a fresh face
    assert all("--warm" in c for c in trains[3:-1])  # the face's further cycles, then the face and voice as recorded
    assert not any(a.startswith("fer2013:") for a in trains[-2]) and any(a.startswith("ravdess:") for a in trains[-2])
    assert _value(trains[-1], "--epochs") == "0"
    data = {c[i + 1] for c in trains for i, arg in enumerate(c) if arg == "--data"}
    kinds = {spec.split(":", 1)[0] for spec in data}
    assert {"ravdess", "tess", "fer2013", "manifest"} == kinds and len(data) == 11
    for spec in data:
        assert Path(spec.split(":", 1)[1]).exists(), spec
    assert calls[-1][:4] == ["export", "--onnx", str(tmp_path / "out" / "final"), "--model"]
    assert calls[-1][4:7] == [str(tmp_path / "out" / "final"), "--int8", "face,encoder"]  # int8 where it keeps the answers
    assert Path(_value(calls[-1], "--calibration")).is_dir()  # real faces to calibrate the face CNN's int8 ranges on


def test_the_first_stage_describes_the_shipped_architecture(tmp_path):
    _, calls = _run(tmp_path)
    args = vars(build_parser().parse_args(calls[0]))
    shipped = json.loads((REPO / "src" / "avemo" / "assets" / "default" / "config.json").read_text())["architecture"]
    named = [k for k in args if k in shipped]
    assert {"audio_front", "whisper_layers", "whisper_stack", "voiceprint", "face_blocks", "face_mirror"} <= set(named)
    assert {k: args[k] for k in named} == {k: shipped[k] for k in named}


def test_a_failed_stage_stops_the_recipe_and_a_rerun_goes_on_from_it(tmp_path):
    done, calls = _run(tmp_path, fail_at="face3")
    assert done.returncode != 0
    assert [Path(_value(c, "--out")).name for c in calls] == ["joint", "voice", "face1", "face2", "face3"]
    done, calls = _run(tmp_path)
    assert done.returncode == 0, done.stderr
    assert [Path(_value(c, "--out")).name for c in calls if c[0] == "train"] == STAGES[STAGES.index("face3"):]
    assert "joint is finished; skipped" in done.stdout
