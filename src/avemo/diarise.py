"""Who speaks when: the speech the VAD found, cut into turns by voice.

    speech regions ─ voiceprint windows (1.6 s, every 0.25 s) ─ spectral clustering ─ turns

Each window of speech gets the shipped voiceprint encoder's embedding (Resemblyzer's GE2E
speaker encoder, `voiceprint.py`: trained to tell thousands of voices apart, already inside
the model); windows of one voice lie close together. They are clustered as Wang et al. (2018,
"Speaker diarization with LSTM") do: the cosine affinity of every pair of windows, each row
kept to its closest neighbours, made symmetric and diffused, then the eigenvectors of that
matrix, whose gap says how many voices there are, clustered with k-means. numpy only.

A long file is not clustered whole: the first `WARM_SPEECH_S` of speech is, and later windows
join the nearest voice found (or start a new one), so ids stay stable and memory bounded.
What this cannot know: two people whose voices are alike may be taken for one, and a voice
heard under 1.6 s at a time (a "yes" between turns) belongs to the turn around it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .audio import voiceprint_gain, voiceprint_power
from .errors import AvemoError
from .normalise import RunningStats
from .voiceprint import WINDOW

#: Voiceprint frames are 10 ms; a window is the encoder's 1.6 s, one starts every `HOP` frames.
FRAME_S = 0.01
HOP = 25
#: Each window keeps its affinity to the nearest (1 - KEEP_QUANTILE) of the windows whole (the rest shrunk).
KEEP_QUANTILE = 0.9
#: Turns shorter than this are joined to their neighbour (a window's hop blurs shorter changes).
MIN_TURN_S = 0.5
#: How many voices one file may hold, at most, when not told.
MAX_SPEAKERS = 8
#: Below this cosine affinity between their centroids, two clusters are two voices; above it,
#: one. Set between the same-voice and different-voice affinities of the shipped encoder's
#: windows (RAVDESS actors, the pyannote sample).
SAME_VOICE = 0.92
#: Speech clustered whole before windows join the voices found one by one (bounded memory).
WARM_SPEECH_S = 60.0


@dataclass(frozen=True)
class Turn:
    """A stretch of one voice: `speaker` an index, per file, from 0 in order of first speech."""

    start: float
    end: float
    speaker: int


def unit_rows(prints: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length (cosine affinity is then a dot product)."""
    return prints / np.maximum(np.linalg.norm(prints, axis=1, keepdims=True), 1e-12)


def cluster(prints: np.ndarray, speakers: int | None = None, min_speakers: int = 1,
            max_speakers: int = MAX_SPEAKERS, seed: int = 0) -> np.ndarray:
    """A voice index for each window embedding (N, D): spectral clustering, the number of voices
    `speakers` if given, else read off the eigengap within [min_speakers, max_speakers], and
    clusters whose centroids are as alike as one voice's windows (`SAME_VOICE`) merged."""
    n = len(prints)
    if n == 0:
        return np.zeros(0, int)
    if speakers == 1 or n < 3:
        return np.zeros(n, int)
    x = unit_rows(prints.astype(np.float64))
    affinity = x @ x.T
    np.fill_diagonal(affinity, 0.0)
    np.fill_diagonal(affinity, affinity.max(1))
    keep = np.quantile(affinity, KEEP_QUANTILE, axis=1, keepdims=True)  # each row: its nearest neighbours kept whole
    affinity = np.where(affinity >= keep, affinity, 0.01 * affinity)
    affinity = np.maximum(affinity, affinity.T)
    affinity = affinity @ affinity.T
    affinity /= affinity.max(1, keepdims=True)
    values, vectors = np.linalg.eigh(affinity)
    values, vectors = values[::-1], vectors[:, ::-1]
    told = speakers
    if speakers is None:
        top = min(max_speakers, n - 1)
        gaps = values[:top] / np.maximum(values[1:top + 1], 1e-9)
        speakers = int(np.argmax(gaps[min_speakers - 1:])) + min_speakers
        if speakers == 1 and min_speakers <= 2 <= max_speakers:  # one voice, unless two are clearly apart
            speakers = 2
    k = min(speakers, n)
    labels = _kmeans(unit_rows(vectors[:, :k]), k, seed)
    if told is None and len(set(labels)) > 1:
        labels = _merge_alike(x, labels, min_speakers)
    return _in_order(labels)


