"""Whose face: a face track's identity, so that a person who leaves and returns, or is cut away
from and back to, is the same person.

dlib's face identity network (a ResNet trained to put one person's faces close together and
different people's far apart; CC0, shipped in assets/faces with its 5-point landmark model, run by
the `dlib-bin` wheel) gives each face a 128-d descriptor. A track is described by a few of its
frames (descriptors averaged: one bad frame does not decide), and joins the identity whose mean
lies within `SAME_FACE` of it, else starts one. Measured on the two real people of ../shared's
av_clips (grey frames, as avemo reads them): one person across six emotions 0.15-0.34 apart, the
two people 0.75-0.77. What it cannot know: identical twins, a face turned far away; the ids are
anonymous and per file, never a name.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources

import numpy as np

from .errors import AvemoError
from .faces import FaceObservation

#: Descriptors of one person lie closer than this (dlib's own threshold is 0.6; its faces are colour).
SAME_FACE = 0.5
#: Frames of a track described, spread over it (each costs ~0.13 s on one core).
FRAMES_PER_TRACK = 2

_LOADING = threading.Lock()


def load_in_background() -> None:
    """Start reading dlib's models (a third of a second) on a thread of their own, so that a run
    that will tell faces apart has them when it links its first voice. A failure is left for
    the run's own first use to report."""
    def load() -> None:
        try:
            _models()
        except AvemoError:
            pass

    threading.Thread(target=load, name="avemo-face-identity", daemon=True).start()


def _models():
    """dlib's landmark and identity networks, read once (a second caller waits for the first)."""
    with _LOADING:
        return _read_models()


@lru_cache(maxsize=1)
def _read_models():
    try:
        import dlib
    except ImportError:
        raise AvemoError("telling faces apart needs dlib: pip install dlib-bin (a dependency of avemo)") from None

    folder = resources.files("avemo") / "assets" / "faces"
    return (dlib.shape_predictor(str(folder / "shape_predictor_5_face_landmarks.dat")),
            dlib.face_recognition_model_v1(str(folder / "dlib_face_recognition_resnet_model_v1.dat")))


def descriptor(observation: FaceObservation) -> np.ndarray:
    """The 128-d identity descriptor of one face seen (its grey frame, its box)."""
    import dlib

    landmarks, network = _models()
    grey = observation.frame if observation.levels is None else observation.levels[observation.frame]
    rgb = np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    x, y, w, h = (int(v) for v in observation.box)
    shape = landmarks(rgb, dlib.rectangle(x, y, x + w, y + h))
    return np.asarray(network.compute_face_descriptor(rgb, shape), np.float32)


class Identities:
    """Face tracks of one file given identities (0, 1, ... in order of first asking), as they are asked for."""

    def __init__(self) -> None:
        self._of_track: dict[int, int] = {}
        self._sums: list[np.ndarray] = []
        self._counts: list[int] = []

    def of(self, track: int, observations: Sequence[FaceObservation]) -> int:
        """The identity of `track`, described by its `observations` the first time it is asked for."""
        if track in self._of_track:
            return self._of_track[track]
        seen = [o for o in observations if o.track == track and not o.whole]
        pick = np.linspace(0, len(seen) - 1, min(len(seen), FRAMES_PER_TRACK)).round().astype(int) if seen else []
        mean = np.mean([descriptor(seen[i]) for i in pick], axis=0) if len(pick) else None
        distances = [np.linalg.norm(mean - s / c) for s, c in zip(self._sums, self._counts)] if mean is not None else []
        if distances and min(distances) < SAME_FACE:
            who = int(np.argmin(distances))
            self._sums[who], self._counts[who] = self._sums[who] + mean, self._counts[who] + 1
        else:
            who = len(self._sums)
            self._sums.append(mean if mean is not None else np.full(128, np.inf, np.float32))
            self._counts.append(1)
        self._of_track[track] = who
        return who
