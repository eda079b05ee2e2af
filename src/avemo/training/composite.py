"""Composite clips: a real face video muxed with real, labelled utterances.

No labelled audio-visual clip set can be had where avemo is developed, so its tests,
benchmarks and the shipped sample are built from real single-modality recordings: a
real face video (picture) and real speech-corpus utterances (sound) placed at known
times. The result is an ordinary H.264/AAC MP4 that every stage reads like any other.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..files import written_whole
from ..media import SAMPLE_RATE, load_audio


def mux_clip(video: str | Path, utterances: list[tuple[float, str | Path]] | None, out: str | Path,
             start: float = 0.0, duration: float | None = None, crf: int = 30, rotation: int = 0, hflip: bool = False,
             tracks: list[list[tuple[float, str | Path]]] | None = None, default_track: int = 0) -> Path:
    """Write `out`: `video`'s picture from `start` for `duration` s, with each utterance
    (offset in s, audio file) placed on an otherwise silent 16 kHz mono AAC track.
    With `duration=None` the video is taken to its end; with `utterances=None` the clip
    gets no audio track at all.

    `rotation` (degrees counter-clockwise: 90, 180, -90) and `hflip` store the picture as a
    phone does: turned the other way, with a display matrix in the track header (`tkhd`)
    that turns it back for the viewer. `tracks` gives several audio tracks instead of one
    (each a list of utterances; an empty list is a silent track), `default_track` the one
    flagged default."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # faststart: the index goes first, as in web video, so a cut-off copy still plays its start.
    with av.open(str(video)) as src, av.open(str(out), "w", options={"movflags": "faststart"}) as dst:
        vin = src.streams.video[0]
        rate = vin.average_rate or 25
        vout = dst.add_stream("libx264", rate=rate)
        width, height = vin.codec_context.width, vin.codec_context.height
        vout.width, vout.height = (height, width) if rotation % 180 else (width, height)
        vout.pix_fmt = "yuv420p"
        vout.options = {"crf": str(crf), "preset": "veryfast"}
        if rotation or hflip:
            vout.set_display_rotation(rotation, hflip=hflip)
        tracks = tracks if tracks is not None else [utterances] if utterances is not None else []
        aouts = [dst.add_stream("aac", rate=SAMPLE_RATE, layout="mono") for _ in tracks]
        for i, aout in enumerate(aouts):
            aout.disposition = av.stream.Disposition.default if i == default_track else av.stream.Disposition(0)
        end = start + duration if duration is not None else float("inf")
        n = 0
        for frame in src.decode(vin):
            if frame.time is None or frame.time < start:
                continue
            if frame.time >= end:
                break
            frame = _stored_turned(frame, rotation, hflip) if rotation or hflip else frame.reformat(format="yuv420p")
            frame.pts = n
            frame.time_base = 1 / rate
            dst.mux(vout.encode(frame))
            n += 1
        dst.mux(vout.encode(None))
        for aout, track in zip(aouts, tracks):
            _write_track(dst, aout, track, n / float(rate))
    return out


