"""Agreement of two model folders on the same real data: what a quantised (int8) model changes.

    python benchmarks/agreement.py --model DIR [--against DIR] [--data ../shared/data] [--only voice,face,clips,media]

Both models judge, through `predict` as users run it: the held-out speakers of every speech
corpus (each file alone and by speaker, as the model card scores them), FER2013 PublicTest and
the posed face corpora's unseen subjects, the real audio-visual clips of `av_clips/`, and every
file of `media/` with examples/sample.mp4 (segment by segment). For each set it prints both
accuracies, the points lost, and how many answers agree; the last line says whether every set
lost at most `TOLERANCE` points (issue 47's bar for shipping int8 graphs). `--against` defaults
to the shipped model: give the fp32 export (`avemo export --onnx DIR`) when the shipped one is int8.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from quality import OTHER_FACES, SPEECH, specs, unseen

import avemo
from avemo.evaluate import evaluate_items, test_items
from avemo.labels import EMOTIONS
from avemo.metrics import classification_report
from avemo.training.datasets import load_spec

REPO = Path(__file__).resolve().parent.parent
#: Points of accuracy a set may lose for the quantised model to be kept.
TOLERANCE = 0.5


def judged(model: avemo.Model, items: list, modalities: tuple[str, ...], normalise: str = "auto") -> dict[str, str]:
    """Each judged file's predicted emotion."""
    return evaluate_items(model, items, modalities, normalise=normalise)["predicted"]


def media_answers(model: avemo.Model, paths: list[Path]) -> dict[str, str]:
    """Each segment's emotion, keyed by file and time, over real media run as users run it."""
    answers = {}
    for path in paths:
        try:
            results = model.predict(path)
        except avemo.AvemoError:  # nothing in it to judge (no_face.mp4): the same for both models
            continue
        for r in results:
            answers[f"{path.name} {r.start:.2f}-{r.end:.2f} {r.person}"] = r.emotion
    return answers


def compare(name: str, a: dict[str, str], b: dict[str, str], truth: dict[str, str] | None) -> float:
    """Print one set's line; return the points the first model lost against the second (0 without labels)."""
    common = sorted(set(a) & set(b))
    agree = sum(a[k] == b[k] for k in common)
    line = f"{name}: {agree} of {len(common)} answers agree ({100 * agree / max(len(common), 1):.1f}%)"
    if len(common) != max(len(a), len(b)):
        line += f"; judged by one model only: {len(set(a) ^ set(b))}"
    lost = 0.0
    if truth is not None:
        acc = [100 * np.mean([d[k] == truth[k] for k in common]) for d in (a, b)]
        uar = [classification_report(np.array([EMOTIONS.index(truth[k]) for k in common]),
                                     np.array([EMOTIONS.index(d[k]) for k in common]), list(EMOTIONS))["uar"] for d in (a, b)]
        lost = acc[1] - acc[0]
        line += f"; accuracy {acc[0]:.2f}% against {acc[1]:.2f}% ({-lost:+.2f} points), UAR {uar[0]:.3f} against {uar[1]:.3f}"
    print(line, flush=True)
    return lost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the model folder to check (e.g. with int8 graphs)")
    parser.add_argument("--against", help="the reference model folder (default: the shipped model)")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--only", default="voice,face,clips,media")
    parser.add_argument("--corpora", help="speech corpora to read, e.g. urdu,tess (default: all)")
    args = parser.parse_args()
    only = set(args.only.split(","))
    model, reference = avemo.load_model(args.model), avemo.load_model(args.against)
    modes = ("speaker", "file") if model.cfg.voice_norm == "group" else ("none",)
    losses = []

    def both(name: str, items: list, modalities: tuple[str, ...], normalise: str = "auto") -> None:
        truth = {str(i.path): EMOTIONS[i.emotion] for i in items}
        losses.append(compare(name, judged(model, items, modalities, normalise),
                              judged(reference, items, modalities, normalise), truth))

    for spec in specs(args.data, SPEECH) if "voice" in only else []:
        held = test_items(load_spec(spec), model.meta)
        if args.corpora and held and held[0].corpus not in args.corpora.split(","):
            continue
        for mode in modes if held else ():  # a corpus the model holds no speaker of out
            both(f"voice, {held[0].corpus} held-out speakers ({mode})", held, ("audio",), mode)
    if "face" in only:
        fer = [i for i in load_spec(f"fer2013:{args.data / 'fer2013'}") if i.split == "val"]
        both("face, FER2013 PublicTest", fer, ("face",))
        for spec in specs(args.data, OTHER_FACES):
            both(f"face, {Path(spec).stem} unseen subjects", unseen(load_spec(spec), model.meta), ("face",))
    if "clips" in only:
        clips = load_spec(f"manifest:{args.data / 'av_clips' / 'av_clips.csv'}")
        for mode in modes:
            both(f"fused, av_clips ({mode})", clips, ("audio", "face"), mode)
    if "media" in only:
        paths = sorted(p for p in (args.data / "media").iterdir() if p.is_file()) + [REPO / "examples" / "sample.mp4"]
        compare("media segments (all of ../shared/data/media and the sample)", media_answers(model, paths),
                media_answers(reference, paths), None)
    worst = max(losses, default=0.0)
    print(f"largest loss: {worst:.2f} points ({'within' if worst <= TOLERANCE else 'BEYOND'} the {TOLERANCE} allowed)")


if __name__ == "__main__":
    main()
