"""Faces: find and follow the faces in sampled frames and cut them out for the face branch.

Detector (`FaceDetector`): two shipped detectors, their faces merged. MediaPipe's BlazeFace
(short range: the model of mediapipe 0.10.21's wheel, as ONNX, 0.4 MB, ~1 ms a frame on
ONNX Runtime) finds faces near the camera that OpenCV's frontal-face Haar cascade misses --
tightly framed, turned or partly cut off (FER2013's faces on a frame: 95% against 71%) --
and, run again on squares of the frame where it found none on the whole (`_squares`), the faces
of a medium shot; the Haar
cascade (shipped inside opencv-python-headless, ~10 ms a 640x360 frame) finds the small
upright faces of a wide shot, which BlazeFace's short range cannot see (under ~13% of its
input's side). BlazeFace's eyes tell how far a head is tilted: its crop is turned upright
(`crop_face`), as FER2013's faces stand. Full searches are few (see `FaceTracker`); in the sampled frames
between, each face found is followed by matching the look it had at that search against a
small window around its last box (~0.5 ms), which also ties its boxes into a track: the
same person from frame to frame. Which track a segment is about, the face speaking, is
decided per segment (`main_track`), and which of its frames are judged, the sharpest of each
stretch (`clearest`). Crops are 48x48 grey, the FER2013 convention the face
branch is trained on, each framed as FER2013 frames its photos (`FER_SIDE_PER_BLAZE_WIDTH`).

Frames come with their grey levels as decoded (most video: 16-235) and a map to full range,
`levels` (`media.MediaInfo.levels`): each region read (a search's frame, a followed face's
window, a crop) is mapped before it is resized, so every pixel read is the one a frame mapped
whole would give, for a fraction of the work.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from importlib import resources

import cv2
import numpy as np

CROP_SIZE = 48
#: Which detector cut the faces, for caches of crops: faces cut by another are other crops.
DETECTOR = "blazeface-short-range on the frame and its squares+haar, fer2013-framed, eyes levelled"
#: Detection runs on a copy scaled to this longer side: on the shared real media it finds the
#: same faces as at 640 px in about 40% of the time; crops are still cut from the full frame.
DETECT_MAX_SIDE = 320
#: The Haar cascade looks for faces up to this share of the searched frame's longer side: the small faces
#: of a wide shot, which BlazeFace's short range cannot see (under ~13% of its input's side); larger ones
#: BlazeFace finds, on the whole frame or its squares. Its larger scales were a third of its time.
HAAR_MAX_FRACTION = 0.2
#: A still image this small or smaller is taken as an already-cropped face (FER2013 / CK+ style).
TIGHT_CROP_MAX_SIDE = 96
#: A tight still smaller than this on a side holds no readable face (FER2013's are 48 px).
MIN_STILL_SIDE = 24
#: Seconds between full searches of a frame while no face is followed; twice that while faces are
#: followed (a face lost, as at a cut, brings a full search at once).
DETECT_EVERY_S = 2.0
#: Mean grey-level change (of the picture at 32x18) from one sampled frame to the next above which a
#: cut is taken to lie between them (`FaceTracker(cuts=True)`: where people are told apart, a face
#: after a cut is a new track, and its identity says whose it is).
CUT_DIFF = 20.0
#: The mouth in a crop (rows, columns): the lower middle of a face box with its margin.
MOUTH = (slice(30, 43), slice(13, 35))
#: While someone speaks, a face whose mouth moves this many times more than the largest face's
#: (and more than MIN_MOUTH_MOTION grey levels a frame, above codec noise) is taken as the speaker.
SPEAKING_MARGIN = 1.5
MIN_MOUTH_MOTION = 2.0
#: Between full searches a face is followed on copies scaled so that it is this many pixels wide.
FOLLOW_SIDE = 24
#: A face followed is gone where its best match falls below this normalised correlation. On the
#: shared media a face up to four seconds after its search still scores 0.52 or more; the
#: background it leaves behind, at most 0.24.
FOLLOW_MIN_MATCH = 0.35


@dataclass(frozen=True, eq=False)
class FaceObservation:
    """A face seen in one sampled frame.

    Its crop is cut from the frame only when asked for (`crop`): a segment judges at most
    the model's `max_faces` of the faces seen in it, a 5 s stretch sampled at 5 fps shows 25, and
    cutting every one cost the speed benchmark a tenth of its wall time."""

    time: float
    box: tuple[int, int, int, int]  # x, y, w, h in the sampled frame
    frame: np.ndarray = field(repr=False)  # the grey sampled frame it was seen in
    n_faces: int = 1  # faces seen in that frame
    track: int = 0  # the same number for the same face followed over frames
    whole: bool = False  # a tight still (FER2013 style): the frame is the face
    levels: np.ndarray | None = field(default=None, repr=False)  # the frame's grey levels to full range
    roll: float = 0.0  # degrees the head is tilted (clockwise as seen), from the eyes at the last full search

    @cached_property
    def crop(self) -> np.ndarray:
        """(CROP_SIZE, CROP_SIZE) uint8: the face cut out with its margin, eyes levelled, or the whole tight still."""
        if self.whole:
            return cv2.resize(levelled(self.frame, self.levels), (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_AREA)
        return crop_face(self.frame, self.box, levels=self.levels, roll=self.roll)


#: BlazeFace's input side, and the score (after the sigmoid) at which it reports a face: MediaPipe's own.
BLAZE_SIDE = 128
BLAZE_MIN_SCORE = 0.5
#: The score a face found in a square of the frame (`_squares`) needs: on the shared media's faceless
#: frames, squares scored 0.55-0.57 at most (an arm, a doorway), real faces 0.85 and more.
SQUARE_MIN_SCORE = 0.65
#: BlazeFace boxes overlapping more than this (intersection over union) are one face: MediaPipe's own.
BLAZE_SAME_FACE = 0.3
#: Each detector's box redrawn as FER2013 frames its photos, so that every crop (the box with
#: `crop_face`'s margin) is framed as the photos the face branch mostly learnt from. Measured on
#: 1,149 FER2013 Training photos shown on a frame as the composite clips show them
#: (docs/experiments.md, "Face finding"): FER2013's square is 1.012 BlazeFace widths a side (quartiles
#: 0.93-1.12), its centre 0.104 widths above BlazeFace's (0.06-0.135); 0.832 Haar widths (0.78-0.90),
#: centred on Haar's (Haar's own box cut 19% wider than the photo).
FER_SIDE_PER_BLAZE_WIDTH = 1.012
FER_LIFT_PER_BLAZE_WIDTH = 0.104
FER_SIDE_PER_HAAR_WIDTH = 0.832
#: A Haar face overlapping a BlazeFace face by more than this (both redrawn) is the same face.
SAME_FACE = 0.3
#: A head tilted less than this (degrees) is cut as it is: the face branch learnt rolls of ±15°, and
#: levelling costs a rotation of the crop. Tilts beyond `MAX_ROLL` are taken as the keypoints' error.
MIN_ROLL = 5.0
MAX_ROLL = 45.0


def _blaze_anchors() -> np.ndarray:
    """(896, 2) anchor centres of BlazeFace short range, in its input's [0, 1] coordinates: a
    16x16 grid (stride 8) with 2 anchors a cell, then an 8x8 grid (stride 16) with 6, as
    MediaPipe's SSD anchor options for this model lay them out."""
    out = []
    for grid, per_cell in ((16, 2), (8, 6)):
        ys, xs = np.mgrid[0:grid, 0:grid]
        centres = np.stack([(xs + 0.5) / grid, (ys + 0.5) / grid], -1).reshape(-1, 2)
        out.append(np.repeat(centres, per_cell, axis=0))
    return np.concatenate(out).astype(np.float32)


