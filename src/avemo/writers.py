"""Output writers, one per format: table (for people), JSON, CSV, SRT (subtitles beside the video).

Each takes {file: [SegmentResult, ...]} and a text stream, so the CLI can write to
stdout or a file alike. JSON is `{"file": ..., "segments": [...]}` for one file and a
list of such objects for several.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TextIO

from .labels import EMOTIONS, SENTIMENTS
from .predict import SegmentResult

Results = dict[str, list[SegmentResult]]


def write_json(results: Results, out: TextIO) -> None:
    docs = [{"file": f, "segments": [r.to_dict() for r in rs]} for f, rs in results.items()]
    json.dump(docs[0] if len(docs) == 1 else docs, out, indent=2)
    out.write("\n")


def write_jsonl(results: Results, out: TextIO) -> None:
    """One JSON object per segment and line, with its file: appendable, file by file."""
    for f, rs in results.items():
        out.write("".join(json.dumps({"file": f, **r.to_dict()}) + "\n" for r in rs))


def write_csv(results: Results, out: TextIO, header: bool = True) -> None:
    writer = csv.writer(out, lineterminator="\n")
    if header:
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


WRITERS: dict[str, Callable[..., None]] = {
    "table": write_table, "json": write_json, "jsonl": write_jsonl, "csv": write_csv, "srt": write_srt,
}
#: Formats written file by file as results come (an interrupted batch can resume): their row writers.
STREAMED: dict[str, Callable[[Results, TextIO], None]] = {
    "csv": partial(write_csv, header=False), "jsonl": write_jsonl,
}


def _jsonl_file(cut: str, lines: list[str]) -> str:
    """The file a cut-off JSONL line was about (its first key); the line before's if unreadable."""
    match = re.match(r'\{"file": ("(?:[^"\\]|\\.)*")', cut)
    if match:
        return json.loads(match.group(1))
    return json.loads(lines[-2])["file"] if len(lines) > 1 else ""


def finished_files(path: Path, fmt: str) -> set[str]:
    """The files an earlier, perhaps interrupted, csv/jsonl output holds in full.

    Each file's rows are written in one go, so only the last can be cut off: a last
    line without its newline is taken as an unfinished file, whose rows are removed
    (the file is rewritten atomically) so that resuming analyses it again.
    """
    if not path.is_file() or path.stat().st_size == 0:
        return set()
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    if fmt == "csv":
        head, rows = lines[:1], lines[1:]
        files = [r["file"] for r in csv.DictReader(head + rows)]
    else:
        head, rows = [], lines
        files = [json.loads(line)["file"] if line.endswith("\n") else _jsonl_file(line, lines) for line in rows]
    if rows and not rows[-1].endswith("\n"):
        keep = [r for r, f in zip(rows[:-1], files[:-1]) if f != files[-1]]
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(head + keep), encoding="utf-8")
        tmp.replace(path)
        files = [f for f in files[:-1] if f != files[-1]]
    return set(files)
