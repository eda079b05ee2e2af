"""MELD's label sets and the mapping of other corpora's labels onto them.

All corpora are mapped to MELD's 7 emotions and 3 sentiments so that one model and one
report serve them all. Corpora without sentiment get it from the emotion, as in MELD,
except surprise, whose sentiment is unknown (-1, masked in the loss).
"""

from __future__ import annotations

import numpy as np

EMOTIONS: tuple[str, ...] = ("neutral", "joy", "sadness", "anger", "surprise", "fear", "disgust")
SENTIMENTS: tuple[str, ...] = ("positive", "neutral", "negative")
UNKNOWN = -1

_ALIASES = {
    "calm": "neutral",
    "happy": "joy",
    "happiness": "joy",
    "sad": "sadness",
    "angry": "anger",
    "fearful": "fear",
    "surprised": "surprise",
    "ps": "surprise",
    "pleasant_surprise": "surprise",
    "pleasant_surprised": "surprise",
    "disgusted": "disgust",
}

_SENTIMENT_OF = {
    "neutral": "neutral",
    "joy": "positive",
    "sadness": "negative",
    "anger": "negative",
    "fear": "negative",
    "disgust": "negative",
}


def emotion_index(label: str) -> int:
    """Index in EMOTIONS of a corpus label (MELD name or a known alias)."""
    name = _ALIASES.get(label.strip().lower(), label.strip().lower())
    if name not in EMOTIONS:
        raise ValueError(f"unknown emotion label {label!r}; expected one of {', '.join(EMOTIONS)}")
    return EMOTIONS.index(name)


def sentiment_index(label: str | None) -> int:
    """Index in SENTIMENTS, or UNKNOWN for an empty label."""
    if label is None or not str(label).strip():
        return UNKNOWN
    name = str(label).strip().lower()
    if name not in SENTIMENTS:
        raise ValueError(f"unknown sentiment label {label!r}; expected one of {', '.join(SENTIMENTS)}")
    return SENTIMENTS.index(name)


def derived_sentiment(emotion: int) -> int:
    """Sentiment implied by an emotion for corpora that have none (surprise: unknown)."""
    name = _SENTIMENT_OF.get(EMOTIONS[emotion])
    return SENTIMENTS.index(name) if name else UNKNOWN


def balanced_weights(labels: np.ndarray, k: int) -> np.ndarray:
    """Loss weights by inverse square-root class frequency (UNKNOWN ignored): rare classes
    count more, without drowning the rest. Why: MELD is 47% neutral, and an unweighted
    loss is how the seed's models collapsed to answering "neutral"."""
    labels = np.asarray(labels)
    counts = np.bincount(labels[labels >= 0], minlength=k).astype(np.float64) + 1.0
    w = counts ** -0.5
    return (w / (w * counts).sum() * counts.sum()).astype(np.float32)
