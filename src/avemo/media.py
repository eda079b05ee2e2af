"""Decoding: any file FFmpeg reads, through PyAV's bundled FFmpeg (no system ffmpeg).

Audio comes out as 16 kHz mono float32, the rate the VAD and the log-Mel front-end
expect. Frames come out one at a time, sampled at a fixed rate and converted to small
grey images, so a long video is never held in memory: only what the face stage keeps
of each sampled frame survives. A file that breaks off mid-way yields what decoded
before the break, with a warning, rather than nothing.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

import av
import cv2
import numpy as np

from .errors import AvemoError

SAMPLE_RATE = 16000
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
#: Frames are scaled so that their longer side is at most this before face detection.
MAX_FRAME_SIDE = 640

log = logging.getLogger("avemo")
T = TypeVar("T")


@dataclass(frozen=True)
class MediaInfo:
    """What a file holds, read from its container without decoding it."""

    path: Path
    duration: float  # seconds; 0 for a still image
    has_audio: bool
    has_video: bool
    is_image: bool
    width: int = 0  # of the picture as shown (upright), in pixels (0 without one)
    height: int = 0
    audio_track: int | None = None  # which audio stream holds the sound to analyse (`speech_track`)
    studio_range: bool = False  # its frames' grey levels run 16-235 (most video): see `levels`

    @property
    def levels(self) -> np.ndarray | None:
        """The map (a 256-entry LUT) from `iter_frames`' grey levels to full-range grey, or None
        where they are full range already. Why not mapped at decoding: the frames are the
        critical path of `predict` on two cores, and of each frame only the face's region is
        ever looked at closely (`faces.py` maps each region it reads, before any resizing,
        so that it reads the same pixels as if the whole frame had been mapped)."""
        return _FULL_RANGE if self.studio_range else None


def probe(path: str | Path) -> MediaInfo:
    """Open `path` and describe its streams, or raise AvemoError saying why it can't be used."""
    path = Path(path)
    if not path.exists():
        if path.is_symlink():
            try:
                os.stat(path)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise AvemoError(f"{path}: a symbolic link loop (the link leads back to itself)") from None
            raise AvemoError(f"{path}: a broken symbolic link (to {os.readlink(path)}, which does not exist)")
        raise AvemoError(f"{path}: no such file")
    if path.is_dir():
        raise AvemoError(f"{path}: is a folder, not a media file")
    if path.stat().st_size == 0:
        raise AvemoError(f"{path}: empty file (0 bytes)")
    try:
        with open(path, "rb"):
            pass
    except PermissionError:
        raise AvemoError(f"{path}: permission denied (not readable by this user)") from None
    try:
        with av.open(str(path)) as container:
            has_audio = bool(container.streams.audio)
            has_video = bool(container.streams.video)
            tracks = len(container.streams.audio)
            still_format = _is_still(container)
            duration = _duration(container)
            studio = has_video and _studio_range(container.streams.video[0].codec_context)
        size = _upright_size(path) if has_video else (0, 0)
        track = speech_track(path) if tracks > 1 else 0 if has_audio else None  # one track: nothing to listen to
    except av.FFmpegError as exc:
        raise _unreadable(path, exc) from None
    # what the file holds decides, not its name: a video renamed .jpg is still a video
    is_image = has_video and not has_audio and still_format
    if not has_audio and not has_video:
        raise AvemoError(f"{path}: has neither an audio nor a video stream")
    if is_image:
        duration = 0.0
        if size == (0, 0):
            raise AvemoError(f"{path}: damaged image (no picture decodes)")
    elif duration <= 0:
        raise AvemoError(f"{path}: zero-length media")
    return MediaInfo(path, duration, has_audio, has_video and not is_image, is_image, *size, audio_track=track,
                     studio_range=studio)


#: How long of each audio track is listened to when choosing the one with sound.
TRACK_SCAN_S = 60.0
#: A track whose peak stays below this (about -70 dBFS) has no sound worth analysing.
SILENT_PEAK = 3e-4


