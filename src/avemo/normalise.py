"""Voice normalisation: a group's voice frames (one speaker's, one file's) standardised by
that group's own statistics, dimension by dimension.

A model that normalises reads each frame twice, side by side: as it is, and standardised
(`paired`). Why both: standardising removes the speaker, and with one short utterance it
also removes the utterance's own level (how loud, high, tense it is throughout), which is
much of its emotion; the raw half keeps that, the standardised half carries across voices.

Why: how a voice sounds by itself (its pitch, its timbre, the microphone and the room) moves
the voice features more than the emotion in it does, and a model trained on a few hundred
voices learns those voices. Standardising each speaker's frames over all of that speaker's
speech removes what stays the same across their utterances and keeps what changes: the
largest single gain across corpora in `../shared/notes/pretrained-probes.md` (UAR on another
corpus 0.31 -> 0.37 for Whisper states alone). It asks one thing of the group: that it holds
more than one emotion, which a speaker's whole video or recording session usually does, and
one short utterance does not.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: How a model's voice frames are normalised: "none", or "group" (each group by its own statistics).
VOICE_NORMS = ("none", "group")
#: Smallest standard deviation divided by: a dimension that barely moves in a group stays near 0.
STD_FLOOR = 1e-2

Stats = tuple[np.ndarray, np.ndarray]


def group_stats(frames: Sequence[np.ndarray]) -> Stats:
    """Mean and standard deviation per dimension over all frames of a group's utterances."""
    running = RunningStats()
    for f in frames:
        running.add(f)
    return running.stats()


def standardise(frames: np.ndarray, stats: Stats) -> np.ndarray:
    """`frames` (T, D) in units of their group's spread around its mean (float32)."""
    mean, std = stats
    return (np.asarray(frames, np.float32) - mean) / std


def paired(frames: np.ndarray, stats: Stats) -> np.ndarray:
    """(T, 2D): each frame as it is, beside it standardised by `stats`: what a normalising
    model's voice branch reads."""
    x = np.asarray(frames, np.float32)
    return np.concatenate([x, standardise(x, stats)], axis=1)


class RunningStats:
    """Statistics of all frames added so far: a file's speech as it is heard (float64 sums,
    so an hour of frames adds up exactly enough)."""

    def __init__(self) -> None:
        self.frames = 0
        self._sum: np.ndarray | float = 0.0
        self._squares: np.ndarray | float = 0.0

    def add(self, frames: np.ndarray) -> None:
        x = np.asarray(frames, np.float64)
        self.frames += len(x)
        self._sum = self._sum + x.sum(0)
        self._squares = self._squares + np.square(x).sum(0)

    def stats(self) -> Stats:
        mean = self._sum / max(self.frames, 1)
        var = np.maximum(self._squares / max(self.frames, 1) - np.square(mean), 0.0)
        return mean.astype(np.float32), np.maximum(np.sqrt(var), STD_FLOOR).astype(np.float32)


class Normaliser:
    """How one run of `predict` standardises its segments' voice frames:

    - "file": by all of the file's speech heard so far, the batch being judged included (a
      file of up to eight speech segments is judged in one batch: by all of its speech); where
      people are told apart (`predict(people=True)`), by that person's speech alone;
    - "segment": each segment by its own frames (what a model trained with
      `own_norm_share` has also learnt to read);
    - fixed statistics (`Normaliser.fixed`): a speaker's, gathered first over all of that
      speaker's files (`evaluate --normalise speaker`).
    A `collect`ing normaliser also adds every batch it sees to `collected`.
    """

    def __init__(self, mode: str, stats: Stats | None = None, collect: RunningStats | None = None) -> None:
        if mode not in ("file", "segment", "speaker"):
            raise ValueError(mode)
        self.mode, self.fixed_stats, self.collected = mode, stats, collect
        self._file = RunningStats()
        self._people: dict[str, RunningStats] = {}  # each person's speech, where people are told apart

    @classmethod
    def fixed(cls, stats: Stats) -> Normaliser:
        """By `stats`, gathered beforehand (a speaker's)."""
        return cls("speaker", stats)

    def __call__(self, rows: list[np.ndarray], people: Sequence[str | None] | None = None) -> list[np.ndarray]:
        """Each segment's frames (T_i, D) as the voice branch reads them: (T_i, 2D), `paired`. In
        "file" mode, rows of a known person (`people`: each row's, None where unknown) are
        standardised by that person's speech heard so far, the others by the whole file's."""
        if self.collected is not None:
            for r in rows:
                self.collected.add(r)
        if self.mode == "segment":
            return [paired(r, group_stats([r])) for r in rows]
        if self.mode == "speaker":
            return [paired(r, self.fixed_stats) for r in rows]
        people = list(people) if people is not None else [None] * len(rows)
        for r, who in zip(rows, people):
            self._file.add(r)
            if who is not None:
                self._people.setdefault(who, RunningStats()).add(r)
        stats = {who: self._people[who].stats() for who in set(people) - {None}}  # this batch's people only
        whole = self._file.stats()
        return [paired(r, stats.get(who, whole)) for r, who in zip(rows, people)]
