"""Faces: find and follow the faces in sampled frames and cut them out for the face branch.

Detector: OpenCV's frontal-face Haar cascade, shipped inside opencv-python-headless
(no download, ~10 ms a 640x360 frame on one core). A full search runs once every
`detect_every` seconds; in the sampled frames between, each face found is looked for
only near where it was (a small window, a narrow range of sizes: a few times cheaper),
which also ties its boxes into a track: the same person from frame to frame. Which
track a segment is about is decided per segment (`main_track`). Crops are 48x48 grey,
the FER2013 convention the face branch is trained on, with a margin like FER2013's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

CROP_SIZE = 48
#: Detection runs on a copy scaled to this longer side: on the shared real media it finds the
#: same faces as at 640 px in about 40% of the time; crops are still cut from the full frame.
DETECT_MAX_SIDE = 320
#: A still image this small or smaller is taken as an already-cropped face (FER2013 / CK+ style).
TIGHT_CROP_MAX_SIDE = 96
#: Seconds between full searches of a frame; faces are followed near their last box in between.
DETECT_EVERY_S = 2.0
#: Between full searches a face is looked for on a copy scaled so that it is about this wide.
NEAR_FACE_SIDE = 48


@dataclass(frozen=True)
class FaceObservation:
    """The main face seen in one sampled frame."""

    time: float
    box: tuple[int, int, int, int]  # x, y, w, h in the sampled frame
    crop: np.ndarray  # (CROP_SIZE, CROP_SIZE) uint8
    n_faces: int  # faces seen in that frame
    track: int = 0  # the same number for the same face followed over frames


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
        side = max(12, int(min(round(w * scale), round(h * scale)) * self.min_face_fraction))
        boxes = self._search(grey, scale, (0, 0), minNeighbors=6, minSize=(side, side))
        centre = (w / 2, h / 2)
        return sorted(boxes, key=lambda b: (-float(b[2] * b[3]), _off_centre(b, centre)))

    def detect_near(self, grey: np.ndarray, box: tuple[int, int, int, int]) -> tuple[int, int, int, int] | None:
        """The face nearest to where `box` was, searched in a window around it at sizes
        within ±30% of it, on a copy scaled so the face is ~48 px; None if it is gone."""
        x, y, w, h = box
        x0, y0 = max(0, x - w // 2), max(0, y - h // 2)
        x1, y1 = min(grey.shape[1], x + w + w // 2), min(grey.shape[0], y + h + h // 2)
        scale = min(1.0, NEAR_FACE_SIDE / max(w, 1))
        side = w * scale
        boxes = self._search(grey[y0:y1, x0:x1], scale, (x0, y0), minNeighbors=3,
                             minSize=(round(side * 0.7),) * 2, maxSize=(round(side * 1.3),) * 2)
        centre = (x + w / 2, y + h / 2)
        return min(boxes, key=lambda b: _off_centre(b, centre), default=None)

    def _search(self, image: np.ndarray, scale: float, offset: tuple[int, int], **limits) -> list[tuple[int, int, int, int]]:
        """The cascade's boxes on a copy of `image` scaled by `scale` (<= 1; sizes in `limits` are
        in the copy's pixels), mapped back to `image`'s pixels and shifted by `offset`."""
        if scale < 1:
            size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        found = self._cascade.detectMultiScale(image, scaleFactor=1.1, **limits)
        return [(round(bx / scale) + offset[0], round(by / scale) + offset[1], round(bw / scale), round(bh / scale))
                for bx, by, bw, bh in found]

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
    """Square crop around `box` with a margin, resized to CROP_SIZE (edges replicated).
    Only the crop's own patch is padded, never the whole frame (10x cheaper)."""
    x, y, w, h = box
    side = int(max(w, h) * (1 + 2 * margin))
    x0, y0 = int(round(x + w / 2 - side / 2)), int(round(y + h / 2 - side / 2))
    rows, cols = grey.shape[:2]
    a, b = max(0, x0), min(cols, x0 + side)
    c, d = max(0, y0), min(rows, y0 + side)
    patch = grey[c:d, a:b]
    if patch.shape != (side, side):
        patch = cv2.copyMakeBorder(patch, c - y0, y0 + side - d, a - x0, x0 + side - b, cv2.BORDER_REPLICATE)
    return cv2.resize(patch, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_AREA)


def _off_centre(box: tuple[int, int, int, int], centre: tuple[float, float]) -> float:
    """Distance from the middle of `box` to `centre`."""
    return float(np.hypot(box[0] + box[2] / 2 - centre[0], box[1] + box[3] / 2 - centre[1]))


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(0, w) * max(0, h)
    return inter / float(a[2] * a[3] + b[2] * b[3] - inter)


def observe_faces(detector: FaceDetector, frames: Iterable[tuple[float, np.ndarray]], is_image: bool = False,
                  detect_every: float = DETECT_EVERY_S) -> list[FaceObservation]:
    """Every face seen in the frames (as `media.iter_frames` yields them), tied into tracks.

    A full search runs on the first frame and then once every `detect_every` seconds;
    its boxes continue the tracks they overlap and start new ones. Between full
    searches each live track is looked for near its last box only, and ends where it
    is not found. A tight still (FER2013 style) is one face, taken whole.
    """
    observations: list[FaceObservation] = []
    live: dict[int, tuple[int, int, int, int]] = {}  # track -> its last box
    next_full, next_track = 0.0, 0
    for t, grey in frames:
        if is_image and max(grey.shape[:2]) <= TIGHT_CROP_MAX_SIDE:
            return [detector.observe(t, grey, is_still=True)]  # taken whole; other photos are searched below
        if t + 1e-6 >= next_full:
            next_full = t + detect_every
            found: dict[int, tuple[int, int, int, int]] = {}
            for box in detector.detect(grey):
                match = max(live, key=lambda k: _overlap(live[k], box), default=None)
                if match is not None and match not in found and _overlap(live[match], box) > 0.3:
                    found[match] = box
                else:
                    found[next_track] = box
                    next_track += 1
        else:
            found = {k: b for k, b in ((k, detector.detect_near(grey, box)) for k, box in live.items()) if b}
        live = found
        observations += [FaceObservation(t, box, crop_face(grey, box), len(found), k) for k, box in found.items()]
    return observations


def main_track(observations: list[FaceObservation]) -> list[FaceObservation]:
    """The observations of the face a stretch of video is about: the track seen largest
    and longest in it (the sum of its box areas), as interviews frame the speaker."""
    area: dict[int, float] = {}
    for o in observations:
        area[o.track] = area.get(o.track, 0.0) + o.box[2] * o.box[3]
    best = max(area, key=area.__getitem__, default=None)
    return [o for o in observations if o.track == best]
