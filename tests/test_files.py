import pytest

from avemo.files import written_whole


def test_a_file_is_replaced_only_once_written_whole(tmp_path):
    out = tmp_path / "deep" / "results.csv"
    with written_whole(out) as tmp:
        assert tmp.suffix == ".csv" and tmp.parent == out.parent  # the writer sees the format it writes
        tmp.write_text("file,start\na.mp4,0.0\n")
    assert out.read_text() == "file,start\na.mp4,0.0\n"
    with pytest.raises(KeyboardInterrupt), written_whole(out) as tmp:
        tmp.write_text("file,st")  # interrupted half-way
        raise KeyboardInterrupt
    assert out.read_text() == "file,start\na.mp4,0.0\n"  # the finished file is untouched
    assert sorted(p.name for p in out.parent.iterdir()) == ["results.csv"]  # and nothing is left behind
