"""Segmentation: where in a file the analysed stretches lie.

Speech regions come from silero-vad's ONNX model (v6, MIT; shipped in avemo's
assets/vad with its licence, so that the torch-only `silero-vad` package is not needed;
run here on onnxruntime, ~10 ms per second of audio), merged across short pauses and split when longer than
an utterance. A short clip (a MELD utterance) is one segment. Stretches without
speech that are long enough become face-only windows, so a silent video is still
covered end to end. Users may also give their own times (CSV or SRT), or ask for
fixed windows.

Everything here works on a signal heard piece by piece (`SpeechTracker`) and cuts
segments as the speech before them settles (the planners), so a long file is
segmented, and analysed, while it is still being read.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import AvemoError
from .runtime import one_thread_session

log = logging.getLogger("avemo")

VAD_CHUNK = 512  # samples at 16 kHz (32 ms), the ONNX model's frame
VAD_CONTEXT = 64  # samples of the previous chunk the model sees before each chunk
VAD_HOP_S = VAD_CHUNK / 16000
VAD_BATCH = 1024  # chunks judged in one call at most (33 s of sound; the graph's activations ~10 MB)


@dataclass(frozen=True)
class Segment:
    """A stretch of a file to analyse; `speech` says whether the VAD heard a voice in it, `person`
    whose voice it is ("P1", ...: anonymous, per file; None where no one is told apart), `face`
    the face track that voice is linked to."""

    start: float
    end: float
    speech: bool = True
    person: str | None = None
    face: tuple[int, float | None] | None = None  # the person's face (its track) and how sure its link to their voice is

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
    # A clip of at most `single_clip_s` in which no speech reaches `threshold` gets a second look:
    # its loud stretches (chunks >= `loud_db` dBFS, bridged across short pauses) are speech where the
    # VAD gives one of their chunks at least `loud_threshold`. Shouts, screams and sobs are what
    # silero-vad misses most (14 of RAVDESS's 1200 files, all intense, were "no speech"). A voice
    # rises and falls syllable by syllable: a stretch whose level moves less than `loud_swing_db`
    # from one chunk to the next on average is a tune or a hum (music: 1.1 dB; those 14: 4.4-6.1).
    loud_threshold: float = 0.1
    loud_db: float = -40.0
    loud_swing_db: float = 3.0


@lru_cache(maxsize=1)
def _vad_session():
    """silero-vad's 16 kHz weights as a graph that judges a batch of chunks in one call, its LSTM
    run over their sequence (`scripts/make_vad_graph.py` makes it from silero's own graph, which
    judged one chunk a call: 1.3 s of a core for five minutes of sound, against 0.25 s)."""
    return one_thread_session(resources.files("avemo") / "assets" / "vad" / "silero_vad_16k_batched.onnx")


class VoiceActivity:
    """silero-vad over a 16 kHz signal heard piece by piece: the model's state and context
    carry from one piece to the next, so a file read in bounded pieces gets the same
    probabilities as in one go. A piece this quiet (`quiet_rms`) is silence without asking
    the model, which then starts afresh, as after any silence."""

    def __init__(self, quiet_rms: float = 0.0) -> None:
        self.quiet_rms = quiet_rms
        self._session = _vad_session()
        self._rest = np.zeros(0, dtype=np.float32)  # samples short of a whole chunk, kept for the next piece
        self._reset()

    def _reset(self) -> None:
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros(VAD_CONTEXT, dtype=np.float32)

    def feed(self, wave: np.ndarray) -> np.ndarray:
        """Speech probabilities of the whole 32 ms chunks completed by `wave`."""
        return self.hear(wave)[0]

    def hear(self, wave: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Speech probabilities and loudness (dBFS) of the whole 32 ms chunks completed by `wave`."""
        wave = np.concatenate([self._rest, wave.astype(np.float32, copy=False)])
        n = len(wave) // VAD_CHUNK
        self._rest = wave[n * VAD_CHUNK:]
        probs = np.zeros(n, dtype=np.float32)
        power = np.square(wave[:n * VAD_CHUNK].reshape(n, VAD_CHUNK), dtype=np.float64).mean(1)
        levels = (10 * np.log10(power + 1e-12)).astype(np.float32)
        if n == 0 or (self.quiet_rms and np.sqrt(power.mean()) < self.quiet_rms):
            self._reset()
            return probs, levels
        heard = np.concatenate([self._context, wave[:n * VAD_CHUNK]])
        chunks = np.lib.stride_tricks.sliding_window_view(heard, VAD_CONTEXT + VAD_CHUNK)[::VAD_CHUNK]
        for first in range(0, n, VAD_BATCH):  # a whole file given at once: in pieces, in bounded memory
            piece = np.ascontiguousarray(chunks[first:first + VAD_BATCH])
            probs[first:first + len(piece)], self._state = self._session.run(None, {"chunks": piece, "state": self._state})
        self._context = heard[-VAD_CONTEXT:].copy()
        return probs, levels


