import pytest

from avemo.errors import AvemoError
from avemo.labels import EMOTIONS, SENTIMENTS, UNKNOWN
from avemo.training.datasets import load_spec
from avemo.training.splits import split_items

from ..conftest import DATA


def test_ravdess_codes_and_actors():
    items = load_spec(f"ravdess:{DATA / 'ravdess_speech'}")
    assert len(items) == 1200
    assert len({i.speaker for i in items}) == 20
    calm = [i for i in items if i.path.name.startswith("03-01-02")]
    assert {EMOTIONS[i.emotion] for i in calm} == {"neutral"}
    surprised = [i for i in items if i.path.name.startswith("03-01-08")]
    assert {i.sentiment for i in surprised} == {UNKNOWN}


def test_tess_and_fer2013():
    tess = load_spec(f"tess:{DATA / 'tess'}")
    assert len(tess) == 2800 and {i.speaker for i in tess} == {"tess-OAF", "tess-YAF"}
    fer = load_spec(f"fer2013:{DATA / 'fer2013'}")
    assert {i.split for i in fer} == {"train", "val"} and all(i.modality == "face" for i in fer)


def test_manifest(tmp_path):
    (tmp_path / "m.csv").write_text("path,emotion,sentiment,speaker\na.wav,joy,,s1\nb.jpg,anger,negative,s2\n")
    a, b = load_spec(f"manifest:{tmp_path / 'm.csv'}")
    assert a.path == tmp_path / "a.wav" and SENTIMENTS[a.sentiment] == "positive" and a.modality == "audio"
    assert EMOTIONS[b.emotion] == "anger" and b.modality == "face"
    (tmp_path / "bad.csv").write_text("path,emotion\nc.wav,bored\n")
    with pytest.raises(AvemoError, match="bad.csv:2: unknown emotion"):
        load_spec(f"manifest:{tmp_path / 'bad.csv'}")


def test_bad_specs(tmp_path):
    with pytest.raises(AvemoError, match="KIND:PATH"):
        load_spec("meld")
    with pytest.raises(AvemoError, match="does not exist"):
        load_spec(f"tess:{tmp_path / 'nope'}")


def test_splits_never_share_a_speaker():
    items = load_spec(f"ravdess:{DATA / 'ravdess_speech'}") + load_spec(f"tess:{DATA / 'tess'}")
    splits = split_items(items)
    speakers = {k: {i.speaker for i in v} for k, v in splits.items()}
    assert not speakers["train"] & speakers["val"] and not speakers["train"] & speakers["test"]
    assert not speakers["val"] & speakers["test"]
    assert len(speakers["test"]) == 4 and len(speakers["val"]) == 2
    # a corpus holds out the same speakers whatever corpora are given beside it
    alone = split_items([i for i in items if i.corpus == "ravdess"])
    assert {i.speaker for i in alone["test"]} == speakers["test"]


def test_crema_d_file_name_codes(tmp_path):
    # CREMA-D can't be had here: real RAVDESS recordings stand in, named in CREMA-D's scheme
    src = sorted((DATA / "ravdess_speech" / "Actor_01").glob("*.flac"))
    for name, f in zip(["1001_DFA_ANG_XX.flac", "1001_IEO_HAP_HI.flac", "1002_TIE_NEU_XX.flac", "1002_TIE_XYZ_XX.flac",
                        "README.flac"], src):
        (tmp_path / name).write_bytes(f.read_bytes())
    items = load_spec(f"crema-d:{tmp_path}")
    assert [(i.path.name, EMOTIONS[i.emotion], i.speaker) for i in items] == [
        ("1001_DFA_ANG_XX.flac", "anger", "crema-1001"),
        ("1001_IEO_HAP_HI.flac", "joy", "crema-1001"),
        ("1002_TIE_NEU_XX.flac", "neutral", "crema-1002"),
    ]


def test_meld_layout_pairs_csv_rows_with_clips(meld_fixture, caplog):
    items = load_spec(f"meld:{meld_fixture}")
    assert len(items) == 30 + 7 + 10
    assert "1 clips listed in the CSVs are missing" in caplog.text
    first = items[0]
    assert first.path.name == "dia0_utt0.mp4" and first.split == "train" and first.modality == "video"
    assert first.dialogue == "meld-train-0" and first.turn == 0
    assert EMOTIONS[first.emotion] == "neutral" and SENTIMENTS[first.sentiment] == "neutral"  # MELD's own labels
