"""Output writers, one per format: table (for people), JSON, CSV, SRT (subtitles beside the video).

Each takes {file: [SegmentResult, ...]} and a text stream, so the CLI can write to
stdout or a file alike. JSON is `{"file": ..., "segments": [...]}` for one file and a
list of such objects for several.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from typing import TextIO

from .labels import EMOTIONS, SENTIMENTS
from .predict import SegmentResult

Results = dict[str, list[SegmentResult]]


def write_json(results: Results, out: TextIO) -> None:
    docs = [{"file": f, "segments": [r.to_dict() for r in rs]} for f, rs in results.items()]
    json.dump(docs[0] if len(docs) == 1 else docs, out, indent=2)
    out.write("\n")


def write_csv(results: Results, out: TextIO) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["file", "start", "end", "emotion", *(f"emotion_{e}" for e in EMOTIONS),
                     "sentiment", *(f"sentiment_{s}" for s in SENTIMENTS), "modalities", "faces",
                     "face_x", "face_y", "face_w", "face_h"])
    for f, rs in results.items():
        for r in rs:
            writer.writerow([f, f"{r.start:.3f}", f"{r.end:.3f}", r.emotion, *(f"{r.emotion_probs[e]:.4f}" for e in EMOTIONS),
                             r.sentiment, *(f"{r.sentiment_probs[s]:.4f}" for s in SENTIMENTS), "+".join(r.modalities), r.faces,
                             *(r.face_box or [""] * 4)])


def _srt_time(t: float) -> str:
    ms = int(round(t * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def _label(r: SegmentResult) -> str:
    return (f"{r.emotion} ({r.emotion_probs[r.emotion]:.2f}) · {r.sentiment} ({r.sentiment_probs[r.sentiment]:.2f})"
            f" [{'+'.join(r.modalities)}]")


def write_srt(results: Results, out: TextIO) -> None:
    """One cue per segment. A still image (start == end) gets a one-second cue."""
    n = 0
    for rs in results.values():
        for r in rs:
            n += 1
            end = r.end if r.end > r.start else r.start + 1.0
            out.write(f"{n}\n{_srt_time(r.start)} --> {_srt_time(end)}\n{_label(r)}\n\n")


def write_table(results: Results, out: TextIO) -> None:
    for f, rs in results.items():
        out.write(f"{f}\n")
        out.write(f"  {'start':>8} {'end':>8}  {'emotion':<16} {'sentiment':<16} {'modalities':<11} faces\n")
        for r in rs:
            emo = f"{r.emotion} {r.emotion_probs[r.emotion]:.2f}"
            sent = f"{r.sentiment} {r.sentiment_probs[r.sentiment]:.2f}"
            out.write(f"  {r.start:8.2f} {r.end:8.2f}  {emo:<16} {sent:<16} {'+'.join(r.modalities):<11} {r.faces}\n")


WRITERS: dict[str, Callable[[Results, TextIO], None]] = {
    "table": write_table, "json": write_json, "csv": write_csv, "srt": write_srt,
}
