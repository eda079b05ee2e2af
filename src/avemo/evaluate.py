"""Evaluation: a model's scores on labelled files, beside the majority baseline (`metrics`).

Each file is judged whole, as a user's clip would be; a model is scored on the speakers it
records as held out of its training (`test_items`). A model trained on normalised voices
(`normalise.py`) is scored with each speaker's voice standardised by that speaker's own
statistics over all of their files (`normalise="speaker"`, the default where speakers are
known), or each file by itself ("file").
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .metrics import classification_report
from .training.splits import held_out_name, split_items

if TYPE_CHECKING:
    from .predict import Model
    from .training.datasets import Item

def test_items(items: list[Item], model_meta: dict) -> list[Item]:
    """The test split of `items` for this model: the speakers (or corpus splits) its
    config.json records as held out of its training, else a fresh speaker-independent split.

    Why the record comes first: the split a training run draws depends on all corpora it
    was given, so re-splitting one corpus alone can pick speakers the model was trained on.
    """
    held = {name for names in model_meta.get("training", {}).get("held_out", {}).values() for name in names}
    recorded = [i for i in items if held_out_name(i) in held]
    if recorded:
        return recorded

    return split_items(items)["test"]


def evaluate_items(model: Model, items: list[Item], modalities: tuple[str, ...] = ("audio", "face"),
                   progress: bool = False, normalise: str = "auto") -> dict:
    """Clip-level scores of `model` on labelled files: each whole file is one segment.

    Photos are judged by the face branch, audio files by the voice branch, videos by
    both unless `modalities` restricts them. Files that cannot be judged (no face in
    a photo, no speech in an audio file) are listed under `skipped` with the reason,
    never silently dropped; `predicted` names each judged file's predicted emotion.
    `normalise`: as `Model.predict`'s, and "speaker": each speaker's statistics gathered
    first over all of their files (the voice front-end runs twice; a file without a speaker
    is its own); "auto" is "speaker" for a model trained on normalised voices.
    """
    from tqdm import tqdm

    from .errors import AvemoError
    from .labels import EMOTIONS, SENTIMENTS, UNKNOWN
    from .media import probe
    from .segments import Segment

    if normalise == "auto":
        normalise = "speaker" if model.cfg.voice_norm == "group" else "none"
    each = "file" if normalise == "speaker" else normalise  # also for a file whose speaker has no speech gathered
    model.normaliser(each)  # a mode the model was not trained for: said at once
    by_speaker = speaker_normalisers(model, items, modalities) if normalise == "speaker" else {}
    true_e, pred_e, true_s, pred_s, skipped, predicted = [], [], [], [], [], {}
    for item in tqdm(items, disable=not progress, unit="file"):
        try:
            info = probe(item.path)
            whole = None if info.is_image else [Segment(0.0, info.duration)]
            (result,) = model.predict_file(item.path, segments=whole, modalities=modalities,
                                           normalise=by_speaker.get(_speaker(item), each), people=False)
        except AvemoError as exc:
            skipped.append({"path": str(item.path), "reason": str(exc)})
            continue
        true_e.append(item.emotion)
        pred_e.append(EMOTIONS.index(result.emotion))
        predicted[str(item.path)] = result.emotion
        if item.sentiment != UNKNOWN:
            true_s.append(item.sentiment)
            pred_s.append(SENTIMENTS.index(result.sentiment))
    return {
        "n": len(true_e),
        "skipped": skipped,
        "modalities": list(modalities),
        "normalise": normalise,
        "predicted": predicted,
        "emotion": classification_report(np.array(true_e), np.array(pred_e), list(EMOTIONS)),
        "sentiment": classification_report(np.array(true_s), np.array(pred_s), list(SENTIMENTS)),
    }


def _speaker(item: Item) -> str:
    return item.speaker or str(item.path)


def speaker_normalisers(model: Model, items: list[Item], modalities: tuple[str, ...]) -> dict:
    """Per speaker, a normaliser that holds the statistics of all of that speaker's speech.
    Why a first pass: these statistics must be known before the first of their files is
    judged, and only the voice front-end can give them."""
    from .errors import AvemoError
    from .media import probe
    from .normalise import Normaliser, RunningStats
    from .segments import Segment

    if "audio" not in modalities:
        return {}
    gathered: dict[str, RunningStats] = {}
    for item in items:
        collect = gathered.setdefault(_speaker(item), RunningStats())
        try:
            info = probe(item.path)
            if info.has_audio:
                model.predict_file(item.path, segments=[Segment(0.0, info.duration)], modalities=("audio",),
                                   normalise=Normaliser("segment", collect=collect))
        except AvemoError:
            continue  # no speech: it adds nothing, and the second pass reports why
    return {speaker: Normaliser.fixed(stats.stats()) for speaker, stats in gathered.items() if stats.frames}


def confusion_png(report: dict, path: str | Path) -> None:
    """Row-normalised confusion matrix (rows true, columns predicted) as a PNG, drawn with OpenCV."""
    import cv2

    labels, matrix = report["confusion"]["labels"], np.array(report["confusion"]["matrix"], dtype=float)
    rows = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    cell, left, top = 64, 110, 40
    k = len(labels)
    img = np.full((top + k * cell + 90, left + k * cell + 20, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for i in range(k):
        for j in range(k):
            shade = int(255 - 200 * rows[i, j])
            x, y = left + j * cell, top + i * cell
            cv2.rectangle(img, (x, y), (x + cell, y + cell), (255, shade, shade), -1)
            cv2.rectangle(img, (x, y), (x + cell, y + cell), (200, 200, 200), 1)
            colour = (255, 255, 255) if rows[i, j] > 0.6 else (0, 0, 0)
            cv2.putText(img, f"{int(matrix[i, j])}", (x + 8, y + cell // 2 + 6), font, 0.5, colour, 1, cv2.LINE_AA)
        cv2.putText(img, labels[i][:12], (4, top + i * cell + cell // 2 + 5), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(img, labels[i][:8], (left + i * cell + 2, top + k * cell + 20), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    title = f"acc {report['accuracy']:.3f} (majority {report['majority_accuracy']:.3f})  macro-F1 {report['macro_f1']:.3f}"
    cv2.putText(img, title, (4, 25), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "rows: true, columns: predicted", (4, top + k * cell + 55), font, 0.45, (80, 80, 80), 1, cv2.LINE_AA)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"could not write {path}")