@lru_cache(maxsize=1)
def _blaze_session():
    from .runtime import one_thread_session

    return one_thread_session(resources.files("avemo") / "assets" / "faces" / "blazeface_short_range.onnx")


class BlazeFace:
    """MediaPipe's BlazeFace, short range (Apache-2.0; converted from mediapipe 0.10.21's
    `face_detection_short_range.tflite` to ONNX with tflite2onnx, outputs equal to 2e-4): faces
    that fill an eighth or more of a frame, frontal or turned, in ~1 ms a frame."""

    def __init__(self) -> None:
        self._session = _blaze_session()
        self._anchors = _blaze_anchors()

    def detect(self, grey: np.ndarray, min_score: float = BLAZE_MIN_SCORE
               ) -> list[tuple[float, tuple[int, int, int, int], float]]:
        """(score, box (x, y, w, h) as FER2013 frames its photos, roll) of each face in a grey frame, in
        its own pixels. Roll: degrees the head is tilted (clockwise as seen), from its two eye keypoints
        (regression columns 4-7); the FER2013 framing is lifted along the face's own up."""
        h, w = grey.shape[:2]
        scale = BLAZE_SIDE / max(h, w)
        small = cv2.resize(grey, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        square = np.zeros((BLAZE_SIDE, BLAZE_SIDE), np.float32)  # letterboxed, black bars as MediaPipe pads
        y0, x0 = (BLAZE_SIDE - small.shape[0]) // 2, (BLAZE_SIDE - small.shape[1]) // 2
        square[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small
        x = np.broadcast_to(square / 127.5 - 1.0, (1, 3, BLAZE_SIDE, BLAZE_SIDE))  # grey as RGB
        regress, logits = self._session.run(None, {"input": np.ascontiguousarray(x)})
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits[0, :, 0], -80, 80)))
        keep = np.flatnonzero(scores >= min_score)
        if not len(keep):
            return []
        centre = (self._anchors[keep] * BLAZE_SIDE + regress[0, keep, :2] - [x0, y0]) / scale
        size = regress[0, keep, 2:4] / scale
        eyes = regress[0, keep, 6:8] - regress[0, keep, 4:6]  # from one eye to the other, in its input's pixels
        boxes = np.concatenate([centre - size / 2, centre + size / 2, eyes], 1)  # x0, y0, x1, y1 in the frame; eyes
        faces = []
        for score, (left, top, right, bottom, ex, ey) in _weighted_nms(boxes, scores[keep]):
            width = right - left
            if ex < 0:  # whichever eye the model put first: the vector from the left one as seen
                ex, ey = -ex, -ey
            roll = float(np.degrees(np.arctan2(ey, ex)))
            roll = roll if abs(roll) <= MAX_ROLL else 0.0
            up = np.array([np.sin(np.radians(roll)), -np.cos(np.radians(roll))])  # the face's up, in the frame
            cx, cy = np.array([(left + right) / 2, (top + bottom) / 2]) + FER_LIFT_PER_BLAZE_WIDTH * width * up
            faces.append((score, _fer_framed(cx, cy, FER_SIDE_PER_BLAZE_WIDTH * width), roll))
        return faces


