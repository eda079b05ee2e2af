"""Speed and memory of `avemo predict` against the physical floor: PyAV decoding the same file.

    python benchmarks/speed.py [FILE]            default: a 5-minute loop of WolfgangLanger_Pexels.mp4
    python benchmarks/speed.py --minutes 60 --repeat 1 --no-stages   the one-hour loop (built once into .avemo-cache/bench/)
    python benchmarks/speed.py --runtime torch    the same weights run by torch instead of ONNX Runtime
    python benchmarks/speed.py --model DIR        another model folder than the shipped one (an A/B of two models)
    python benchmarks/speed.py --source examples/sample.mp4   a loop of another file: the sample speaks half the
                                                  time, so the voice (VAD, encoders, diarisation) runs, as in a talking video
    python benchmarks/speed.py --people off       predict as one stream (people told apart is predict's default)

Prints, for one file: the decode-only time (every video frame and the audio, converting
nothing: what any tool that reads every frame must spend) and avemo's time (model loaded
and warmed up first), run as `--repeat` back-to-back pairs in a fresh process; the two
ratios the project targets (avemo / decode-only, the median of the pairs', and real time
/ avemo); the peak resident memory of that process; and the per-stage split, measured
stage by stage in this process. Ratios, not seconds, are what carry from one machine to
another.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import av

from avemo.training.composite import looped

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


def paired_runs(path: Path, repeat: int, runtime: str, threads: int | None, model_dir: str | None,
                people: bool = False) -> dict:
    """In this (fresh) process: the model loaded and warmed up, then `repeat` pairs of
    (decode-only, avemo predict) timed back to back, so that each ratio compares runs made
    under the same load (shared machines are noisy); the segment count and peak memory.
    With `people`, each pair also times predict without people, right after it (right before,
    every other time, so that neither goes first always): what telling people apart adds,
    against the same run without it."""
    import avemo

    model = avemo.load_model(model_dir, runtime=runtime, threads=threads)
    model.predict(SOURCE, people=people)  # warm-up: VAD session, face cascade, the runtime's kernels (and dlib's models)
    pairs, alone = [], []
    for n in range(repeat):
        floor = decode_only(path)
        if people and n % 2:  # without people before the run with them, every other time; after it otherwise
            alone.append(_timed(lambda: model.predict(path, people=False)))
        start = time.perf_counter()
        results = model.predict(path, people=people)
        pairs.append((floor, time.perf_counter() - start))
        if people and not n % 2:
            alone.append(_timed(lambda: model.predict(path, people=False)))
    return {"pairs": pairs, "alone": alone, "segments": len(results), "covered": [results[0].start, results[-1].end],
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def avemo_run(path: Path, repeat: int, runtime: str, threads: int | None, model_dir: str | None,
              people: bool = False) -> dict:
    """`paired_runs` in a fresh process, so that its peak memory is avemo's alone."""
    out = subprocess.run([sys.executable, __file__, str(path), "--child", "--repeat", str(repeat), "--runtime", runtime,
                          *(["--threads", str(threads)] if threads else []), *(["--model", model_dir] if model_dir else []),
                          "--people", "on" if people else "off"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def stages(path: Path, runtime: str, model_dir: str | None) -> dict[str, float]:
    """Seconds per stage, each measured on its own (one after another, no threads) in this process."""
    import avemo
    from avemo.faces import observe_faces
    from avemo.media import iter_frames, load_audio, probe
    from avemo.predict import INFER_BATCH, segment_inputs
    from avemo.segments import plan_segments, speech_regions

    model = avemo.load_model(model_dir, runtime=runtime)
    split = {}
    start = time.perf_counter()
    wave = load_audio(path)
    split["audio decode"] = time.perf_counter() - start
    start = time.perf_counter()
    speech = speech_regions(wave)
    split["VAD"] = time.perf_counter() - start
    start = time.perf_counter()
    for _ in iter_frames(path, model.cfg.frame_rate):
        pass
    split["frames (decode + sample)"] = time.perf_counter() - start
    start = time.perf_counter()
    seen = observe_faces(model.detector, iter_frames(path, model.cfg.frame_rate), levels=probe(path).levels)
    split["faces (detect + follow + crop)"] = time.perf_counter() - start - split["frames (decode + sample)"]
    start = time.perf_counter()
    items = [segment_inputs(seg, wave, seen, speech, model.voice_features, model.cfg.max_faces)
             for seg in plan_segments(probe(path).duration, speech, with_video=True)]
    items = [item for item in items if item.mel is not None or item.crops]
    split["features (log-Mel)"] = time.perf_counter() - start
    start = time.perf_counter()
    norm = model.normaliser("auto")  # a voice read beside its file's statistics, as predict reads it
    for i in range(0, len(items), INFER_BATCH):
        model._judge(items[i:i + INFER_BATCH], [], 1.0, norm)
    split["model"] = time.perf_counter() - start
    return split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", type=Path)
    parser.add_argument("--minutes", type=float, default=5.0, help="length of the default looped video")
    parser.add_argument("--source", type=Path, default=SOURCE, help="the file to loop (default: the shared face video, "
                        "whose track is silent)")
    parser.add_argument("--repeat", type=int, default=3, help="pairs of runs (decode-only, avemo); the median ratio is kept")
    parser.add_argument("--no-stages", action="store_true", help="skip the per-stage split (it decodes the file twice more)")
    parser.add_argument("--runtime", choices=["onnx", "torch"], default="onnx", help="the network's runtime (default: ONNX Runtime)")
    parser.add_argument("--threads", type=int, help="the network's threads (default: the runtime's choice)")
    parser.add_argument("--model", help="model folder (default: the shipped model)")
    parser.add_argument("--people", choices=["on", "off"], default="on",
                        help="predict with people told apart (on, predict's default: each run is then also timed "
                             "without them) or as one stream (off)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    name = "" if args.source == SOURCE else f"-{args.source.stem}"
    path = args.file or looped(args.source, args.minutes, REPO / ".avemo-cache" / "bench" / f"loop{args.minutes:g}min{name}.mp4")
    if args.child:
        print(json.dumps(paired_runs(path, args.repeat, args.runtime, args.threads, args.model, args.people == "on")))
        return
    with av.open(str(path)) as c:
        duration = float(c.duration / av.time_base)
    run = avemo_run(path, args.repeat, args.runtime, args.threads, args.model, args.people == "on")
    ratios = sorted(a / d for d, a in run["pairs"])
    floor, seconds = (statistics.median(x) for x in zip(*run["pairs"]))
    print(f"file: {path} ({duration:.1f} s; {run['segments']} segments, from {run['covered'][0]:.1f} to "
          f"{run['covered'][1]:.1f} s)")
    print(f"runtime: {args.runtime}{'; people told apart' if args.people == 'on' else '; one stream'}; {args.repeat} pairs of runs, "
          "back to back; medians:")
    print(f"decode-only (PyAV, every frame + audio): {floor:.2f} s")
    print(f"avemo predict:                           {seconds:.2f} s = {statistics.median(ratios):.2f}x decode-only "
          f"(pairs: {', '.join(f'{r:.2f}' for r in ratios)}), {duration / seconds:.1f}x faster than real time")
    if run["alone"]:
        added = sorted(with_people / without for (_, with_people), without in zip(run["pairs"], run["alone"]))
        print(f"people told apart add {statistics.median(added) - 1:+.1%} to predict's wall time "
              f"(against predict without people, run beside each: {', '.join(f'{r - 1:+.1%}' for r in added)})")
    print(f"peak resident memory of the avemo process: {run['peak_mb']:.0f} MB")
    if not args.no_stages:
        print(f"stages, each timed alone (avemo runs them side by side on {os.cpu_count()} cores):")
        for name, secs in stages(path, args.runtime, args.model).items():
            print(f"  {name:<32} {secs:6.2f} s")


if __name__ == "__main__":
    main()