@dataclass(frozen=True)
class SpeechSoFar:
    """What is known of a signal's speech after hearing part of it.

    `final`: regions (start, end), padded, that no later sound can change. `open`: the
    region still going on, from its start to the last speech heard, once it is long enough
    to be sure of; None otherwise. Speech before `known_until` is all in these two: later
    sound can only add regions (or extend `open`) after it.
    """

    final: tuple[tuple[float, float], ...]
    open: tuple[float, float] | None
    known_until: float

    @property
    def regions(self) -> list[tuple[float, float]]:
        """All the speech known: the settled regions, then the one going on."""
        return [*self.final, *([self.open] if self.open else [])]


class SpeechTracker:
    """Speech regions of a signal heard piece by piece (`feed`), with hysteresis so that a
    region doesn't flicker, pauses shorter than `merge_gap_s` bridged, regions shorter
    than `min_speech_s` dropped and `pad_s` kept around each: what `speech_regions` gives
    for a whole signal, known region by region as the signal goes on (`so_far`)."""

    def __init__(self, settings: SegmentationSettings = SegmentationSettings()) -> None:
        self.s = settings
        self.vad = VoiceActivity()
        self._early: list[tuple[np.ndarray, np.ndarray]] = []  # a short clip's probabilities and levels
        self._merged: list[list[float]] = []  # raw regions, merged across short pauses
        self._on = False
        self._chunks = 0  # 32 ms chunks heard
        self._final: list[tuple[float, float]] = []
        self._closed = 0  # how many of _merged are settled into _final

    @property
    def heard(self) -> float:
        return self._chunks * VAD_HOP_S

    def feed(self, wave: np.ndarray) -> None:
        """Hear the next piece of the signal."""
        self.add(*self.vad.hear(wave))

    def add(self, probs: np.ndarray, levels: np.ndarray | None = None) -> None:
        """Take the VAD's probabilities for the next chunks, and their loudness in dBFS (worked out
        elsewhere, e.g. on another thread). The first `single_clip_s` of both are kept for the
        second look at a clip the VAD hears no speech in (`SegmentationSettings.loud_threshold`)."""
        if levels is not None and self.heard <= self.s.single_clip_s:
            self._early.append((probs, levels))
        for p in probs:
            t = self._chunks * VAD_HOP_S
            self._chunks += 1
            if not self._on and p >= self.s.threshold:
                self._on = True
                if self._merged and t - self._merged[-1][1] < self.s.merge_gap_s and len(self._merged) > self._closed:
                    self._merged[-1][1] = t + VAD_HOP_S
                else:
                    self._merged.append([t, t + VAD_HOP_S])
            elif self._on:
                if p >= self.s.threshold - 0.15:
                    self._merged[-1][1] = t + VAD_HOP_S
                else:
                    self._on = False
        # a region is settled once a pause too long to bridge follows it
        while self._closed < len(self._merged) and not (self._closed == len(self._merged) - 1 and self._on) \
                and self.heard - self._merged[self._closed][1] >= self.s.merge_gap_s:
            self._settle(self._merged[self._closed], self.heard)
            self._closed += 1

    def _settle(self, region: list[float], total: float) -> None:
        start, end = region
        if end - start >= self.s.min_speech_s:
            self._final.append((max(0.0, start - self.s.pad_s), min(total, end + self.s.pad_s)))

    def so_far(self) -> SpeechSoFar:
        pending = self._merged[self._closed:]
        if not pending:
            return SpeechSoFar(tuple(self._final), None, max(0.0, self.heard - self.s.pad_s))
        start, end = pending[0]
        if len(pending) == 1 and end - start >= self.s.min_speech_s:
            return SpeechSoFar(tuple(self._final), (max(0.0, start - self.s.pad_s), end), end)
        return SpeechSoFar(tuple(self._final), None, max(0.0, start - self.s.pad_s))

    def finish(self, total: float) -> list[tuple[float, float]]:
        """All regions, the last ones settled at the signal's end (`total` seconds); for a short
        clip without any, its loud stretches with a trace of voice (`loud_regions`)."""
        for region in self._merged[self._closed:]:
            self._settle(region, total)
        self._closed = len(self._merged)
        if not self._final and self._early and total <= self.s.single_clip_s:
            probs, levels = (np.concatenate(x) for x in zip(*self._early))
            self._final = loud_regions(probs, levels, total, self.s)
        return list(self._final)