def _weighted_nms(boxes: np.ndarray, scores: np.ndarray) -> list[tuple[float, np.ndarray]]:
    """MediaPipe's blending suppression: boxes (x0, y0, x1, y1, then any columns to blend with
    them) overlapping the best-scored one are one face, placed at their score-weighted mean
    (steadier from frame to frame than the best box alone)."""
    faces, left = [], np.argsort(-scores)
    while len(left):
        best = boxes[left[0]]
        lo, hi = np.maximum(best[:2], boxes[left, :2]), np.minimum(best[2:4], boxes[left, 2:4])
        inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
        area = np.prod(boxes[left, 2:4] - boxes[left, :2], axis=1)
        same = inter / (area[0] + area - inter + 1e-9) > BLAZE_SAME_FACE
        weights = scores[left[same]]
        faces.append((float(scores[left[0]]), (boxes[left[same]] * weights[:, None]).sum(0) / weights.sum()))
        left = left[~same]
    return faces


def _squares(grey: np.ndarray) -> Iterator[tuple[int, int, np.ndarray]]:
    """(x0, y0, view) of the frame's squares side by side along its longer side (three for 16:9,
    overlapping; none for a frame about square). Why: BlazeFace's short range sees faces of an eighth
    of its input or more; a face in a medium shot fills less of the whole frame, but that share of a
    square (on FER2013's faces shown at 56-150 px on a 640x360 frame, turned up to 20 degrees: 59%
    found by both detectors on the whole frame, 80% with the squares, ~5 ms more a search that needs them)."""
    h, w = grey.shape[:2]
    side = min(h, w)
    if max(h, w) < 1.2 * side:
        return
    n = int(np.ceil(max(h, w) / side)) + 1
    for start in np.linspace(0, max(h, w) - side, n).round().astype(int):
        yield (start, 0, grey[:, start:start + side]) if w > h else (0, start, grey[start:start + side])