def _stored_turned(frame: av.VideoFrame, rotation: int, hflip: bool) -> av.VideoFrame:
    """The picture as a display matrix of `rotation` (ccw) then `hflip` must find it stored:
    mirrored back, then turned `rotation` degrees clockwise."""
    rgb = frame.to_ndarray(format="rgb24")
    if hflip:
        rgb = rgb[:, ::-1]
    rgb = np.rot90(rgb, k=-(rotation // 90) % 4)
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuv420p")


def still_clip(image: str | Path, utterance: str | Path, out: str | Path, scale: int = 4, rate: int = 10,
               size: tuple[int, int] = (640, 360)) -> Path:
    """Write `out`: a still photo (a FER2013-style face, enlarged `scale` times and set in
    the middle of a grey `size` frame, where a detector finds it as in any video) shown
    for as long as `utterance` lasts, with that utterance as its sound."""
    canvas = on_a_frame(_grey_image(image), scale, size)
    length = len(load_audio(utterance)) / SAMPLE_RATE
    return _grey_clip((canvas for _ in range(max(1, int(np.ceil(length * rate))))), size, rate, [(0.0, utterance)],
                      length, out)


def on_a_frame(face: np.ndarray, scale: float = 4, size: tuple[int, int] = (640, 360)) -> np.ndarray:
    """A grey face photo scaled `scale` times, in the middle of a grey (128) frame of `size`: a face as
    a video shows it, where a detector must find it (FER2013's 48-px photos at 4x: a close-up)."""
    import cv2

    shape = (round(face.shape[1] * scale), round(face.shape[0] * scale))
    face = cv2.resize(face, shape, interpolation=cv2.INTER_CUBIC if scale >= 1 else cv2.INTER_AREA)
    width, height = size
    canvas = np.full((height, width), 128, np.uint8)
    y0, x0 = (height - face.shape[0]) // 2, (width - face.shape[1]) // 2
    canvas[y0:y0 + face.shape[0], x0:x0 + face.shape[1]] = face
    return canvas


def beside(video: str | Path, photo: str | Path, utterance: str | Path, out: str | Path, rate: int = 10) -> Path:
    """Write `out` (720x360): `video`'s picture at half size on the left, a still `photo` on the
    right (its face the larger), for as long as `utterance` lasts, with that as its sound: two
    faces on screen, one moving and one still, as in a two-person shot."""
    import cv2

    still = _grey_image(photo)
    still = cv2.resize(still, (360, round(still.shape[0] * 360 / still.shape[1])), interpolation=cv2.INTER_AREA)[:360]
    length = len(load_audio(utterance)) / SAMPLE_RATE

    def canvases() -> Iterator[np.ndarray]:
        n = 0
        with av.open(str(video)) as src:
            for frame in src.decode(src.streams.video[0]):
                if frame.time is None or frame.time < n / rate:
                    continue
                if n >= length * rate:
                    return
                canvas = np.full((360, 720), 128, np.uint8)
                canvas[90:270, 20:340] = cv2.resize(frame.to_ndarray(format="gray"), (320, 180),
                                                    interpolation=cv2.INTER_AREA)
                canvas[:still.shape[0], 360:] = still
                yield canvas
                n += 1

    return _grey_clip(canvases(), (720, 360), rate, [(0.0, utterance)], length, out)


def _grey_image(path: str | Path) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise ValueError(f"{path}: not an image")
    return image


def _grey_clip(canvases: Iterable[np.ndarray], size: tuple[int, int], rate: int, utterances: list[tuple[float, str | Path]],
               length: float, out: str | Path) -> Path:
    """Write `out`: the grey `canvases` (of `size`) as H.264 at `rate` frames a second, with the
    `utterances` (each at its offset in seconds) as its `length` seconds of sound."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(out), "w", options={"movflags": "faststart"}) as dst:
        vout = dst.add_stream("libx264", rate=rate)
        vout.width, vout.height, vout.pix_fmt = *size, "yuv420p"
        vout.options = {"crf": "23", "preset": "veryfast"}
        aout = dst.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        for n, canvas in enumerate(canvases):
            frame = av.VideoFrame.from_ndarray(canvas, format="gray").reformat(format="yuv420p")
            frame.pts, frame.time_base = n, Fraction(1, rate)
            dst.mux(vout.encode(frame))
        dst.mux(vout.encode(None))
        _write_track(dst, aout, utterances, length)
    return out


def _write_track(dst: av.container.OutputContainer, aout: av.audio.stream.AudioStream,
                 utterances: list[tuple[float, str | Path]], length: float) -> None:
    """Encode `length` s of 16 kHz mono sound: silence with each utterance added at its offset."""
    track = np.zeros(int(length * SAMPLE_RATE), dtype=np.float32)
    for offset, path in utterances:
        wave = load_audio(path)
        a = int(offset * SAMPLE_RATE)
        piece = wave[: max(0, len(track) - a)]
        track[a:a + len(piece)] += piece
    chunk = 1024
    for i in range(0, len(track), chunk):
        piece = track[i:i + chunk]
        frame = av.AudioFrame.from_ndarray(piece[None, :], format="flt", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = i
        dst.mux(aout.encode(frame))
    dst.mux(aout.encode(None))


def looped(src: Path, minutes: float, out: Path) -> Path:
    """`src` repeated (packets copied, timestamps shifted: no re-encoding) to last `minutes`,
    as `ffmpeg -stream_loop N -c copy` would; written once and reused."""
    if out.exists():
        return out
    with written_whole(out) as tmp, av.open(str(src)) as inp, av.open(str(tmp), "w") as dst:
        keep = [s for s in inp.streams if s.type in ("video", "audio")]
        outs = {s.index: dst.add_stream_from_template(s) for s in keep}
        # each stream's loop length: its end, or its decoding span where that is longer (an AAC
        # priming packet starts before 0), so that decoding times keep increasing across loops
        span = {s.index: 0 for s in keep}
        first_dts: dict[int, int] = {}
        times = max(1, round(minutes * 60 / float(inp.duration / av.time_base)))
        for k in range(times):
            inp.seek(0)
            for packet in inp.demux(*keep):
                if packet.dts is None:
                    continue
                i = packet.stream.index
                if k == 0:
                    first_dts.setdefault(i, packet.dts)
                    end = packet.duration or 0
                    span[i] = max(span[i], packet.pts + end, packet.dts + end - first_dts[i])
                packet.pts += k * span[i]
                packet.dts += k * span[i]
                packet.stream = outs[i]
                dst.mux(packet)
    return out


#: The pixel formats a PNG is stored in, as FFmpeg's PNG encoder writes them (and a palette, by hand).
PNG_FORMATS = ("rgb24", "rgba", "gray", "ya8", "gray16be", "rgb48be")


def still_variants(photo: str | Path, folder: str | Path, width: int = 640) -> dict[str, Path]:
    """`photo` stored the ways a user's stills come: a PNG in each of `PNG_FORMATS` and with a
    palette, and JPEG, WebP, TIFF and BMP, `width` pixels wide, written by FFmpeg as `ffmpeg -i
    photo.jpg out.png` writes them (the photo's ICC profile carried over: what crashed PyAV's
    side-data reading, issue 44)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with av.open(str(photo)) as src:
        frame = next(src.decode(video=0))
    height = round(frame.height * width / frame.width / 2) * 2
    out = {}
    for name, codec, fmt in [*((f"png_{f}", "png", f) for f in PNG_FORMATS), ("jpeg", "mjpeg", "yuvj420p"),
                             ("webp", "libwebp", "yuv420p"), ("tiff", "tiff", "rgb24"), ("bmp", "bmp", "bgr24")]:
        suffix = {"png": "png", "mjpeg": "jpg", "libwebp": "webp", "tiff": "tif", "bmp": "bmp"}[codec]
        path = folder / f"{name}.{suffix}"
        with av.open(str(path), "w", format="image2") as dst:
            stream = dst.add_stream(codec, rate=1)
            stream.width, stream.height, stream.pix_fmt = width, height, fmt
            for packet in [*stream.encode(frame.reformat(width=width, height=height, format=fmt)), *stream.encode()]:
                dst.mux(packet)
        out[name] = path
    grey = frame.reformat(width=width, height=height, format="gray").to_ndarray()
    out["png_palette"] = _palette_png(grey, folder / "png_palette.png")
    return out


def _palette_png(grey: np.ndarray, out: Path) -> Path:
    """A grey picture as a palette PNG (colour type 3: 256 grey entries), which FFmpeg's encoder cannot write."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width = grey.shape
    rows = b"".join(b"\0" + grey[y].astype(np.uint8).tobytes() for y in range(height))
    out.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0))
                    + chunk(b"PLTE", bytes(np.repeat(np.arange(256, dtype=np.uint8), 3)))
                    + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return out


def conversation(turns: list[tuple[int, str | Path]], out: str | Path, layout: str = "side", gap: float = 0.4,
                 rate: int = 10, size: tuple[int, int] = (960, 360)) -> tuple[Path, list[tuple[float, float, int]]]:
    """Write `out`: a conversation of real people's own clips (face and voice), each turn (who, clip)
    played in its turn, `gap` seconds apart. `layout` "side": everyone side by side, the one
    speaking moving, the others still on their last frame (listening); "cut": only the one speaking
    on screen, as film cuts between people. Returns the file and each turn's speech (start, end,
    who), read off the clip's own sound by the VAD."""
    import cv2

    from ..segments import speech_regions

    width, height = size
    people = sorted({who for who, _ in turns})
    slot = width // len(people) if layout == "side" else width
    still: dict[int, np.ndarray] = {}
    canvases, track, truth, at = [], [], [], 0.0

    def fitted(grey: np.ndarray) -> np.ndarray:
        scale = min(slot / grey.shape[1], height / grey.shape[0])
        return cv2.resize(grey, (int(grey.shape[1] * scale) // 2 * 2, int(grey.shape[0] * scale) // 2 * 2),
                          interpolation=cv2.INTER_AREA)

    def canvas(speaking: int, picture: np.ndarray | None) -> np.ndarray:
        frame = np.full((height, width), 128, np.uint8)
        shown = {who: still.get(who) for who in people} if layout == "side" else {speaking: still.get(speaking)}
        if picture is not None:
            shown[speaking] = picture
        for who, grey in shown.items():
            if grey is None:
                continue
            x0 = (people.index(who) * slot if layout == "side" else 0) + (slot - grey.shape[1]) // 2
            y0 = (height - grey.shape[0]) // 2
            frame[y0:y0 + grey.shape[0], x0:x0 + grey.shape[1]] = grey
        return frame

    for who, clip in turns:
        frames = []
        with av.open(str(clip)) as src:
            for frame in src.decode(src.streams.video[0]):
                if frame.time is not None and frame.time >= len(frames) / rate:
                    frames.append(fitted(frame.to_ndarray(format="gray")))
        still.setdefault(who, frames[0])
        sound = load_audio(clip)
        regions = speech_regions(sound)
        if regions:
            truth.append((at + regions[0][0], at + regions[-1][1], who))
        track.append((at, clip))
        for picture in frames:
            canvases.append(canvas(who, picture))
        still[who] = frames[-1]
        at += len(frames) / rate
        canvases += [canvas(who, None)] * int(gap * rate)
        at += int(gap * rate) / rate
    return _grey_clip(canvases, size, rate, track, len(canvases) / rate, out), truth
