"""Evaluation: the scores a demanding reader asks for, with the majority baseline beside them.

A model that always answers the majority class scores the majority share in accuracy
(48% on MELD's test set): every report carries that baseline and a `collapsed` flag
(one class takes more than 80% of the predictions), so such a model can't pass unseen.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .datasets import Item
    from .predict import Model

COLLAPSE_SHARE = 0.8


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict:
    """Accuracy, weighted/macro F1, UAR, majority baseline, per-class scores and confusion."""
    y_true, y_pred = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    k = len(labels)
    confusion = np.zeros((k, k), dtype=int)
    np.add.at(confusion, (y_true, y_pred), 1)
    support = confusion.sum(1)
    predicted = confusion.sum(0)
    tp = np.diag(confusion)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    n = int(support.sum())
    present = support > 0
    return {
        "n": n,
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "weighted_f1": float((f1 * support).sum() / n) if n else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "uar": float(recall[present].mean()) if present.any() else 0.0,
        "majority_accuracy": float(support.max() / n) if n else 0.0,
        "collapsed": bool(n and predicted.max() / n > COLLAPSE_SHARE),
        "per_class": {
            label: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i])}
            for i, label in enumerate(labels)
        },
        "confusion": {"labels": list(labels), "matrix": confusion.tolist()},
    }


def summary_line(name: str, report: dict) -> str:
    """One line: accuracy and F1 beside the majority baseline, flagging collapse."""
    flag = "  COLLAPSED to one class" if report["collapsed"] else ""
    return (f"{name}: n={report['n']} accuracy {report['accuracy']:.3f} (majority {report['majority_accuracy']:.3f}) "
            f"macro-F1 {report['macro_f1']:.3f} weighted-F1 {report['weighted_f1']:.3f} UAR {report['uar']:.3f}{flag}")


def test_items(items: list[Item], model_meta: dict) -> list[Item]:
    """The test split of `items` for this model: the speakers (or corpus splits) its
    config.json records as held out of its training, else a fresh speaker-independent split.

    Why the record comes first: the split a training run draws depends on all corpora it
    was given, so re-splitting one corpus alone can pick speakers the model was trained on.
    """
    from .train import TrainSettings, held_out_name, split_items

    held = {name for names in model_meta.get("training", {}).get("held_out", {}).values() for name in names}
    recorded = [i for i in items if held_out_name(i) in held]
    if recorded:
        return recorded

    return split_items(items, TrainSettings())["test"]


def evaluate_items(model: Model, items: list[Item], modalities: tuple[str, ...] = ("audio", "face"),
                   progress: bool = False) -> dict:
    """Clip-level scores of `model` on labelled files: each whole file is one segment.

    Photos are judged by the face branch, audio files by the voice branch, videos by
    both unless `modalities` restricts them. Files that cannot be judged (no face in
    a photo, no speech in an audio file) are listed under `skipped` with the reason,
    never silently dropped; `predicted` names each judged file's predicted emotion.
    """
    from tqdm import tqdm

    from .errors import AvemoError
    from .labels import EMOTIONS, SENTIMENTS, UNKNOWN
    from .media import probe
    from .segments import Segment

    true_e, pred_e, true_s, pred_s, skipped, predicted = [], [], [], [], [], {}
    for item in tqdm(items, disable=not progress, unit="file"):
        try:
            info = probe(item.path)
            whole = None if info.is_image else [Segment(0.0, info.duration)]
            (result,) = model.predict_file(item.path, segments=whole, modalities=modalities)
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
        "predicted": predicted,
        "emotion": classification_report(np.array(true_e), np.array(pred_e), list(EMOTIONS)),
        "sentiment": classification_report(np.array(true_s), np.array(pred_s), list(SENTIMENTS)),
    }


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