def _fer_framed(cx: float, cy: float, side: float) -> tuple[int, int, int, int]:
    """The square (x, y, w, h) of `side` centred at (cx, cy)."""
    return round(cx - side / 2), round(cy - side / 2), round(side), round(side)


def _frontal_cascade() -> cv2.CascadeClassifier:
    """OpenCV's frontal face cascade, which its 4.x wheels ship."""
    path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise RuntimeError(f"OpenCV's face cascade could not be loaded from {path}")
    return cascade


class FaceDetector:
    """The faces BlazeFace finds, and those the Haar cascade finds beside them (the small ones
    of a wide shot), each boxed as FER2013 frames its photos. `detectors` names which of the
    two search ("blazeface", "haar"): both unless a benchmark asks for one alone."""

    def __init__(self, min_face_fraction: float = 0.08, detectors: tuple[str, ...] = ("blazeface", "haar")) -> None:
        self._cascade: cv2.CascadeClassifier | None = None  # both opened at their first search:
        self._blaze: BlazeFace | None = None  # a tight still needs neither
        self.min_face_fraction = min_face_fraction
        self.detectors = detectors

    def detect(self, grey: np.ndarray, levels: np.ndarray | None = None) -> list[tuple[int, int, int, int]]:
        """Boxes (x, y, w, h) of the faces in a grey frame (its `levels` mapped), largest first, in its own pixels."""
        return [box for box, _ in self.find(grey, levels)]

    def find(self, grey: np.ndarray, levels: np.ndarray | None = None) -> list[tuple[tuple[int, int, int, int], float]]:
        """(box, roll) of each face in a grey frame, as `detect` orders them; roll in degrees from
        BlazeFace's eyes (0 for a face only the Haar cascade found: it finds upright faces)."""
        grey = levelled(grey, levels)
        h, w = grey.shape[:2]
        scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
        small = cv2.resize(grey, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA) if scale < 1 else grey
        side = max(12, int(min(small.shape) * self.min_face_fraction))
        found: list[tuple[tuple[int, int, int, int], float]] = []
        if "blazeface" in self.detectors:
            self._blaze = self._blaze or BlazeFace()
            faces = self._blaze.detect(small)
            if not faces:  # no face near the camera: the frame's squares, for the faces of a medium shot
                faces = [(score, (x + x0, y + y0, bw, bh), roll) for x0, y0, square in _squares(small)
                         for score, (x, y, bw, bh), roll in self._blaze.detect(square, SQUARE_MIN_SCORE)]
            for _, box, roll in faces:
                if box[2] >= FER_SIDE_PER_HAAR_WIDTH * side and all(_overlap(box, other) <= SAME_FACE for other, _ in found):
                    found.append((box, roll))
        if "haar" in self.detectors:
            self._cascade = self._cascade or _frontal_cascade()
            # steps of 15% in size find the same faces in the shared media as 10% steps, in 70% of the time;
            # faces larger than HAAR_MAX_FRACTION of the frame are BlazeFace's (a third of the search's time)
            largest = max(side + 1, round(HAAR_MAX_FRACTION * max(small.shape)))
            for hx, hy, hw, _ in self._cascade.detectMultiScale(small, scaleFactor=1.15, minNeighbors=5, minSize=(side, side),
                                                                maxSize=(largest, largest)):
                box = _fer_framed(hx + hw / 2, hy + hw / 2, FER_SIDE_PER_HAAR_WIDTH * hw)
                if all(_overlap(box, other) <= SAME_FACE for other, _ in found):
                    found.append((box, 0.0))
        faces = [(tuple(round(v / scale) for v in box), roll) for box, roll in found]
        return sorted(faces, key=lambda f: (-float(f[0][2] * f[0][3]), _off_centre(f[0], (w / 2, h / 2))))

    def observe(self, time: float, grey: np.ndarray, is_still: bool = False,
                levels: np.ndarray | None = None) -> FaceObservation | None:
        """The main face of one frame, or None.

        A still of at most TIGHT_CROP_MAX_SIDE pixels is taken whole as the face crop
        (FER2013 / CK+ style, the face filling the image): a detector would find no
        face in it, or cut a part of the face out of it.
        """
        h, w = grey.shape[:2]
        if is_still and max(h, w) <= TIGHT_CROP_MAX_SIDE:
            if min(h, w) < MIN_STILL_SIDE:  # a thumbnail, an icon: too small to show an expression
                return None
            return FaceObservation(time, (0, 0, w, h), grey, whole=True, levels=levels)
        faces = self.find(grey, levels)
        if faces:
            return FaceObservation(time, faces[0][0], grey, len(faces), levels=levels, roll=faces[0][1])
        return None


