"""The Ray engine, against a local Ray instance the test starts (no cluster needed)."""

import numpy as np
import pandas as pd
import pytest

ray = pytest.importorskip("ray")  # the [ray] extra

import avemo
from avemo.cli import main


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_ray_engine_gives_the_local_results_and_records_failures(local_ray, clips, tmp_path):
    good = [clips["talking_face"], clips["speech_no_face"]]
    manifest = tmp_path / "files.csv"
    manifest.write_text("path\n" + "".join(f"{p}\n" for p in [*good, clips["empty"]]))
    out = tmp_path / "results.parquet"
    assert main(["-q", "predict", "--engine", "ray", str(manifest), "--out", str(out)]) == 1  # one file failed
    table = pd.read_parquet(out)
    assert table.index.names == ["file", "start", "end"]
    failed = table[table["error"].notna()]
    assert list(failed.index.get_level_values("file")) == [str(clips["empty"])] and "empty file" in failed["error"].iloc[0]

    local = avemo.load_model().predict([str(p) for p in good], as_frame=True)
    remote = table[table["error"].isna()].drop(columns="error")
    assert list(remote.index) == list(local.index)
    assert (remote["emotion"] == local["emotion"]).all() and (remote["modalities"] == local["modalities"]).all()
    probs = [c for c in local.columns if c.startswith(("emotion_", "sentiment_"))]
    assert np.allclose(remote[probs].to_numpy(float), local[probs].to_numpy(float), atol=2e-3)


def test_ray_engine_wants_a_parquet_output(clips, tmp_path, capsys):
    assert main(["predict", "--engine", "ray", str(clips["talking_face"]), "--out", str(tmp_path / "r.csv")]) == 1
    assert "--engine ray writes Parquet" in capsys.readouterr().err


def test_an_interrupted_ray_run_resumes_without_redoing_finished_files(local_ray, clips, tmp_path, capsys):
    from avemo.distribute import part_path

    files = [str(clips["talking_face"]), str(clips["speech_no_face"])]
    out = tmp_path / "results.parquet"
    assert main(["predict", "--engine", "ray", *files, "--out", str(out)]) == 0
    whole = pd.read_parquet(out)
    assert not part_path(out, files[0]).parent.exists()  # the parts go once the table is written
    # as if killed after the first file: its rows are kept as a part (marked here, to see it is not redone)
    part_path(out, files[0]).parent.mkdir()
    whole.loc[[files[0]]].reset_index().assign(emotion="kept").to_parquet(part_path(out, files[0]))
    assert main(["predict", "--engine", "ray", *files, "--out", str(out), "--resume"]) == 0
    assert "resuming: 1 of 2 files already done" in capsys.readouterr().err
    again = pd.read_parquet(out)
    assert list(again.index) == list(whole.index)
    assert (again.loc[[files[0]], "emotion"] == "kept").all()  # taken from its part, not analysed again
    assert (again.loc[[files[1]], "emotion"] == whole.loc[[files[1]], "emotion"]).all()
