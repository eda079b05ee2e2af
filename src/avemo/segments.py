"""Segmentation: where in a file the analysed stretches lie.

Speech regions come from silero-vad's bundled ONNX model (run here on onnxruntime,
~10 ms per second of audio), merged across short pauses and split when longer than
an utterance. A short clip (a MELD utterance) is one segment. Stretches without
speech that are long enough become face-only windows, so a silent video is still
covered end to end. Users may also give their own times (CSV or SRT).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import AvemoError

VAD_CHUNK = 512  # samples at 16 kHz (32 ms), the ONNX model's frame
VAD_CONTEXT = 64  # samples of the previous chunk the model sees before each chunk
VAD_HOP_S = VAD_CHUNK / 16000


@dataclass(frozen=True)
class Segment:
    """A stretch of a file to analyse; `speech` says whether the VAD heard a voice in it."""

    start: float
    end: float
    speech: bool = True

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class SegmentationSettings:
    """How speech regions become segments."""

    threshold: float = 0.5  # speech probability that opens a region
    min_speech_s: float = 0.25  # shorter regions are noise
    merge_gap_s: float = 0.6  # pauses shorter than this stay inside one utterance
    pad_s: float = 0.1  # kept before and after each region
    max_segment_s: float = 10.0  # longer regions are split evenly
    single_clip_s: float = 10.0  # a file this short with speech is one segment
    window_s: float = 5.0  # length of face-only windows where no one speaks
    min_window_s: float = 1.0  # shorter silent gaps get no window


@lru_cache(maxsize=1)
def _vad_session():
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    path = resources.files("silero_vad") / "data" / "silero_vad.onnx"
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def speech_probabilities(wave: np.ndarray) -> np.ndarray:
    """Silero's speech probability for each 32 ms chunk of a 16 kHz signal."""
    session = _vad_session()
    n = len(wave) // VAD_CHUNK
    state = np.zeros((2, 1, 128), dtype=np.float32)
    context = np.zeros(VAD_CONTEXT, dtype=np.float32)
    sr = np.array(16000, dtype=np.int64)
    probs = np.empty(n, dtype=np.float32)
    for i in range(n):
        chunk = wave[i * VAD_CHUNK : (i + 1) * VAD_CHUNK].astype(np.float32, copy=False)
        x = np.concatenate([context, chunk])[None, :]
        out, state = session.run(None, {"input": x, "state": state, "sr": sr})
        probs[i] = out[0, 0]
        context = chunk[-VAD_CONTEXT:]
    return probs


def speech_regions(wave: np.ndarray, settings: SegmentationSettings = SegmentationSettings()) -> list[tuple[float, float]]:
    """(start, end) seconds of speech, with hysteresis so a region doesn't flicker."""
    probs = speech_probabilities(wave)
    regions: list[list[float]] = []
    on = False
    for i, p in enumerate(probs):
        t = i * VAD_HOP_S
        if not on and p >= settings.threshold:
            on = True
            regions.append([t, t + VAD_HOP_S])
        elif on:
            if p >= settings.threshold - 0.15:
                regions[-1][1] = t + VAD_HOP_S
            else:
                on = False
    merged: list[list[float]] = []
    for start, end in regions:
        if merged and start - merged[-1][1] < settings.merge_gap_s:
            merged[-1][1] = end
        else:
            merged.append([start, end])
    total = len(wave) / 16000
    return [
        (max(0.0, s - settings.pad_s), min(total, e + settings.pad_s))
        for s, e in merged
        if e - s >= settings.min_speech_s
    ]


def speech_span(start: float, end: float, speech: list[tuple[float, float]], min_speech: float) -> tuple[float, float] | None:
    """From the first to the last speech inside [start, end), or None with less than
    `min_speech` seconds of speech there.

    Why: the voice branch always sees a segment's speech span, however the segment was
    made (VAD, the user's times, a whole training file), so its per-utterance
    normalisation never mixes in different amounts of silence.
    """
    inside = [(max(start, s), min(end, e)) for s, e in speech if min(end, e) > max(start, s)]
    if sum(e - s for s, e in inside) < min_speech:
        return None
    return inside[0][0], inside[-1][1]


def split_long(start: float, end: float, max_len: float, speech: bool) -> list[Segment]:
    """Split [start, end) into equal pieces no longer than `max_len`."""
    pieces = max(1, int(np.ceil((end - start) / max_len - 1e-9)))
    step = (end - start) / pieces
    return [Segment(round(start + i * step, 3), round(start + (i + 1) * step, 3), speech) for i in range(pieces)]


def plan_segments(
    duration: float,
    speech: list[tuple[float, float]],
    with_video: bool,
    settings: SegmentationSettings = SegmentationSettings(),
) -> list[Segment]:
    """Turn speech regions into the segments to analyse, filling silent gaps of a video."""
    if speech and duration <= settings.single_clip_s:
        return [Segment(0.0, round(duration, 3), True)]
    segments: list[Segment] = []
    cursor = 0.0
    for start, end in speech:
        if with_video and start - cursor >= settings.min_window_s:
            segments += split_long(cursor, start, settings.window_s, False)
        segments += split_long(start, end, settings.max_segment_s, True)
        cursor = end
    if with_video and duration - cursor >= min(settings.min_window_s, duration):
        segments += split_long(cursor, duration, settings.window_s, False)
    return segments


def fixed_windows(duration: float, every: float, speech: list[tuple[float, float]]) -> list[Segment]:
    """Back-to-back windows of `every` seconds over [0, duration) (the last may be shorter),
    each marked as speech where the VAD heard some in it: a curve of emotion over a film,
    rather than one answer per utterance."""
    if every <= 0:
        raise AvemoError(f"--every must be a positive number of seconds, not {every:g}")
    edges = [float(t) for t in np.arange(0.0, duration, every)] + [duration]
    return [Segment(round(a, 3), round(b, 3), any(s < b and e > a for s, e in speech))
            for a, b in zip(edges[:-1], edges[1:]) if b - a > 1e-3]


_SRT_TIME = re.compile(r"(\d+):(\d\d):(\d\d)[,.](\d{1,3})\s*-->\s*(\d+):(\d\d):(\d\d)[,.](\d{1,3})")


def read_segments(path: str | Path) -> list[Segment]:
    """User-given segments: a CSV with `start,end` columns (seconds) or an SRT file."""
    path = Path(path)
    if not path.is_file():
        raise AvemoError(f"{path}: no such segments file")
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    if path.suffix.lower() == ".srt":
        segments = []
        for m in _SRT_TIME.finditer(text):
            h1, m1, s1, f1, h2, m2, s2, f2 = m.groups()
            start = int(h1) * 3600 + int(m1) * 60 + int(s1) + int(f1.ljust(3, "0")) / 1000
            end = int(h2) * 3600 + int(m2) * 60 + int(s2) + int(f2.ljust(3, "0")) / 1000
            segments.append(Segment(start, end))
    else:
        rows = list(csv.DictReader(text.splitlines()))
        if not rows or not {"start", "end"} <= set(rows[0]):
            raise AvemoError(f"{path}: segments CSV needs 'start' and 'end' columns (seconds)")
        try:
            segments = [Segment(float(r["start"]), float(r["end"])) for r in rows]
        except ValueError:
            raise AvemoError(f"{path}: 'start' and 'end' must be numbers of seconds") from None
    segments = [s for s in segments if s.end > s.start]
    if not segments:
        raise AvemoError(f"{path}: no segment with end > start")
    return segments
