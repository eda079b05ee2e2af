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


def diarisation_error(reference: list[tuple[float, float, str]], hypothesis: list[tuple[float, float, object]],
                      collar: float = 0.25, step: float = 0.01) -> dict:
    """Diarisation error rate, as NIST scores it: missed speech, false alarms and speaker confusion
    over the reference's speech, in `step`-second frames, `collar` seconds either side of each
    reference boundary not scored, the hypothesis's voices mapped to the reference's people in
    the way that errs least. Overlapped speech counts once per person speaking."""
    end = max([e for _, e, _ in reference] + [e for _, e, _ in hypothesis] + [0.0])
    frames = int(np.ceil(end / step)) + 1
    people, voices = sorted({str(p) for *_, p in reference}), sorted({str(v) for *_, v in hypothesis})

    def grid(turns, names) -> np.ndarray:
        g = np.zeros((frames, max(1, len(names))), bool)
        for a, b, who in turns:
            g[int(round(a / step)):int(round(b / step)), names.index(str(who))] = True
        return g

    ref, hyp = grid(reference, people), grid(hypothesis, voices)
    scored = np.ones(frames, bool)
    for a, b, _ in reference:
        for t in (a, b):
            scored[max(0, int(round((t - collar) / step))):int(round((t + collar) / step))] = False
    ref, hyp = ref[scored], hyp[scored]
    k = max(ref.shape[1], hyp.shape[1])
    ref, hyp = np.pad(ref, ((0, 0), (0, k - ref.shape[1]))), np.pad(hyp, ((0, 0), (0, k - hyp.shape[1])))
    overlap = ref.T.astype(int) @ hyp.astype(int)  # frames person i and voice j speak together
    mapping = _best_mapping(overlap)
    n_ref, n_hyp = ref.sum(1), hyp.sum(1)
    correct = (ref & hyp[:, mapping]).sum(1)
    missed = np.maximum(n_ref - n_hyp, 0).sum()
    false_alarm = np.maximum(n_hyp - n_ref, 0).sum()
    confusion = (np.minimum(n_ref, n_hyp) - correct).sum()
    total = max(int(n_ref.sum()), 1)
    return {"der": float((missed + false_alarm + confusion) / total), "missed": float(missed / total),
            "false_alarm": float(false_alarm / total), "confusion": float(confusion / total),
            "speech_s": float(n_ref.sum() * step), "people": len(people), "voices": len(voices)}


def _best_mapping(overlap: np.ndarray) -> np.ndarray:
    """For each person (row), the voice (column) it is matched with, one-to-one, most overlap in
    all: every ordering for up to 7, greedily beyond."""
    from itertools import permutations

    k = len(overlap)
    if k <= 7:
        best = max(permutations(range(k)), key=lambda p: sum(overlap[i, p[i]] for i in range(k)))
        return np.array(best)
    mapping, taken = np.full(k, -1), set()
    for i, j in sorted(np.ndindex(k, k), key=lambda ij: -overlap[ij]):
        if mapping[i] < 0 and j not in taken:
            mapping[i], taken = j, taken | {j}
    return mapping