def inside_frame(box: tuple[int, int, int, int], shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """The part of `box` (x, y, w, h) inside a frame of `shape` (height, width, ...). Why: a face at
    the picture's edge is cut with its FER2013 framing reaching past it (the crop pads), but a
    user drawing the box judged wants it on the picture, never at negative pixels."""
    x, y, w, h = box
    left, top = max(0, x), max(0, y)
    right, bottom = min(shape[1], x + w), min(shape[0], y + h)
    return left, top, max(0, right - left), max(0, bottom - top)


def levelled(grey: np.ndarray, levels: np.ndarray | None) -> np.ndarray:
    """`grey` (a frame or a region of it) with its grey levels mapped by `levels` (None: as it is)."""
    return grey if levels is None else cv2.LUT(grey, levels)


def crop_face(grey: np.ndarray, box: tuple[int, int, int, int], margin: float = 0.12,
              levels: np.ndarray | None = None, roll: float = 0.0) -> np.ndarray:
    """Square crop around `box` with a margin, resized to CROP_SIZE (edges replicated); a head
    tilted `roll` degrees (at least MIN_ROLL) turned upright first, as FER2013's faces stand: the
    square around it cut 1.5 times as wide, scaled, turned, and its middle kept."""
    x, y, w, h = box
    side = int(max(w, h) * (1 + 2 * margin))
    if abs(roll) < MIN_ROLL:
        x0, y0 = int(round(x + w / 2 - side / 2)), int(round(y + h / 2 - side / 2))
        return cv2.resize(_region(grey, x0, y0, side, side, levels), (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_AREA)
    wide, out = int(side * 1.5), int(CROP_SIZE * 1.5)
    x0, y0 = int(round(x + w / 2 - wide / 2)), int(round(y + h / 2 - wide / 2))
    patch = cv2.resize(_region(grey, x0, y0, wide, wide, levels), (out, out), interpolation=cv2.INTER_AREA)
    turn = cv2.getRotationMatrix2D((out / 2, out / 2), roll, 1.0)
    turn[:, 2] -= (out - CROP_SIZE) / 2  # keep the middle CROP_SIZE square
    return cv2.warpAffine(patch, turn, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _region(grey: np.ndarray, x0: int, y0: int, w: int, h: int, levels: np.ndarray | None) -> np.ndarray:
    """The frame's (w, h) region at (x0, y0), its levels mapped, its edges replicated where it
    reaches beyond the frame (a face at the border). Only the region is padded, never the whole
    frame (10x cheaper)."""
    a, c, inside_w, inside_h = inside_frame((x0, y0, w, h), grey.shape)
    b, d = a + inside_w, c + inside_h
    patch = levelled(grey[c:d, a:b], levels)
    if patch.shape != (h, w):
        patch = cv2.copyMakeBorder(patch, c - y0, y0 + h - d, a - x0, x0 + w - b, cv2.BORDER_REPLICATE)
    return patch


@dataclass(frozen=True)
class Look:
    """A face as it looked at its last full search, to follow it by between searches."""

    template: np.ndarray  # the face, scaled to FOLLOW_SIDE wide
    scale: float  # of the template, against the frame


def look_of(grey: np.ndarray, box: tuple[int, int, int, int], levels: np.ndarray | None = None) -> Look:
    x, y, w, h = box
    scale = FOLLOW_SIDE / max(w, 1)
    patch = _region(grey, x, y, w, h, levels)
    size = (FOLLOW_SIDE, max(1, round(h * scale)))
    return Look(cv2.resize(patch, size, interpolation=cv2.INTER_LINEAR), scale)


def follow(grey: np.ndarray, box: tuple[int, int, int, int], look: Look,
           levels: np.ndarray | None = None) -> tuple[int, int, int, int] | None:
    """Where the face last at `box` is now: the best match of its `look` in a window half a
    face wider on each side, at the same size; None where nothing there matches well enough."""
    x, y, w, h = box
    x0, y0 = max(0, x - w // 2), max(0, y - h // 2)
    x1, y1 = min(grey.shape[1], x + w + w // 2), min(grey.shape[0], y + h + h // 2)
    size = (round((x1 - x0) * look.scale), round((y1 - y0) * look.scale))
    th, tw = look.template.shape
    if size[0] < tw or size[1] < th:
        return None
    window = cv2.resize(levelled(grey[y0:y1, x0:x1], levels), size, interpolation=cv2.INTER_LINEAR)
    _, best, _, (bx, by) = cv2.minMaxLoc(cv2.matchTemplate(window, look.template, cv2.TM_CCOEFF_NORMED))
    if best < FOLLOW_MIN_MATCH:
        return None
    return x0 + round(bx / look.scale), y0 + round(by / look.scale), w, h


def _off_centre(box: tuple[int, int, int, int], centre: tuple[float, float]) -> float:
    """Distance from the middle of `box` to `centre`."""
    return float(np.hypot(box[0] + box[2] / 2 - centre[0], box[1] + box[3] / 2 - centre[1]))


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(0, w) * max(0, h)
    return inter / float(a[2] * a[3] + b[2] * b[3] - inter)


class FaceTracker:
    """Faces seen in sampled frames as they come (`step`), tied into tracks.

    A full search runs on the first frame, then every `detect_every` seconds while no
    face is followed, every twice that while faces are (a talking head needs few), and
    at once where a face followed is lost (a cut, someone leaving). Its boxes continue
    the tracks they overlap and start new ones. Between full searches each track is
    followed from its last box (`follow`). A tight still (FER2013 style) is one face,
    taken whole. `levels`: the frames' grey levels to full range (see the module's docstring).
    """

    def __init__(self, detector: FaceDetector, is_image: bool = False, detect_every: float = DETECT_EVERY_S,
                 levels: np.ndarray | None = None, cuts: bool = False) -> None:
        self.detector = detector
        self.cuts = cuts  # end every track at a cut: a face after it is a new track, wherever it is
        self._thumb: np.ndarray | None = None  # the last frame, small: what a cut is told by
        self.is_image = is_image
        self.detect_every = detect_every
        self.levels = levels
        self._live: dict[int, tuple[int, int, int, int]] = {}  # track -> its last box
        self._looks: dict[int, Look] = {}  # track -> its look at the last full search
        self._rolls: dict[int, float] = {}  # track -> its head's tilt at the last full search
        self._next_full = 0.0
        self._next_track = 0

    def step(self, t: float, grey: np.ndarray) -> list[FaceObservation]:
        """The faces of the frame at `t` seconds."""
        if self.is_image and max(grey.shape[:2]) <= TIGHT_CROP_MAX_SIDE:
            whole = self.detector.observe(t, grey, is_still=True, levels=self.levels)  # taken whole; other photos are searched
            return [whole] if whole else []
        if self.cuts and self._cut(grey):
            self._live, self._looks, self._rolls, self._next_full = {}, {}, {}, t
        live = self._live
        followed = {} if t + 1e-6 >= self._next_full else \
            {k: b for k, b in ((k, follow(grey, box, self._looks[k], self.levels)) for k, box in live.items()) if b}
        if len(followed) < len(live) or t + 1e-6 >= self._next_full:  # time for a full search, or a face was lost
            found: dict[int, tuple[int, int, int, int]] = {}
            rolls: dict[int, float] = {}
            for box, roll in self.detector.find(grey, self.levels):
                match = max(live, key=lambda k: _overlap(live[k], box), default=None)
                if match is None or match in found or _overlap(live[match], box) <= 0.3:
                    match, self._next_track = self._next_track, self._next_track + 1
                found[match], rolls[match] = box, roll
            self._rolls = rolls
            self._looks = {k: look_of(grey, box, self.levels) for k, box in found.items()}
            self._next_full = t + self.detect_every * (2 if found else 1)
        else:
            found = followed
        self._live = found
        return [FaceObservation(t, box, grey, len(found), k, levels=self.levels, roll=self._rolls.get(k, 0.0))
                for k, box in found.items()]


    def _cut(self, grey: np.ndarray) -> bool:
        """Whether `grey` follows a cut: its small grey picture differs from the last one's by more than
        `CUT_DIFF` levels on average (a cut changes the whole picture; a face moving, a small part of it)."""
        step = max(1, min(grey.shape[:2]) // 72)  # every few pixels first: the mean of 32 x 18 areas needs no more
        thumb = cv2.resize(grey[::step, ::step], (32, 18), interpolation=cv2.INTER_AREA).astype(np.int16)
        cut = self._thumb is not None and thumb.shape == self._thumb.shape and float(np.abs(thumb - self._thumb).mean()) > CUT_DIFF
        self._thumb = thumb
        return cut


def observe_faces(detector: FaceDetector, frames: Iterable[tuple[float, np.ndarray]], is_image: bool = False,
                  detect_every: float = DETECT_EVERY_S, levels: np.ndarray | None = None) -> list[FaceObservation]:
    """Every face seen in the frames (as `media.iter_frames` yields them, their grey `levels`
    mapped as `probe` says), tied into tracks (`FaceTracker`)."""
    tracker = FaceTracker(detector, is_image, detect_every, levels)
    return [o for t, grey in frames for o in tracker.step(t, grey)]


def main_track(observations: list[FaceObservation], speech: Sequence[tuple[float, float]] = ()) -> list[FaceObservation]:
    """The observations of the face a stretch of video is about.

    Where several faces are seen while someone speaks (`speech`: (start, end) seconds),
    the one whose mouth moves most then, if clearly more (SPEAKING_MARGIN times, and more
    than codec noise) than the largest face's: the face speaking. Else the track seen
    largest and longest (the sum of its box areas), as interviews frame the speaker.
    """
    tracks: dict[int, list[FaceObservation]] = {}
    for o in observations:
        tracks.setdefault(o.track, []).append(o)
    if not tracks:
        return []
    largest = max(tracks, key=lambda k: sum(o.box[2] * o.box[3] for o in tracks[k]))
    if speech and len(tracks) > 1:
        voiced = {k: [x for x in o if any(s <= x.time < e for s, e in speech)] for k, o in tracks.items()}
        motion = {k: mouth_motion(o) for k, o in voiced.items() if len(o) >= 3}
        moving = max(motion, key=motion.__getitem__, default=largest)
        if motion.get(moving, 0.0) >= max(MIN_MOUTH_MOTION, SPEAKING_MARGIN * motion.get(largest, 0.0)):
            return tracks[moving]
    return tracks[largest]


#: A segment judges its face's crops each chosen from this many frames of it, the sharpest kept.
CHOICE_PER_CROP = 3


def clearest(track: list[FaceObservation], n: int) -> list[FaceObservation]:
    """Up to `n` observations of a face, spread over its track: the track cut into `n` stretches,
    from each the sharpest of up to CHOICE_PER_CROP frames (`sharpness`). Why: in a video a face is
    smeared by motion, by the codec between key frames and by focus in some frames and not in
    others; an expression read from a smeared crop is a guess. Still spread over the track, so
    that an expression that changes is still seen."""
    if len(track) <= n:
        return track
    pick = np.linspace(0, len(track) - 1, min(len(track), CHOICE_PER_CROP * n)).round().astype(int)
    return [max((track[i] for i in part), key=sharpness) for part in np.array_split(pick, n)]


def sharpness(observation: FaceObservation) -> float:
    """How much fine detail a face holds: the variance of the Laplacian (edges: eyes, brows, mouth)
    of its box, read every few pixels (about CROP_SIZE across: cutting each frame's crop to rank them
    cost the talking loop a twentieth of its time), low where motion, focus or a codec smeared it."""
    x, y, w, h = inside_frame(observation.box, observation.frame.shape)
    step = max(1, w // CROP_SIZE)
    view = observation.frame[y:y + h:step, x:x + w:step]
    return float(cv2.Laplacian(view, cv2.CV_32F).var()) if view.size else 0.0


def mouth_motion(track: list[FaceObservation]) -> float:
    """How much a face's mouth moves: the mean change of its mouth region from one sampled
    frame to the next (grey levels, each region's own mean brightness taken out)."""
    mouths = [o.crop[MOUTH].astype(np.float32) for o in track]
    mouths = [m - m.mean() for m in mouths]
    steps = [float(np.abs(b - a).mean()) for a, b in zip(mouths, mouths[1:])]
    return float(np.mean(steps)) if steps else 0.0