def loud_regions(probs: np.ndarray, levels: np.ndarray, total: float,
                 settings: SegmentationSettings = SegmentationSettings()) -> list[tuple[float, float]]:
    """Stretches of chunks at least `loud_db` loud, bridged across pauses under `merge_gap_s`,
    at least `min_speech_s` long, in which the VAD gives some chunk `loud_threshold` or more and
    the level swings as a voice's does (`loud_swing_db`): a voice too intense for the VAD's
    threshold, not a noise or a tune."""
    runs: list[list[int]] = []
    gap = int(round(settings.merge_gap_s / VAD_HOP_S))
    for i in np.flatnonzero(levels >= settings.loud_db):
        if runs and i - runs[-1][1] <= gap:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return [(max(0.0, a * VAD_HOP_S - settings.pad_s), min(total, (b + 1) * VAD_HOP_S + settings.pad_s))
            for a, b in runs if (b + 1 - a) * VAD_HOP_S >= settings.min_speech_s
            and probs[a:b + 1].max() >= settings.loud_threshold
            and np.abs(np.diff(levels[a:b + 1])).mean() >= settings.loud_swing_db]


def speech_regions(wave: np.ndarray, settings: SegmentationSettings = SegmentationSettings()) -> list[tuple[float, float]]:
    """(start, end) seconds of speech in a whole 16 kHz signal."""
    tracker = SpeechTracker(settings)
    tracker.feed(wave)
    return tracker.finish(len(wave) / 16000)


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


class SpeechPlanner:
    """Speech regions become segments as they are settled, so a long file is cut (and
    analysed) while the rest of it is still being read.

    Regions longer than `max_segment_s` are split evenly; in a video, silent gaps get
    face-only windows of `window_s`. A file of at most `single_clip_s` with speech is one
    segment (a MELD utterance): nothing is cut before that much has been heard. Where a
    gap or a region goes on and on, windows are cut from its start while it lasts, and
    only the last stretch (under twice the window) is split evenly.
    """

    asked = False  # segments of its own, judged by the voice only where the VAD hears speech

    def __init__(self, with_video: bool, settings: SegmentationSettings = SegmentationSettings()) -> None:
        self.with_video = with_video
        self.s = settings
        self.keep_from = 0.0  # no later segment starts before this
        self._used = 0  # settled regions already cut

    def advance(self, speech: SpeechSoFar) -> list[Segment]:
        """The segments that what is known now settles."""
        if speech.known_until <= self.s.single_clip_s:
            return []
        out = self._settled(speech.final)
        if speech.open and speech.open[1] - speech.open[0] >= 2 * self.s.max_segment_s:
            out += self._gap(speech.open[0])
            out += self._cut(speech.open[1], self.s.max_segment_s, True)
        elif self.with_video:
            out += self._cut(speech.open[0] if speech.open else speech.known_until, self.s.window_s, False)
        else:  # no windows in the silence of a sound file: nothing before the next speech is needed
            self.keep_from = max(self.keep_from, speech.open[0] if speech.open else speech.known_until)
        return out

    def finish(self, speech: list[tuple[float, float]], duration: float) -> list[Segment]:
        """The rest of the segments, once the file has ended at `duration` with these regions."""
        if speech and duration <= self.s.single_clip_s:
            return [Segment(0.0, round(duration, 3), True)]
        out = self._settled(speech)
        if self.with_video and duration - self.keep_from >= min(self.s.min_window_s, duration):
            out += split_long(self.keep_from, duration, self.s.window_s, False)
        return out

    def _settled(self, regions: Sequence[tuple[float, float]]) -> list[Segment]:
        out: list[Segment] = []
        for start, end in regions[self._used:]:
            out += self._gap(start)
            out += split_long(max(start, self.keep_from), end, self.s.max_segment_s, True)
            self.keep_from = max(self.keep_from, end)
        self._used = len(regions)
        return out

    def _gap(self, until: float) -> list[Segment]:
        """Face-only windows (in a video) over the silence from `keep_from` to `until`, where speech starts."""
        out = []
        if self.with_video and until - self.keep_from >= self.s.min_window_s:
            out = split_long(self.keep_from, until, self.s.window_s, False)
        self.keep_from = max(self.keep_from, until)
        return out

    def _cut(self, known: float, length: float, speech: bool) -> list[Segment]:
        """Windows of `length` from `keep_from` while more than twice that is known to go on as it is."""
        out = []
        while known - self.keep_from >= 2 * length:
            out.append(Segment(round(self.keep_from, 3), round(self.keep_from + length, 3), speech))
            self.keep_from = out[-1].end
        return out


