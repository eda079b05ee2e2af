import csv
import io
import json

from avemo.labels import EMOTIONS
from avemo.predict import SegmentResult
from avemo.writers import write_csv, write_json, write_srt, write_table


def _result(start, end, emotion="joy"):
    probs = {e: (0.4 if e == emotion else 0.1) for e in EMOTIONS}
    return SegmentResult(start, end, emotion, probs, "positive", {"positive": 0.7, "neutral": 0.2, "negative": 0.1},
                         ["audio", "face"], 1, [120, 40, 96, 96])


RESULTS = {"talk.mp4": [_result(0.0, 2.5), _result(3.25, 3661.5, "anger")]}


def _write(writer, results=RESULTS):
    buf = io.StringIO()
    writer(results, buf)
    return buf.getvalue()


def test_json_has_file_and_segments_with_exact_keys():
    doc = json.loads(_write(write_json))
    assert set(doc) == {"file", "segments", "people"} and doc["file"] == "talk.mp4" and len(doc["segments"]) == 2
    assert set(doc["segments"][1]) == {"start", "end", "emotion", "emotion_probs", "sentiment", "sentiment_probs",
                                       "modalities", "faces", "face_box", "person", "link"}
    assert doc["people"] == []  # no one told apart
    assert doc["segments"][0]["face_box"] == [120, 40, 96, 96]
    many = json.loads(_write(write_json, {"a.mp4": RESULTS["talk.mp4"], "b.wav": RESULTS["talk.mp4"][:1]}))
    assert [d["file"] for d in many] == ["a.mp4", "b.wav"]


def test_csv_one_row_per_segment():
    rows = list(csv.DictReader(io.StringIO(_write(write_csv))))
    assert len(rows) == 2
    assert rows[1]["emotion"] == "anger" and rows[1]["end"] == "3661.500" and rows[1]["modalities"] == "audio+face"
    assert [rows[1][k] for k in ("face_x", "face_y", "face_w", "face_h")] == ["120", "40", "96", "96"]
    assert float(rows[0]["emotion_joy"]) == 0.4


def test_srt_cues_are_timed_and_labelled():
    text = _write(write_srt)
    cues = text.strip().split("\n\n")
    assert len(cues) == 2
    assert cues[1].splitlines()[:2] == ["2", "00:00:03,250 --> 01:01:01,500"]
    assert cues[0].splitlines()[2].startswith("joy (0.40) · positive (0.70) [audio+face]")


def test_table_lists_every_segment():
    lines = _write(write_table).splitlines()
    assert lines[0] == "talk.mp4" and len(lines) == 4
    assert "anger 0.40" in lines[3]