def speech_track(path: str | Path) -> int:
    """The index (among the audio streams) of the track to analyse: the default-flagged one
    if it is not silent, else the first that has sound, else the first.

    Why: films and recordings carry several tracks (a dub, a commentary, a silent
    placeholder before the real one); the first is not always the one with the voices.
    Each track is listened to for up to `TRACK_SCAN_S` seconds, until it has sound."""
    with av.open(str(path)) as container:
        streams = list(container.streams.audio)
        if len(streams) < 2:
            return 0
        default = [i for i, st in enumerate(streams) if st.disposition & av.stream.Disposition.default]
        meta = [dict(st.metadata) for st in streams]
    order = default + [i for i in range(len(streams)) if i not in default]
    chosen = next((i for i in order if _has_sound(path, i)), order[0])
    meta = meta[chosen]
    said = ", ".join(f"{k} {meta[k]}" for k in ("language", "title") if meta.get(k) not in (None, "", "und"))
    log.info("%s: audio track %d of %d used%s%s", path, chosen + 1, len(streams), f" ({said})" if said else "",
             "" if chosen == order[0] else f"; track {order[0] + 1} is silent")
    return chosen


def _has_sound(path: str | Path, track: int) -> bool:
    """Whether audio track `track` rises above `SILENT_PEAK` within its first `TRACK_SCAN_S` seconds.
    Each track is read from a container of its own: seeking back is not possible in every format."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    heard = 0
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(container.streams.audio[track]):
                for out in resampler.resample(frame):
                    samples = np.nan_to_num(out.to_ndarray())
                    if samples.size and np.abs(samples).max() > SILENT_PEAK:
                        return True
                    heard += out.samples
                if heard >= TRACK_SCAN_S * SAMPLE_RATE:
                    break
    except av.FFmpegError:
        pass
    return False


def _upright_size(path: str | Path) -> tuple[int, int]:
    """The picture's (width, height) as shown, after its display matrix (read off its first
    frame); (0, 0) for a still image whose picture does not decode."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        try:
            frame = next(container.decode(stream), None)
        except av.FFmpegError:
            frame = None
        if frame is None:
            return (0, 0) if _is_still(container) else (stream.codec_context.width, stream.codec_context.height)
        turned = orientation(frame, _is_still(container)) in TURNED
    return (frame.height, frame.width) if turned else (frame.width, frame.height)


def _is_still(container: av.container.InputContainer) -> bool:
    """Whether FFmpeg reads the file as a still image (an image demuxer)."""
    return container.format.name.endswith("_pipe") or container.format.name == "image2"


#: Orientations (`orientation`) that swap a picture's width and height.
TURNED = frozenset({"clock", "cclock", "clock_flip", "cclock_flip"})


def _side_data(frame: av.VideoFrame) -> list:
    """A frame's side data: PyAV up to 18.1.0 iterates them, 18.1.1 iterates their types (keys of a mapping
    whose `values()` fails on the older ones)."""
    data = frame.side_data
    return [entry if hasattr(entry, "type") else data[entry] for entry in data]


def orientation(frame: av.VideoFrame, still: bool = False) -> str | None:
    """How a frame must be turned to be shown upright, from the display matrix the container
    gives it (phones store portrait video sideways plus such a matrix; FFmpeg gives a JPEG's
    EXIF orientation the same way): None, "clock", "cclock" (90 degrees either way),
    "clock_flip", "cclock_flip" (a transposition), "hflip", "vflip" or "hvflip" (180 degrees).

    The same choice as ffmpeg's autorotate (fftools): the rotation read off the matrix,
    then the signs of its entries for the mirrored cases.

    A still image (`still`) is read by its rotation alone, through PyAV's own reading of the
    matrix: PyAV's `frame.side_data` wraps each side data's metadata in a dictionary it then
    frees a second time, and the still-image decoders attach metadata (a PNG's ICC profile
    name, FFmpeg 8's EXIF): reading it there crashed the process when the frame was freed
    (issue 44's PNG segfault). Video decoders attach none, and video needs the mirrored cases;
    photos do not (cameras write EXIF orientations 1, 3, 6 and 8: no mirror)."""
    if still:
        return _ROTATED.get(round(frame.rotation))
    try:
        matrix = next((np.frombuffer(bytes(sd), np.int32) for sd in _side_data(frame)
                       if str(sd.type).endswith("DISPLAYMATRIX")), None)
    except ValueError:  # side data of a kind PyAV does not know: the rotation alone, no mirror
        return _ROTATED.get(round(frame.rotation))
    if matrix is None or len(matrix) < 9:
        return None
    a, b, c, d = (float(v) / 65536 for v in (matrix[0], matrix[1], matrix[3], matrix[4]))
    if not (np.hypot(a, c) and np.hypot(b, d)):
        return None
    theta = -round(-np.degrees(np.arctan2(b / np.hypot(b, d), a / np.hypot(a, c))))
    theta -= 360 * np.floor(theta / 360 + 0.9 / 360)
    if abs(theta - 90) < 1:
        return "cclock_flip" if matrix[3] > 0 else "clock"
    if abs(theta - 270) < 1:
        return "clock_flip" if matrix[3] < 0 else "cclock"
    if abs(theta - 180) < 1:
        return {(True, True): "hvflip", (True, False): "hflip", (False, True): "vflip"}.get((matrix[0] < 0, matrix[4] < 0))
    if abs(theta) < 1 and matrix[4] < 0:
        return "vflip"
    return None