def _kmeans(points: np.ndarray, k: int, seed: int, restarts: int = 10) -> np.ndarray:
    """Cosine k-means (points on the unit sphere), the best of `restarts` by total similarity."""
    rng = np.random.default_rng(seed)
    best, best_score = np.zeros(len(points), int), -np.inf
    for _ in range(restarts):
        centres = points[rng.choice(len(points), k, replace=False)]
        for _ in range(100):
            labels = np.argmax(points @ centres.T, axis=1)
            moved = np.stack([points[labels == j].mean(0) if (labels == j).any() else centres[j] for j in range(k)])
            moved = unit_rows(moved)
            if np.allclose(moved, centres):
                break
            centres = moved
        score = float((points * centres[labels]).sum())
        if score > best_score:
            best, best_score = labels, score
    return best


def _merge_alike(x: np.ndarray, labels: np.ndarray, floor: int) -> np.ndarray:
    """Clusters whose centroids' cosine affinity reaches `SAME_VOICE` merged, closest first,
    while more than `floor` remain."""
    labels = labels.copy()
    while len(set(labels)) > floor:
        ids = sorted(set(labels))
        centres = unit_rows(np.stack([x[labels == i].mean(0) for i in ids]))
        alike = centres @ centres.T
        np.fill_diagonal(alike, -1.0)
        i, j = np.unravel_index(np.argmax(alike), alike.shape)
        if alike[i, j] < SAME_VOICE:
            break
        labels[labels == ids[j]] = ids[i]
    return labels


