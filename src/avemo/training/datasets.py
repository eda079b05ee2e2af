"""Corpus adapters: each turns a corpus folder into labelled items in MELD's label space.

A data spec on the command line is `KIND:PATH`, e.g. `ravdess:data/ravdess_speech`.
Kinds: ravdess (file-name codes), tess (folder names), crema-d (file-name codes),
fer2013 (`split/label/*.jpg`), meld (the official CSVs beside the clip folders), and
manifest (a CSV with `path,emotion` and optional `sentiment,speaker,split`).
Sentiment is taken from the corpus where it has one, else derived from the emotion
(surprise: unknown, masked in the loss).
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

from ..errors import AvemoError
from ..labels import derived_sentiment, emotion_index, sentiment_index
from ..media import IMAGE_SUFFIXES

log = logging.getLogger("avemo")

AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus", ".aac"}
_CREMA_EMOTIONS = {"ANG": "anger", "DIS": "disgust", "FEA": "fear", "HAP": "joy", "NEU": "neutral", "SAD": "sadness"}
#: MELD's official release: split -> (annotation CSV, folder of dia{D}_utt{U}.mp4 clips)
MELD_SPLITS = {
    "train": ("train_sent_emo.csv", "train_splits"),
    "val": ("dev_sent_emo.csv", "dev_splits_complete"),
    "test": ("test_sent_emo.csv", "output_repeated_splits_test"),
}
_RAVDESS_EMOTIONS = {1: "neutral", 2: "calm", 3: "happy", 4: "sad", 5: "angry", 6: "fearful", 7: "disgust", 8: "surprised"}


@dataclass(frozen=True)
class Item:
    """One labelled file of a corpus."""

    path: Path
    emotion: int
    sentiment: int  # UNKNOWN when the corpus can't tell
    speaker: str | None  # None where speakers are unknown (web images)
    split: str | None  # the corpus's own split ("train", "val", "test"), if it has one
    corpus: str
    dialogue: str | None = None  # items of one dialogue form a sequence (MELD), ordered by `turn`
    turn: int = 0

    @property
    def modality(self) -> str:
        suffix = self.path.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            return "face"
        if suffix in AUDIO_SUFFIXES:
            return "audio"
        return "video"


def _item(path: Path, emotion: str, corpus: str, speaker: str | None = None, split: str | None = None,
          sentiment: str | None = None, dialogue: str | None = None, turn: int = 0) -> Item:
    emo = emotion_index(emotion)
    sent = sentiment_index(sentiment) if sentiment else derived_sentiment(emo)
    return Item(path, emo, sent, speaker, split or None, corpus, dialogue, turn)


def ravdess(root: Path) -> list[Item]:
    """RAVDESS: `03-01-EE-II-SS-RR-AA.ext`, EE the emotion code, AA the actor."""
    items = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES | {".mp4"}):
        parts = path.stem.split("-")
        if len(parts) != 7 or not all(p.isdigit() for p in parts):
            continue
        items.append(_item(path, _RAVDESS_EMOTIONS[int(parts[2])], "ravdess", speaker=f"ravdess-{parts[6]}"))
    return items


def tess(root: Path) -> list[Item]:
    """TESS: folders `OAF_angry`, `YAF_pleasant_surprised`, ...; speaker OAF or YAF."""
    items = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES):
        speaker, _, label = path.parent.name.partition("_")
        if speaker.upper() not in {"OAF", "YAF"} or not label:
            continue
        items.append(_item(path, label.lower(), "tess", speaker=f"tess-{speaker.upper()}"))
    return items


def crema_d(root: Path) -> list[Item]:
    """CREMA-D: `1001_DFA_ANG_XX.wav` (or .flv/.mp4 video): actor, sentence, emotion, level."""
    media = AUDIO_SUFFIXES | {".flv", ".mp4", ".avi", ".mkv"}
    items = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in media):
        parts = path.stem.split("_")
        if len(parts) != 4 or parts[2] not in _CREMA_EMOTIONS:
            continue
        items.append(_item(path, _CREMA_EMOTIONS[parts[2]], "crema-d", speaker=f"crema-{parts[0]}"))
    return items


def meld(root: Path) -> list[Item]:
    """MELD: the official CSVs beside `train_splits/`, `dev_splits_complete/`,
    `output_repeated_splits_test/`. Listed clips that are missing (the release lacks a
    few, e.g. dev dia110_utt7) are reported once and skipped."""
    items, missing = [], []
    for split, (csv_name, folder) in MELD_SPLITS.items():
        csv_path = root / csv_name
        if not csv_path.is_file():
            continue
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            for row in csv.DictReader(f):
                dia, utt = row["Dialogue_ID"].strip(), row["Utterance_ID"].strip()
                clip = root / folder / f"dia{dia}_utt{utt}.mp4"
                if not clip.is_file():
                    missing.append(clip)
                    continue
                items.append(_item(clip, row["Emotion"], "meld", speaker=row["Speaker"].strip(), split=split,
                                   sentiment=row["Sentiment"], dialogue=f"meld-{split}-{dia}", turn=int(utt)))
    if missing:
        shown = ", ".join(f"{p.parent.name}/{p.name}" for p in missing[:3])
        log.warning("meld: %d clips listed in the CSVs are missing and skipped (%s%s)",
                    len(missing), shown, ", ..." if len(missing) > 3 else "")
    return items


def fer2013(root: Path) -> list[Item]:
    """FER2013 image folders: `train/angry/x.jpg`, `val/` (PublicTest), `test/` (PrivateTest)."""
    items = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        split = path.parent.parent.name.lower()
        split = {"training": "train", "publictest": "val", "privatetest": "test"}.get(split, split)
        items.append(_item(path, path.parent.name, "fer2013", split=split if split in {"train", "val", "test"} else None))
    return items


def manifest(csv_path: Path) -> list[Item]:
    """Generic CSV: `path,emotion[,sentiment,speaker,split]`; paths relative to the CSV."""
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"path", "emotion"} <= set(rows[0]):
        raise AvemoError(f"{csv_path}: a manifest needs 'path' and 'emotion' columns")
    items = []
    for n, row in enumerate(rows, start=2):
        path = Path(row["path"])
        path = path if path.is_absolute() else csv_path.parent / path
        try:
            items.append(_item(path, row["emotion"], csv_path.stem, speaker=row.get("speaker") or None,
                               split=(row.get("split") or "").lower(), sentiment=row.get("sentiment") or None))
        except ValueError as exc:
            raise AvemoError(f"{csv_path}:{n}: {exc}") from None
    return items


ADAPTERS = {"ravdess": ravdess, "tess": tess, "crema-d": crema_d, "fer2013": fer2013, "meld": meld, "manifest": manifest}


def load_spec(spec: str) -> list[Item]:
    """Items of a `KIND:PATH` data spec."""
    kind, sep, path = spec.partition(":")
    if not sep or kind not in ADAPTERS:
        raise AvemoError(f"data spec {spec!r}: expected KIND:PATH with KIND one of {', '.join(ADAPTERS)}")
    root = Path(path)
    if not root.exists():
        raise AvemoError(f"data spec {spec!r}: {root} does not exist")
    items = ADAPTERS[kind](root)
    if not items:
        raise AvemoError(f"data spec {spec!r}: no {kind} files found under {root}")
    return items

