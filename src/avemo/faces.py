"""Faces: find the main face in sampled frames and cut it out for the face branch.

Detector: OpenCV's frontal-face Haar cascade, shipped inside opencv-python-headless
(no download, ~10 ms a 640x360 frame on one core). The main face of a frame is the
largest box, ties going to the one nearest the centre: in interviews and talk shows
the person speaking is usually the one framed largest. Crops are 48x48 grey, the
FER2013 convention the face branch is trained on, with a margin like FER2013's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import cv2
import numpy as np

CROP_SIZE = 48
#: Detection runs on a copy scaled to this longer side: on the shared real media it finds the
#: same faces as at 640 px in about 40% of the time; crops are still cut from the full frame.
DETECT_MAX_SIDE = 320
#: A still image this small or smaller is taken as an already-cropped face (FER2013 / CK+ style).
TIGHT_CROP_MAX_SIDE = 96


@dataclass(frozen=True)
class FaceObservation:
    """The main face seen in one sampled frame."""

    time: float
    box: tuple[int, int, int, int]  # x, y, w, h in the scaled frame
    crop: np.ndarray  # (CROP_SIZE, CROP_SIZE) uint8
    n_faces: int  # faces detected in that frame


class FaceDetector:
    """Haar-cascade face detector with FER2013-style cropping."""

    def __init__(self, min_face_fraction: float = 0.08) -> None:
        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise RuntimeError(f"OpenCV's face cascade could not be loaded from {path}")
        self.min_face_fraction = min_face_fraction

    def detect(self, grey: np.ndarray) -> list[tuple[int, int, int, int]]:
        """Boxes (x, y, w, h) of the faces in a grey frame, largest first, in its own pixels."""
        h, w = grey.shape[:2]
        scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
        small = cv2.resize(grey, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA) if scale < 1 else grey
        side = max(12, int(min(small.shape[:2]) * self.min_face_fraction))
        found = self._cascade.detectMultiScale(small, scaleFactor=1.1, minNeighbors=6, minSize=(side, side))
        if len(found) == 0:
            return []
        boxes = [tuple(int(round(v / scale)) for v in b) for b in found]
        centre = np.array([w / 2, h / 2])

        def rank(b: tuple[int, int, int, int]) -> tuple[float, float]:
            off = np.linalg.norm(np.array([b[0] + b[2] / 2, b[1] + b[3] / 2]) - centre)
            return (-float(b[2] * b[3]), float(off))

        return sorted(boxes, key=rank)

    def observe(self, time: float, grey: np.ndarray, is_still: bool = False) -> FaceObservation | None:
        """The main face of one frame, or None.

        A still of at most TIGHT_CROP_MAX_SIDE pixels is taken whole as the face crop
        (FER2013 / CK+ style, the face filling the image): a detector would find no
        face in it, or cut a part of the face out of it.
        """
        h, w = grey.shape[:2]
        if is_still and max(h, w) <= TIGHT_CROP_MAX_SIDE:
            crop = cv2.resize(grey, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_AREA)
            return FaceObservation(time, (0, 0, w, h), crop, 1)
        boxes = self.detect(grey)
        if boxes:
            return FaceObservation(time, boxes[0], crop_face(grey, boxes[0]), len(boxes))
        return None


def crop_face(grey: np.ndarray, box: tuple[int, int, int, int], margin: float = 0.12) -> np.ndarray:
    """Square crop around `box` with a margin, resized to CROP_SIZE (edges replicated)."""
    x, y, w, h = box
    side = int(max(w, h) * (1 + 2 * margin))
    cx, cy = x + w / 2, y + h / 2
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    pad = side
    padded = cv2.copyMakeBorder(grey, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    patch = padded[y0 + pad : y0 + pad + side, x0 + pad : x0 + pad + side]
    return cv2.resize(patch, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_AREA)


def observe_faces(detector: FaceDetector, frames: Iterable[tuple[float, np.ndarray]], is_image: bool = False
                  ) -> list[FaceObservation]:
    """The main face of each frame that has one (frames as `media.iter_frames` yields them)."""
    observations = []
    for t, grey in frames:
        seen = detector.observe(t, grey, is_still=is_image)
        if seen is not None:
            observations.append(seen)
    return observations
