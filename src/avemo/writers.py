"""Output writers, one per format: table (for people), JSON, JSON lines, CSV, SRT (subtitles beside the video).

Each takes {file: [SegmentResult, ...]} and a text stream, so the CLI can write to
stdout or a file alike; table, CSV and JSON lines can be written a segment at a time.
JSON is `{"file": ..., "segments": [...], "people": [...]}` for one file and a list of such
objects for several; `people` summarises each person told apart (`people.people_summary`; empty
where no one was).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TextIO

from .errors import AvemoError
from .files import written_whole
from .labels import EMOTIONS, SENTIMENTS
from .people import people_summary
from .predict import SegmentResult

Results = dict[str, list[SegmentResult]]


def write_json(results: Results, out: TextIO) -> None:
    docs = [{"file": f, "segments": [r.to_dict() for r in rs], "people": people_summary(rs)} for f, rs in results.items()]
    # strict JSON (no bare NaN or Infinity), which JSON.parse and every other reader accept
    json.dump(docs[0] if len(docs) == 1 else docs, out, indent=2, allow_nan=False)
    out.write("\n")


def write_jsonl(results: Results, out: TextIO) -> None:
    """One JSON object per segment and line, with its file: appendable, file by file."""
    for f, rs in results.items():
        out.write("".join(json.dumps({"file": f, **r.to_dict()}, allow_nan=False) + "\n" for r in rs))


CSV_HEADER = ["file", "start", "end", "person", "emotion", *(f"emotion_{e}" for e in EMOTIONS), "sentiment",
              *(f"sentiment_{s}" for s in SENTIMENTS), "modalities", "faces", "face_x", "face_y", "face_w", "face_h"]


def write_csv(results: Results, out: TextIO, header: bool = True) -> None:
    writer = csv.writer(out, lineterminator="\n")
    if header:
        writer.writerow(CSV_HEADER)
    for f, rs in results.items():
        for r in rs:
            writer.writerow([f, f"{r.start:.3f}", f"{r.end:.3f}", r.person or "", r.emotion,
                             *(f"{r.emotion_probs[e]:.4f}" for e in EMOTIONS), r.sentiment,
                             *(f"{r.sentiment_probs[s]:.4f}" for s in SENTIMENTS), "+".join(r.modalities), r.faces,
                             *(r.face_box or [""] * 4)])


def _srt_time(t: float) -> str:
    ms = int(round(t * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def _label(r: SegmentResult) -> str:
    return (f"{r.person + ': ' if r.person else ''}{r.emotion} ({r.emotion_probs[r.emotion]:.2f}) · "
            f"{r.sentiment} ({r.sentiment_probs[r.sentiment]:.2f}) [{'+'.join(r.modalities)}]")


def write_srt(results: Results, out: TextIO) -> None:
    """One cue per segment. A still image (start == end) gets a one-second cue."""
    n = 0
    for rs in results.values():
        for r in rs:
            n += 1
            end = r.end if r.end > r.start else r.start + 1.0
            out.write(f"{n}\n{_srt_time(r.start)} --> {_srt_time(end)}\n{_label(r)}\n\n")


def write_table(results: Results, out: TextIO, header: bool = True, people: bool = False) -> None:
    """Each file's name and column heads (`header`), then a line per segment; with `people`, a
    column of whose voice each segment is."""
    who = f"{'person':<6} " if people else ""
    for f, rs in results.items():
        if header:
            out.write(f"{f}\n")
            out.write(f"  {'start':>8} {'end':>8}  {who}{'emotion':<16} {'sentiment':<16} {'modalities':<11} faces\n")
        for r in rs:
            emo = f"{r.emotion} {r.emotion_probs[r.emotion]:.2f}"
            sent = f"{r.sentiment} {r.sentiment_probs[r.sentiment]:.2f}"
            person = f"{r.person or '-':<6} " if people else ""
            out.write(f"  {r.start:8.2f} {r.end:8.2f}  {person}{emo:<16} {sent:<16} {'+'.join(r.modalities):<11} "
                      f"{r.faces}\n")


def write_people(results: list[SegmentResult], out: TextIO) -> None:
    """The table's per-person summary of one file, after its segments (nothing where no one was told apart)."""
    for p in people_summary(results):
        out.write(f"  {p['person']}: {p['speaking_s']:.1f} s speaking in {p['segments']} segment{'s' * (p['segments'] != 1)}; "
                  f"{p['emotion']} {p['emotion_probs'][p['emotion']]:.2f}, {p['sentiment']} "
                  f"{p['sentiment_probs'][p['sentiment']]:.2f} over them\n")


WRITERS: dict[str, Callable[..., None]] = {
    "table": write_table, "json": write_json, "jsonl": write_jsonl, "csv": write_csv, "srt": write_srt,
}
#: Formats written segment by segment as results come: their row writers. A long video's rows
#: appear (and are flushed) while it is analysed.
STREAMED: dict[str, Callable[[Results, TextIO], None]] = {
    "csv": partial(write_csv, header=False), "jsonl": write_jsonl, "table": partial(write_table, header=False),
}
#: Streamed formats an interrupted batch can resume from (`finished_files`).
RESUMABLE = ("csv", "jsonl")


def finished_files(path: Path, fmt: str) -> set[str]:
    """The files an earlier, perhaps interrupted, csv/jsonl output holds in full.

    Files are written one after another, segment by segment, so only the last file there
    may be unfinished (cut off between its segments, or inside a line): a line cut off is
    dropped, the rows of the last file left are removed (the output is rewritten
    atomically), and that file is analysed again on resuming.
    """
    if not path.is_file() or path.stat().st_size == 0:
        return set()
    try:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    except UnicodeDecodeError:
        raise AvemoError(f"--resume: {path} is not a {fmt.upper()} file avemo wrote (not text)") from None
    head = lines[:1] if fmt == "csv" else []
    if fmt == "csv" and next(csv.reader(head), None) != CSV_HEADER:
        raise AvemoError(f"--resume: {path} is not a CSV avemo wrote (its header differs); give another --out")
    rows = [line for line in lines[len(head):] if line.endswith("\n")]
    try:
        files = [r["file"] for r in csv.DictReader(head + rows)] if fmt == "csv" else [json.loads(r)["file"] for r in rows]
    except (ValueError, KeyError, TypeError):
        raise AvemoError(f"--resume: {path} is not a JSONL file avemo wrote (a line is not one of its results)") from None
    unfinished = files[-1] if files else None
    with written_whole(path) as tmp:
        tmp.write_text("".join(head + [r for r, f in zip(rows, files) if f != unfinished]), encoding="utf-8")
    return set(files) - {unfinished}