#: `frame.rotation` (degrees, as PyAV reads the display matrix) to the turn that shows it upright.
_ROTATED = {90: "cclock", -90: "clock", 270: "clock", -270: "cclock", 180: "hvflip", -180: "hvflip"}


def upright(grey: np.ndarray, how: str | None) -> np.ndarray:
    """`grey` turned as `orientation` says."""
    if how is None:
        return grey
    turn = {"clock": cv2.ROTATE_90_CLOCKWISE, "cclock": cv2.ROTATE_90_COUNTERCLOCKWISE}.get(how)
    if turn is not None:
        return cv2.rotate(grey, turn)
    if how == "cclock_flip":
        return cv2.transpose(grey)
    if how == "clock_flip":
        return cv2.flip(cv2.transpose(grey), -1)
    return cv2.flip(grey, {"hflip": 1, "vflip": 0, "hvflip": -1}[how])


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The audio track with sound (`speech_track`), whole, as mono float32 at `sample_rate` (see `iter_audio`)."""
    blocks = list(iter_audio(path, sample_rate))
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)


def iter_audio(path: str | Path, sample_rate: int = SAMPLE_RATE, block_s: float = 5.0,
               track: int | None = None) -> Iterator[np.ndarray]:
    """Decode an audio track (index `track` among the audio streams; by default the one
    `speech_track` chooses) to mono float32 at `sample_rate`, in blocks of about `block_s`
    seconds, so that a long file's sound is never held whole. Samples that are not finite
    (NaN, inf: a broken decoder or float WAV) are counted, replaced by silence and named
    in a warning: nothing after this sees them.

    Why resample here: every later stage (VAD, log-Mel, the model) is defined at one
    rate, so the rate is fixed once, at the edge of the program.
    """
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    block, held, total, counted = [], 0, 0, [0]
    try:
        if track is None:
            track = speech_track(path)
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AvemoError(f"{path}: no audio track")
            stream = container.streams.audio[track]
            stream.thread_type = "AUTO"
            declared = _stream_seconds(stream)
            frames = (out for frame in _joined(container.decode(stream), counted) for out in resampler.resample(frame))
            while True:
                try:
                    out = next(frames, None)
                except av.FFmpegError as exc:
                    log.warning("%s: audio stops early at a damaged part (%s); using what decoded", path, _reason(exc))
                    out = None
                if out is None:  # the end: what the resampler still holds goes with the last block
                    block += [x.to_ndarray().reshape(-1) for x in resampler.resample(None)]
                    break
                block.append(out.to_ndarray().reshape(-1))
                held += out.samples
                if held >= block_s * sample_rate:
                    total += held
                    yield np.concatenate(block)
                    block, held = [], 0
    except av.FFmpegError as exc:
        raise _unreadable(path, exc) from None
    last = np.concatenate(block) if block else np.zeros(0, np.float32)
    total += len(last)
    if len(last):
        yield last
    if counted[0]:
        log.warning("%s: %d audio samples were not numbers (NaN or infinite) and were replaced by silence",
                    path, counted[0])
    _warn_if_short(path, "audio", total / sample_rate, declared)


def finite(wave: np.ndarray) -> tuple[np.ndarray, int]:
    """`wave` with NaN and infinite samples set to 0, and how many there were."""
    bad = ~np.isfinite(wave)
    count = int(bad.sum())
    if count:
        wave = np.where(bad, np.zeros((), wave.dtype), wave)
    return wave, count


@lru_cache(maxsize=1)
def steady_heap() -> None:
    """Serve large blocks (>= 128 KB: frames, sound) from fresh pages, returned when freed.

    Why: glibc otherwise raises that threshold as such blocks come and go, keeps them in
    its heap, and on a long video the heap fragments: memory crept up 40 MB every ten
    minutes of video and stays flat with this. Linux (glibc) only; elsewhere it does nothing.
    """
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def _joined(frames: Iterator[av.AudioFrame], broken: list[int], seconds: float = 1.0) -> Iterator[av.AudioFrame]:
    """Decoded audio frames (~20 ms each) joined into frames of about `seconds`: resampled in
    one go they give the same samples, in half the time of resampling frame by frame. Each
    frame's planes are read as they lie in memory and joined once (as `to_ndarray` would
    give them, without its per-frame copy: 40% less CPU for the sound of a long file). What
    was joined before a damaged part still comes out before the error. Float samples that
    are not finite are set to 0 here, before the resampler would smear them over their
    neighbours, and counted in `broken[0]`."""
    held: list[list[np.ndarray]] = []
    kind, count = None, 0

    def joined() -> av.AudioFrame:
        samples = np.stack([np.concatenate(plane) for plane in zip(*held)])
        if samples.dtype.kind == "f":
            samples, bad = finite(samples)
            broken[0] += bad
        frame = av.AudioFrame.from_ndarray(samples, format=kind[0], layout=kind[1])
        frame.sample_rate = kind[2]
        return frame

    try:
        for frame in frames:
            this = (frame.format.name, frame.layout.name, frame.sample_rate)
            if held and this != kind:
                yield joined()
                held, count = [], 0
            dtype = _SAMPLE_TYPES.get(frame.format.name)
            if dtype is None:  # a format not listed: PyAV's own copy of it (or its error)
                held.append(list(frame.to_ndarray()))
            else:
                per_plane = frame.samples * (1 if frame.format.is_planar else frame.layout.nb_channels)
                held.append([np.frombuffer(plane, dtype, count=per_plane) for plane in frame.planes])
            kind, count = this, count + frame.samples
            if count >= seconds * frame.sample_rate:
                yield joined()
                held, count = [], 0
    except av.FFmpegError:
        if held:
            yield joined()
        raise
    if held:
        yield joined()


#: numpy's type of each of FFmpeg's sample formats (as PyAV's `AudioFrame.to_ndarray` reads them).
_SAMPLE_TYPES = {"u8": np.uint8, "u8p": np.uint8, "s16": np.int16, "s16p": np.int16, "s32": np.int32,
                 "s32p": np.int32, "flt": np.float32, "fltp": np.float32, "dbl": np.float64, "dblp": np.float64}


def read_ahead(items: Iterator[T], depth: int) -> Iterator[T]:
    """`items`, produced on a thread of their own up to `depth` ahead of the caller.

    Why: decoding (FFmpeg), face detection (OpenCV), the VAD (onnxruntime) and the model
    (torch) all run outside Python's lock, so a file's sound, its frames and the work on
    them proceed side by side on a machine's cores. An error raised while producing is
    raised here, in the caller; a caller that stops early stops the thread.
    """
    q: queue.Queue = queue.Queue(depth)
    stop = threading.Event()
    end = object()

    def put(entry: tuple) -> bool:
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
        except BaseException as exc:  # handed to the caller, raised there
            put((end, exc))
        else:
            put((end, None))

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            item, exc = q.get()
            if exc is not None:
                raise exc
            if item is end:
                return
            yield item
    finally:
        stop.set()
        thread.join()


def iter_frames(path: str | Path, fps: float) -> Iterator[tuple[float, np.ndarray]]:
    """Yield (time in s, grey uint8 frame, upright as the container's display matrix says)
    at about `fps` frames per second.

    Only sampled frames are converted, and a YUV frame's grey picture is its luma plane,
    read without any conversion: in most video its levels run 16-235, which `probe`'s
    `MediaInfo.levels` maps to full range. Where the video's own rate is at least twice `fps`,
    the decoder skips the frames no other frame refers to (B-frames in most H.264):
    about half the decoding, and the samples are still ~1/fps apart. (Skipping every
    B-frame would halve it again, but x264's B-pyramid makes some B-frames references:
    on the shared H.264, 89 of 99 sampled frames came out damaged.) Nor is any frame
    deblocked (the codec's loop filter, H.264's and HEVC's): a fifth less decoding, the
    critical path of `predict` on two cores, for frames 0.6-1.2 grey levels off the full
    decode's on average (2.0 at worst, 20 s after a keyframe), far below what a face crop's
    own compression leaves; on the shared media no segment's emotion changed (probabilities
    within 0.035). A still image yields its one frame at t=0.
    """
    step = 1.0 / fps
    next_t = 0.0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return
            stream = container.streams.video[0]
            # all cores but one: frames are decoded beside the work on them (`read_ahead`), and
            # decoding threads that would wait for that core cost a fifth more CPU on two cores
            stream.thread_type = "AUTO"
            stream.codec_context.thread_count = max(1, (os.cpu_count() or 1) - 1)
            if stream.average_rate and float(stream.average_rate) >= 2 * fps:
                stream.codec_context.skip_frame = "NONREF"
            stream.codec_context.options = {"skip_loop_filter": "all"}  # no deblocking: see the docstring
            width, height = stream.codec_context.width, stream.codec_context.height
            scale = min(1.0, MAX_FRAME_SIDE / max(width, height, 1))
            size = (max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2))
            declared, last, how = _stream_seconds(stream), 0.0, False
            try:
                for frame in container.decode(stream):
                    t = float(frame.time) if frame.time is not None else next_t
                    last = t
                    if t + 1e-6 < next_t:
                        continue
                    if how is False:  # the display matrix, read once: the same for every frame of a stream
                        how = orientation(frame, _is_still(container))
                    yield t, upright(_grey(frame, size), how)
                    next_t = (int(t / step + 1e-6) + 1) * step
            except av.FFmpegError as exc:
                log.warning("%s: video stops early at a damaged part (%s); using what decoded", path, _reason(exc))
                return
            _warn_if_short(path, "video", last + step, declared)
    except av.FFmpegError as exc:
        raise _unreadable(path, exc) from None


#: 8-bit pixel formats whose first plane is the grey picture (luma).
_LUMA_FIRST = frozenset({"gray", "nv12", "nv21", "yuv410p", "yuv411p", "yuv420p", "yuv422p", "yuv440p", "yuv444p",
                         "yuvj420p", "yuvj422p", "yuvj440p", "yuvj444p"})


#: Studio-range luma (16-235, most video) stretched to 0-255, as a conversion to grey does.
_FULL_RANGE = np.clip((np.arange(256) - 16) * 255.0 / 219.0 + 0.5, 0, 255).astype(np.uint8)


def _studio_range(codec: av.codec.context.CodecContext) -> bool:
    """Whether `_grey` gives this video stream's frames with studio-range levels (16-235): a luma
    plane read as it is, unless the stream says full (JPEG) range; other formats are converted."""
    name = codec.pix_fmt or ""
    return name in _LUMA_FIRST and name != "gray" and not name.startswith("yuvj") and codec.color_range != 2


def _grey(frame: av.VideoFrame, size: tuple[int, int]) -> np.ndarray:
    """The frame as grey uint8 of `size` (w, h): its luma plane where it has one (levels as
    stored, see `MediaInfo.levels`), else converted to full-range grey."""
    if frame.format.name in _LUMA_FIRST:
        plane = frame.planes[0]
        luma = np.frombuffer(plane, np.uint8).reshape(frame.height, plane.line_size)[:, :frame.width]
        if (frame.width, frame.height) != size:
            return cv2.resize(luma, size, interpolation=cv2.INTER_AREA)
        # where its rows are unpadded the plane itself, not a copy: the decoded frame is then kept
        # while it waits to be read (on the 5-minute loop 0.93x decode-only against 1.01x with a
        # copy, 3 alternated runs each, for 380 MB at peak against 310)
        return np.ascontiguousarray(luma)
    return np.ascontiguousarray(frame.reformat(width=size[0], height=size[1], format="gray").to_ndarray())


def _duration(container: av.container.InputContainer) -> float:
    if container.duration is not None:
        return container.duration / 1_000_000
    best = 0.0
    for stream in container.streams:
        if stream.duration is not None and stream.time_base is not None:
            best = max(best, float(stream.duration * stream.time_base))
    return best


def _stream_seconds(stream: av.stream.Stream) -> float | None:
    """The length a stream's header declares, if it declares one."""
    if stream.duration is None or stream.time_base is None:
        return None
    return float(stream.duration * stream.time_base)


def _warn_if_short(path: str | Path, kind: str, decoded: float, declared: float | None) -> None:
    """A stream that ends well before its declared length was cut off (a truncated download or copy)."""
    if declared and decoded < declared - max(1.0, 0.05 * declared):
        log.warning("%s: %s stops early at %.1f s of its declared %.1f s (truncated file?); using what decoded",
                    path, kind, decoded, declared)


def _unreadable(path: str | Path, exc: Exception) -> AvemoError:
    if Path(path).suffix.lower() in IMAGE_SUFFIXES:
        return AvemoError(f"{path}: damaged image, or not an image ({_reason(exc)})")
    return AvemoError(f"{path}: not a readable media file: damaged, cut off before its index, or not media ({_reason(exc)})")


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc).splitlines()[0]
