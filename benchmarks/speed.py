"""Speed of `avemo predict` against the physical floor: PyAV decoding the same file.

    python benchmarks/speed.py [FILE]        (default: examples/sample.mp4)

Prints, for one file: decode-only time (every video frame and the audio, no
conversion), avemo's total time and per-stage split, the ratio avemo / decode-only,
the speed against real time, and the peak resident memory. Ratios, not seconds,
are what carry from one machine to another.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import av

import avemo
from avemo.audio import log_mel
from avemo.faces import observe_faces
from avemo.media import iter_frames, load_audio, probe
from avemo.segments import speech_regions


def decode_only(path: Path) -> float:
    """Seconds to decode every frame and audio packet of `path`, converting nothing."""
    start = time.perf_counter()
    with av.open(str(path)) as container:
        for stream in container.streams:
            stream.thread_type = "AUTO"
        for _ in container.decode(*container.streams.video, *container.streams.audio):
            pass
    return time.perf_counter() - start


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "examples" / "sample.mp4")
    model = avemo.load_model()
    info = probe(path)
    model.predict(path)  # warm-up: VAD session, face cascade, torch kernels
    floor = min(decode_only(path) for _ in range(2))
    results, total = timed(model.predict, path)
    wave, t_audio = timed(load_audio, path)
    regions, t_vad = timed(speech_regions, wave)
    _, t_faces = timed(lambda: observe_faces(model.detector, iter_frames(path, model.cfg.frame_rate), info.is_image))
    _, t_mel = timed(lambda: [log_mel(wave[int(s * 16000):int(e * 16000)]) for s, e in regions])
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"file: {path} ({info.duration:.1f} s, {len(results)} segments)")
    print(f"decode-only (PyAV, all frames + audio): {floor:.2f} s")
    print(f"avemo predict total:                    {total:.2f} s  = {total / floor:.2f}x decode-only, "
          f"{info.duration / total:.1f}x real time")
    print("stages (measured separately): "
          f"audio decode {t_audio:.2f} s, VAD {t_vad:.2f} s, frames+faces {t_faces:.2f} s, log-Mel {t_mel:.2f} s, "
          f"model and rest {max(0.0, total - t_audio - t_vad - t_faces - t_mel):.2f} s")
    print(f"peak resident memory: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