#: The shortest fixed window (`--every`): a shorter one holds too little voice or face to judge.
MIN_WINDOW_S = 0.5


def window_length(every: object) -> float | None:
    """`every` (seconds, or None) checked: a finite number of at least `MIN_WINDOW_S`."""
    if every is None:
        return None
    if isinstance(every, bool) or not isinstance(every, (int, float, np.integer, np.floating)):
        raise AvemoError(f"every is a number of seconds, not {every!r}")
    if not np.isfinite(every) or every < MIN_WINDOW_S:
        raise AvemoError(f"every must be a finite number of seconds, at least {MIN_WINDOW_S:g} (a shorter window "
                         f"holds too little to judge), not {float(every):g}")
    return float(every)


def given_segments(segments: object) -> list[Segment] | None:
    """The user's own segments, checked: Segments or (start, end) pairs of finite seconds that
    end after they start, or the path of a CSV or SRT of them (`read_segments`); None: none given."""
    if segments is None:
        return None
    if isinstance(segments, (str, bytes, os.PathLike)):
        return read_segments(os.fsdecode(segments))
    if isinstance(segments, np.ndarray):
        segments = segments.tolist()
    if not isinstance(segments, (list, tuple)):
        raise AvemoError(f"segments is a list of Segment or (start, end) pairs, or a CSV/SRT path, not a "
                         f"{type(segments).__name__}")
    if not segments:
        raise AvemoError("segments is empty: give at least one (start, end), or leave it out to follow the speech")
    out = []
    for n, seg in enumerate(segments, 1):
        if isinstance(seg, Segment):
            start, end, speech = seg.start, seg.end, seg.speech
        elif isinstance(seg, (tuple, list)) and len(seg) == 2:
            (start, end), speech = seg, True
        else:
            raise AvemoError(f"segments item {n} is {seg!r}: give a Segment or a (start, end) pair of seconds")
        if not all(_is_number(v) for v in (start, end)):
            raise AvemoError(f"segments item {n}: start and end must be finite numbers of seconds, not {start!r}, {end!r}")
        if not float(end) > float(start):
            raise AvemoError(f"segments item {n} ({float(start):g}-{float(end):g} s) ends at or before it starts")
        out.append(Segment(float(start), float(end), speech))
    return out


class WindowPlanner:
    """Back-to-back windows of `every` seconds (the last may be shorter), each marked as
    speech where the VAD heard some in it: a curve of emotion over a film, rather than one
    answer per utterance. A window is cut once the speech in it is known."""

    asked = True  # the user's windows: judged by the voice wherever they hold sound

    def __init__(self, every: float) -> None:
        self.every = window_length(every)
        self._next = 0  # index of the next window

    @property
    def keep_from(self) -> float:
        return self._next * self.every

    def advance(self, speech: SpeechSoFar) -> list[Segment]:
        return self._windows(speech.known_until, speech.regions, False)

    def finish(self, speech: list[tuple[float, float]], duration: float) -> list[Segment]:
        return self._windows(duration, speech, True)

    def _windows(self, until: float, regions: Sequence[tuple[float, float]], to_the_end: bool) -> list[Segment]:
        """Windows up to `until`; the last one cut short there only `to_the_end` of the file."""
        out = []
        while self.keep_from < until - 1e-3:
            a, b = self.keep_from, (self._next + 1) * self.every
            if b > until:
                if not to_the_end:
                    break
                b = until
            out.append(Segment(round(a, 3), round(b, 3), any(s < b and e > a for s, e in regions)))
            self._next += 1
        return out


