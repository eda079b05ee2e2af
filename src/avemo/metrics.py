"""Scores a demanding reader asks for, with the majority baseline beside them.

A model that always answers the majority class scores the majority share in accuracy
(48% on MELD's test set): every report carries that baseline and a `collapsed` flag
(one class takes more than 80% of the predictions), so such a model can't pass unseen.
Used by training (validation, test), evaluation and the benchmarks alike.
"""

from __future__ import annotations

import numpy as np

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
