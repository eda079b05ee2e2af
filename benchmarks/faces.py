"""Face finding: how many faces each shipped detector finds on the shared real data, and how fast.

    python benchmarks/faces.py [--data ../shared/data] [--every 4]

Haar alone (the detector before 2026-12-06), BlazeFace alone (short range) and both merged (what
`predict` runs), each as `faces.FaceDetector` searches: on a copy of the frame 320 px on its longer
side. Sets: FER2013 PublicTest faces shown on a 640x360 frame at 4x (as the composite clips of
`quality.py` show them: a close-up, cut at the brow and chin), the JAFFE and Taiwanese photos, frames
of `av_clips/` and of the shared face videos at 2 fps, and the faceless video's frames (false faces).
Time: the median milliseconds a search, measured over the same frames in this run (a ratio, not a
promise: the machine is shared).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from avemo.faces import FaceDetector
from avemo.media import iter_frames
from avemo.training.composite import on_a_frame

DETECTORS = {"Haar": ("haar",), "BlazeFace": ("blazeface",), "both (predict)": ("blazeface", "haar")}


def frame_sets(data: Path, every: int) -> dict[str, list[np.ndarray]]:
    def grey(path: Path) -> np.ndarray:
        return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)

    def videos(paths: list[Path]) -> list[np.ndarray]:
        return [g for p in paths for _, g in iter_frames(p, fps=2)]

    fer = sorted((data / "fer2013" / "val").glob("*/*.jpg"))[::every]
    return {
        f"FER2013 PublicTest on a frame (1 in {every})": [on_a_frame(grey(p)) for p in fer],
        "JAFFE photos": [grey(p) for p in sorted((data / "jaffe").glob("*.jpg"))],
        "Taiwanese photos": [grey(p) for p in sorted((data / "taiwanese_faces").glob("*.jpg"))],
        "av_clips/ frames (2 fps)": videos(sorted(p for p in (data / "av_clips").iterdir() if p.suffix in (".mp4", ".flv"))),
        "shared face videos' frames (2 fps)": videos([data / "media" / "WolfgangLanger_Pexels.mp4", data / "media" / "single_face.mp4"]),
        "no_face.mp4 frames (2 fps): false faces": videos([data / "media" / "no_face.mp4"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    parser.add_argument("--every", type=int, default=4, help="every n-th FER2013 PublicTest photo")
    args = parser.parse_args()
    sets = frame_sets(args.data, args.every)
    detectors = {name: FaceDetector(detectors=kinds) for name, kinds in DETECTORS.items()}
    print("| frames (n) | " + " | ".join(detectors) + " |")
    print("|---|" + "---|" * len(detectors))
    times: dict[str, list[float]] = {name: [] for name in detectors}
    for label, frames in sets.items():
        cells = []
        for name, det in detectors.items():
            found = 0
            for frame in frames:
                start = time.perf_counter()
                found += bool(det.detect(frame))
                times[name].append(time.perf_counter() - start)
            cells.append(f"{found} ({found / len(frames):.0%})")
        print(f"| {label} ({len(frames)}) | " + " | ".join(cells) + " |")
    print("| median ms a search | " + " | ".join(f"{1e3 * np.median(t):.1f}" for t in times.values()) + " |")


if __name__ == "__main__":
    main()