class GivenPlanner:
    """The user's own segments, in their order, each once the speech in it is known."""

    asked = True  # judged by the voice wherever they hold sound

    def __init__(self, segments: Sequence[Segment]) -> None:
        self._todo = list(segments)

    @property
    def keep_from(self) -> float:
        return min((s.start for s in self._todo), default=float("inf"))

    def advance(self, speech: SpeechSoFar) -> list[Segment]:
        n = next((i for i, s in enumerate(self._todo) if s.end > speech.known_until), len(self._todo))
        out, self._todo = self._todo[:n], self._todo[n:]
        return out

    def finish(self, speech: list[tuple[float, float]], duration: float) -> list[Segment]:
        """What is left, within the `duration` that decoded (a cut-off file ends early)."""
        out, self._todo = self._todo, []
        return [Segment(s.start, min(s.end, duration), s.speech) for s in out if s.start < duration]


def plan_segments(duration: float, speech: list[tuple[float, float]], with_video: bool,
                  settings: SegmentationSettings = SegmentationSettings()) -> list[Segment]:
    """The segments of a whole file: its speech regions, cut as `SpeechPlanner` cuts them."""
    return SpeechPlanner(with_video, settings).finish(speech, duration)


_SRT_TIME = re.compile(r"(\d+):(\d\d):(\d\d)[,.](\d{1,3})\s*-->\s*(\d+):(\d\d):(\d\d)[,.](\d{1,3})")


def read_segments(path: str | Path) -> list[Segment]:
    """User-given segments: a CSV with `start,end` columns (seconds; a CSV without a header
    whose first row is two numbers is read as start,end) or an SRT file. Rows that end at
    or before they start are refused, by their numbers (data rows, or SRT cues, from 1)."""
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
        lines = [line for line in text.splitlines() if line.strip()]
        if not lines:
            raise AvemoError(f"{path}: no segments in it (the file is empty)")
        first = next(csv.reader(lines[:1]), [])
        if len(first) >= 2 and all(_is_number(v) for v in first[:2]):
            lines = ["start,end"] + lines  # no header: the columns are start, end
        reader = csv.DictReader(lines)
        if not {"start", "end"} <= {k.strip() for k in reader.fieldnames or () if k}:
            raise AvemoError(f"{path}: segments CSV needs 'start' and 'end' columns (seconds)")
        rows = list(reader)
        rows = [{k.strip(): v for k, v in r.items() if k} for r in rows]
        wrong = [n for n, r in enumerate(rows, 1) if not (_is_number(r["start"]) and _is_number(r["end"]))]
        if wrong:
            raise AvemoError(f"{path}: 'start' and 'end' must be numbers of seconds (rows {_numbers(wrong)})")
        segments = [Segment(float(r["start"]), float(r["end"])) for r in rows]
    if not segments:
        raise AvemoError(f"{path}: no segments in it")
    backwards = [n for n, seg in enumerate(segments, 1) if not seg.end > seg.start]
    if backwards:
        raise AvemoError(f"{path}: rows {_numbers(backwards)} end at or before they start")
    return segments


def fit_segments(segments: Sequence[Segment], duration: float, name: str) -> list[Segment]:
    """The user's segments within the media's span [0, `duration`]: rows reaching outside it
    are clipped, with a warning naming them; rows wholly outside it (starting at or after its
    end, or ending before 0) are refused, by number."""
    outside = [n for n, seg in enumerate(segments, 1) if seg.start >= duration or seg.end <= 0]
    if outside:
        raise AvemoError(f"{name}: segments rows {_numbers(outside)} lie outside the media (0-{duration:.3f} s)")
    clipped = [n for n, seg in enumerate(segments, 1) if seg.start < 0 or seg.end > duration]
    if clipped:
        log.warning("%s: segments rows %s reach outside the media (0-%.3f s) and were clipped to it",
                    name, _numbers(clipped), duration)
    return [Segment(max(0.0, seg.start), min(duration, seg.end), seg.speech) for seg in segments]


def _is_number(value: object) -> bool:
    """Whether `value` (a number, or text from a file) is a finite number; False for None and booleans."""
    if value is None or isinstance(value, bool):
        return False
    try:
        return bool(np.isfinite(float(value)))
    except (TypeError, ValueError):
        return False


def _numbers(rows: list[int], most: int = 10) -> str:
    shown = ", ".join(str(n) for n in rows[:most])
    return shown + (f" and {len(rows) - most} more" if len(rows) > most else "")
