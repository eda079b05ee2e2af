"""Speed and memory of `avemo predict` against the physical floor: PyAV decoding the same file.

    python benchmarks/speed.py [FILE]            default: a 5-minute loop of WolfgangLanger_Pexels.mp4
    python benchmarks/speed.py --minutes 60 --no-stages   the one-hour loop (built once into .avemo-cache/bench/)

Prints, for one file: the decode-only time (every video frame and the audio, converting
nothing: what any tool that reads every frame must spend), avemo's time in a fresh
process (model loaded and warmed up first), each the best of `--repeat` runs, the two ratios the project targets
(avemo / decode-only, and real time / avemo), the peak resident memory of that
process, and the per-stage split measured stage by stage in this process. Ratios,
not seconds, are what carry from one machine to another.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import av

from avemo.composite import looped

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO.parent / "shared" / "data" / "media" / "WolfgangLanger_Pexels.mp4"


def decode_only(path: Path) -> float:
    """Seconds to decode every frame and audio packet of `path`, converting nothing."""
    start = time.perf_counter()
    with av.open(str(path)) as container:
        for stream in container.streams:
            stream.thread_type = "AUTO"
        for _ in container.decode(*container.streams.video, *container.streams.audio):
            pass
    return time.perf_counter() - start


_CHILD = """
import json, resource, sys, time
import avemo
model = avemo.load_model()
model.predict(sys.argv[2])  # warm-up: VAD session, face cascade, torch kernels
best = float("inf")
for _ in range(int(sys.argv[3])):
    start = time.perf_counter()
    results = model.predict(sys.argv[1])
    best = min(best, time.perf_counter() - start)
print(json.dumps({"seconds": best, "segments": len(results),
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def avemo_run(path: Path, repeat: int) -> dict:
    """avemo's best predict time of `repeat` runs, segment count and peak memory, in a fresh process."""
    out = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(SOURCE), str(repeat)], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def stages(path: Path) -> dict[str, float]:
    """Seconds per stage, each measured on its own in this process."""
    import avemo
    from avemo.faces import observe_faces
    from avemo.media import iter_frames, load_audio
    from avemo.segments import speech_regions

    model = avemo.load_model()
    split = {}
    start = time.perf_counter()
    wave = load_audio(path)
    split["audio decode"] = time.perf_counter() - start
    start = time.perf_counter()
    speech_regions(wave)
    split["VAD (if not silent)"] = time.perf_counter() - start
    start = time.perf_counter()
    for _ in iter_frames(path, model.cfg.frame_rate):
        pass
    split["frames (decode + sample)"] = time.perf_counter() - start
    start = time.perf_counter()
    observe_faces(model.detector, iter_frames(path, model.cfg.frame_rate))
    split["faces (detect + follow)"] = time.perf_counter() - start - split["frames (decode + sample)"]
    return split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", type=Path)
    parser.add_argument("--minutes", type=float, default=5.0, help="length of the default looped video")
    parser.add_argument("--repeat", type=int, default=2,
                        help="runs of each, the best kept (shared machines are noisy; memory is the peak of all)")
    parser.add_argument("--no-stages", action="store_true", help="skip the per-stage split (it decodes the file twice more)")
    args = parser.parse_args()
    path = args.file or looped(SOURCE, args.minutes, REPO / ".avemo-cache" / "bench" / f"loop{args.minutes:g}min.mp4")
    with av.open(str(path)) as c:
        duration = float(c.duration / av.time_base)
    floor = min(decode_only(path) for _ in range(args.repeat))
    run = avemo_run(path, args.repeat)
    split = {} if args.no_stages else stages(path)
    print(f"file: {path} ({duration:.1f} s, {run['segments']} segments)")
    print(f"decode-only (PyAV, every frame + audio): {floor:.2f} s")
    print(f"avemo predict:                           {run['seconds']:.2f} s = {run['seconds'] / floor:.2f}x decode-only, "
          f"{duration / run['seconds']:.1f}x faster than real time")
    print(f"peak resident memory of the avemo process: {run['peak_mb']:.0f} MB")
    if split:
        print("stages, each timed alone: " + ", ".join(f"{k} {v:.2f} s" for k, v in split.items()))


if __name__ == "__main__":
    main()