def _in_order(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 0, 1, ... in order of first appearance."""
    order: dict[int, int] = {}
    return np.array([order.setdefault(int(v), len(order)) for v in labels], int)


def turns(times: np.ndarray, labels: np.ndarray, regions: Sequence[tuple[float, float]]) -> list[Turn]:
    """Speech `regions` cut into turns: each 10 ms of speech goes to the window centred nearest
    to it among those covering it (else the nearest window), runs of one voice join, and turns
    under `MIN_TURN_S` go to the voice before (or after) them."""
    out: list[Turn] = []
    if not len(times):
        return out
    centres = times.mean(1)
    for start, end in regions:
        steps = np.arange(start, end, FRAME_S) + FRAME_S / 2
        if not len(steps):
            continue
        distance = np.abs(steps[:, None] - centres[None, :])
        covering = (times[None, :, 0] <= steps[:, None]) & (steps[:, None] < times[None, :, 1])
        distance = np.where(covering, distance, distance + 1e3)
        voices = labels[np.argmin(distance, axis=1)]
        cuts = np.flatnonzero(np.diff(voices)) + 1
        pieces = [Turn(float(steps[a] - FRAME_S / 2), float(min(end, steps[b - 1] + FRAME_S / 2)), int(voices[a]))
                  for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(steps)])]
        out += _joined(pieces)
    return out


def _joined(pieces: list[Turn]) -> list[Turn]:
    """Turns under `MIN_TURN_S` given to the voice before them (the first to the one after), and
    neighbours of one voice joined."""
    while len(pieces) > 1:
        short = [i for i, t in enumerate(pieces) if t.end - t.start < MIN_TURN_S]
        if not short:
            break
        i = min(short, key=lambda j: pieces[j].end - pieces[j].start)
        into = i - 1 if i > 0 else i + 1
        voice = pieces[into].speaker
        pieces[i] = Turn(pieces[i].start, pieces[i].end, voice)
        merged: list[Turn] = []
        for t in pieces:
            if merged and merged[-1].speaker == t.speaker:
                merged[-1] = Turn(merged[-1].start, t.end, t.speaker)
            else:
                merged.append(t)
        pieces = merged
    return pieces


def diarise(wave: np.ndarray, regions: Sequence[tuple[float, float]], embed: Callable[[np.ndarray], np.ndarray],
            speakers: int | None = None, min_speakers: int = 1, max_speakers: int = MAX_SPEAKERS) -> list[Turn]:
    """The turns of a whole 16 kHz signal's speech `regions`; `embed` runs the voiceprint encoder
    on windows (N, 160, 40) -> (N, 256)."""
    voices = Voices(embed, speakers, min_speakers, max_speakers)
    voices.hear(regions, wave, 0.0)
    voices.settle()
    voices.close()
    return voices.turns(0.0, len(wave) / 16000)


def check_speakers(speakers: object, min_speakers: object = 1, max_speakers: object = MAX_SPEAKERS) -> None:
    """AvemoError unless the hints are whole numbers of at least 1, min <= max, and `speakers` within them."""
    for name, value in (("speakers", speakers), ("min_speakers", min_speakers), ("max_speakers", max_speakers)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
            raise AvemoError(f"{name} must be a whole number of people, at least 1, not {value!r}")
    if min_speakers > max_speakers:
        raise AvemoError(f"min_speakers ({min_speakers}) is more than max_speakers ({max_speakers})")
    if speakers is not None and not min_speakers <= speakers <= max_speakers:
        raise AvemoError(f"speakers ({speakers}) lies outside min_speakers..max_speakers ({min_speakers}..{max_speakers})")


#: A window joins the nearest voice already found where its affinity to that voice's centroid
#: reaches this; else it starts a new one (after the first `WARM_SPEECH_S` are clustered whole).
JOIN_VOICE = 0.6


class Voices:
    """Who speaks when, in a signal heard piece by piece: each settled speech region's windows
    are embedded as it settles (`hear`); the first `WARM_SPEECH_S` of speech (or all of a shorter
    file, `settle(final=True)`) are clustered whole, and later windows join the nearest voice
    found, so that ids stay stable while memory stays bounded (windows' embeddings only: 1 KB each).

    The embedding runs on a thread of its own (ONNX Runtime lets go of the GIL): while it embeds
    the speech just heard, the caller goes on decoding and judging faces, so that on 2 cores the
    voices cost little wall time. `embedded_until` says how far the speech has been embedded."""

    def __init__(self, embed: Callable[[np.ndarray], np.ndarray], speakers: int | None = None,
                 min_speakers: int = 1, max_speakers: int = MAX_SPEAKERS) -> None:
        check_speakers(speakers, min_speakers, max_speakers)
        self.embed, self.hint = embed, (speakers, min_speakers, max_speakers)
        self.times = np.zeros((0, 2))
        self.prints = np.zeros((0, 0), np.float32)
        self.labels = np.zeros(0, int)
        self.regions: list[tuple[float, float]] = []
        self.heard_until = 0.0  # speech regions up to here have been given to the embedding
        self._next, self._region_windows = 0.0, 0  # the next window's start, and how many the region has so far
        self._power = RunningStats()  # of the speech embedded so far: its level, by which every window is raised alike
        self.centroids: np.ndarray | None = None  # set once clustered
        self._sums: np.ndarray | None = None
        self._worker: ThreadPoolExecutor | None = None
        self._pending: deque[tuple[np.ndarray, Future]] = deque()  # (windows' times, their embeddings to come), in order

    @property
    def ready(self) -> bool:
        return self.centroids is not None

    @property
    def speech_s(self) -> float:
        return float(sum(e - s for s, e in self.regions))

    def hear(self, regions: Sequence[tuple[float, float]], wave: np.ndarray, wave_start: float,
             going_on: bool = False) -> None:
        """Embed the speech of `regions` not heard yet (`wave`, from `wave_start` s, holds them);
        `going_on`: the last region has not ended, so only whole windows of it are cut now, and the
        rest once more of it is heard: a long region's windows lie on one grid however it came."""
        for n, (start, end) in enumerate(regions):
            if end <= self.heard_until + 1e-6:
                continue
            last_open = going_on and n == len(regions) - 1
            if start >= self.heard_until:  # a new region: its own grid
                self._next, self._region_windows = start, 0
                self.regions.append((start, end))
            else:
                self.regions[-1] = (self.regions[-1][0], end)
            starts = []
            while self._next + WINDOW * FRAME_S <= end + 1e-6:
                starts.append(self._next)
                self._next += HOP * FRAME_S
            if not last_open and not starts and not self._region_windows:  # shorter than a window: one, padded
                starts = [start]
            self._add(wave, wave_start, starts, end)
            self._region_windows += len(starts)
            self.heard_until = end

    def _add(self, wave: np.ndarray, wave_start: float, starts: list[float], end: float) -> None:
        """Give the windows starting at `starts` (seconds, on one grid of `HOP` frames; none past
        `end`) to the embedding thread. Each window's frames are raised by the level of the speech
        heard up to its end, as Resemblyzer raises a quiet utterance (one level for all, not each
        window's own: a whisper stays a whisper)."""
        if not starts:
            return
        first = max(0, int(round((starts[0] - wave_start) * 16000)))
        stops = [min(end, t + WINDOW * FRAME_S) for t in starts]
        sizes, gains = [], []
        for t, stop in zip(starts, stops):
            a, b = int(round((t - wave_start) * 16000)), int(round((stop - wave_start) * 16000))
            self._power.add(np.square(wave[max(0, a):b], dtype=np.float64)[:, None])
            sizes.append(min(WINDOW, max(1, (b - a) // 160)))
            gains.append(voiceprint_gain(float(np.sqrt(self._power.stats()[0][0]))) ** 2)
        stretch = wave[first:int(round((stops[-1] - wave_start) * 16000))].copy()  # the caller's sound moves on
        if self._worker is None:
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="avemo-voices")
        self._pending.append((np.array(list(zip(starts, stops))), self._worker.submit(self._embed, stretch, sizes, gains)))
        self._collect(wait=False)

    def _embed(self, stretch: np.ndarray, sizes: list[int], gains: list[float]) -> np.ndarray:
        """Unit embeddings of a stretch's windows, one every `HOP` frames (`sizes`: frames each holds,
        `gains`: each one's raise in power). The stretch's Mel power is computed once for all of them."""
        power = voiceprint_power(stretch)
        windows = np.zeros((len(sizes), WINDOW, power.shape[1]), np.float32)
        for n, (size, gain) in enumerate(zip(sizes, gains)):
            frames = power[n * HOP:n * HOP + size]
            windows[n, :len(frames)] = frames * np.float32(gain)
        return unit_rows(self.embed(windows).astype(np.float32))

    def _collect(self, wait: bool) -> None:
        """Keep the embeddings done so far, in order (all of them, waiting for them, if `wait`);
        after the clustering, each joins its voice. An error in the embedding is raised here."""
        while self._pending and (wait or self._pending[0][1].done()):
            times, future = self._pending.popleft()
            prints = future.result()
            self.times = np.concatenate([self.times, times])
            self.prints = prints if not len(self.prints) else np.concatenate([self.prints, prints])
            if self.ready:
                self.labels = np.concatenate([self.labels, [self._join(p) for p in prints]])

    @property
    def embedded_until(self) -> float:
        """Speech before this second has all been embedded: where the windows still being embedded
        start (all of it, when none are: what has not been heard yet is not speech known so far)."""
        self._collect(wait=False)
        return float(self._pending[0][0][0, 0]) if self._pending else float("inf")

    def wait(self) -> None:
        """Wait for every window given so far to be embedded (and to join its voice)."""
        self._collect(wait=True)

    def close(self) -> None:
        """Let the embedding thread go (what it was given is kept)."""
        self.wait()
        if self._worker is not None:
            self._worker.shutdown()
            self._worker = None

    def settle(self) -> None:
        """Cluster what has been heard (once): the voices later windows join."""
        if self.ready:
            return
        self.wait()
        speakers, low, high = self.hint
        self.labels = cluster(self.prints, speakers, low, high) if len(self.prints) else np.zeros(0, int)
        k = int(self.labels.max()) + 1 if len(self.labels) else 0
        self._sums = np.stack([self.prints[self.labels == i].sum(0) for i in range(k)]) if k else np.zeros((0, 256))
        self.centroids = unit_rows(self._sums) if k else np.zeros((0, 256), np.float32)

    def _join(self, p: np.ndarray) -> int:
        """The voice a later window belongs to (its centroid moved towards it), or a new one."""
        speakers, _, high = self.hint
        affinity = self.centroids @ p if len(self.centroids) else np.zeros(0)
        full = len(self.centroids) >= (speakers or high)
        if len(affinity) and (affinity.max() >= JOIN_VOICE or full):
            voice = int(np.argmax(affinity))
            self._sums[voice] += p
            self.centroids[voice] = unit_rows(self._sums[voice][None])[0]
            return voice
        self._sums = np.concatenate([self._sums, p[None]]) if len(self._sums) else p[None].copy()
        self.centroids = unit_rows(self._sums)
        return len(self.centroids) - 1

    def voiceprint(self, start: float, end: float) -> np.ndarray | None:
        """The voiceprint of the speech in [start, end) (after `settle`): the embeddings of its
        windows (those centred inside it, else the one centred nearest) pooled as Resemblyzer pools
        an utterance's, so that the voice branch need not embed that speech again. None where no
        window was heard there."""
        if not len(self.times):
            return None
        centres = self.times.mean(1)
        over = np.flatnonzero((self.times[:, 0] < end) & (self.times[:, 1] > start))
        if not len(over):
            return None
        inside = over[(centres[over] >= start) & (centres[over] < end)]
        pick = inside if len(inside) else over[[np.argmin(np.abs(centres[over] - (start + end) / 2))]]
        return unit_rows(self.prints[pick].sum(0, keepdims=True))[0]

    def turns(self, start: float, end: float) -> list[Turn]:
        """The turns of the speech heard within [start, end) (after `settle`)."""
        inside = [(max(s, start), min(e, end)) for s, e in self.regions if e > start and s < end]
        near = (self.times[:, 1] > start - 2.0) & (self.times[:, 0] < end + 2.0) if len(self.times) else np.zeros(0, bool)
        return turns(self.times[near], self.labels[near], inside)

    def forget(self, before: float) -> None:
        """Let go of the regions (not the voices) that end before `before` seconds."""
        self.regions = [(s, e) for s, e in self.regions if e >= before]
        if len(self.times) and self.ready:
            keep = self.times[:, 1] >= before - 2.0
            self.times, self.prints, self.labels = self.times[keep], self.prints[keep], self.labels[keep]
