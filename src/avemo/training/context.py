"""Conversation context: training the bcLSTM-style stage over sequences of utterance vectors.

Two users of one trainer. (1) After `avemo train` on data with dialogue structure
(MELD's Dialogue_ID / Utterance_ID), the fused embeddings of each dialogue's
utterances, in order, train the model's context stage, which `predict` then runs over
a video's segments. (2) `avemo train --features` on precomputed per-utterance vectors
(MELD's released `audio_embeddings_feature_selection_{emotion,sentiment}.pkl`), which
reproduces the seed's two systems: `--arch gru` (bidirectional GRU, Adam) and
`--arch lstm` (2-layer bidirectional LSTM, Adadelta), masked over padded utterances.
"""

from __future__ import annotations

import csv
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import AvemoError
from ..labels import EMOTIONS, SENTIMENTS, UNKNOWN, balanced_weights, emotion_index, sentiment_index
from ..metrics import classification_report, summary_line
from .model import ContextNet

log = logging.getLogger("avemo")


@dataclass
class Dialogue:
    """One dialogue: its utterance vectors in order, with their labels (UNKNOWN where absent)."""

    key: str
    x: torch.Tensor  # (T, D)
    emotion: torch.Tensor  # (T,)
    sentiment: torch.Tensor  # (T,)


def _pad(dialogues: list[Dialogue]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(d.x) for d in dialogues])
    x = torch.nn.utils.rnn.pad_sequence([d.x for d in dialogues], batch_first=True)
    emo = torch.nn.utils.rnn.pad_sequence([d.emotion for d in dialogues], batch_first=True, padding_value=UNKNOWN)
    sent = torch.nn.utils.rnn.pad_sequence([d.sentiment for d in dialogues], batch_first=True, padding_value=UNKNOWN)
    return x, lengths, emo, sent


def _masked_ce(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Class-weighted cross-entropy over real, labelled utterances only (padding and
    unknown labels masked)."""
    keep = target != UNKNOWN
    if not keep.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[keep], target[keep], weight=weight)


@torch.no_grad()
def predict_dialogues(net: ContextNet, dialogues: list[Dialogue]) -> tuple[np.ndarray, np.ndarray]:
    """Predicted emotion and sentiment of every utterance, flattened in dialogue order."""
    net.eval()
    x, lengths, _, _ = _pad(dialogues)
    emo, sent = net(x, lengths)
    keep = torch.arange(x.shape[1])[None, :] < lengths[:, None]
    return emo.argmax(-1)[keep].numpy(), sent.argmax(-1)[keep].numpy()


def score(net: ContextNet, dialogues: list[Dialogue]) -> dict:
    """Emotion and sentiment reports over the labelled utterances of `dialogues`."""
    emo_pred, sent_pred = predict_dialogues(net, dialogues)
    emo_true = torch.cat([d.emotion for d in dialogues]).numpy()
    sent_true = torch.cat([d.sentiment for d in dialogues]).numpy()
    out = {}
    for task, true, pred, labels in (("emotion", emo_true, emo_pred, EMOTIONS), ("sentiment", sent_true, sent_pred, SENTIMENTS)):
        known = true != UNKNOWN
        if known.any():
            out[task] = classification_report(true[known], pred[known], list(labels))
    return out


def fit_context(train: list[Dialogue], val: list[Dialogue], arch: str = "gru", hidden: int = 64, epochs: int = 60,
                batch: int = 16, patience: int = 10, seed: int = 0, layers: int | None = None) -> tuple[ContextNet, list[dict]]:
    """Train a ContextNet; keep the epoch with the best validation weighted F1 (emotion, else sentiment).

    arch "gru": 1-layer BiGRU with Adam (the seed's first system); "lstm": 2-layer BiLSTM
    with Adadelta (its second).
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    layers = layers or (1 if arch == "gru" else 2)
    net = ContextNet(train[0].x.shape[1], hidden, arch, len(EMOTIONS), len(SENTIMENTS), layers=layers)
    every = torch.cat([d.x for d in train])
    net.shift.copy_(every.mean(0))
    net.scale.copy_(every.std(0).clamp(min=1e-4))
    weights = [torch.from_numpy(balanced_weights(torch.cat([getattr(d, task) for d in train]).numpy(), k))
               for task, k in (("emotion", len(EMOTIONS)), ("sentiment", len(SENTIMENTS)))]
    opt = torch.optim.Adam(net.parameters(), lr=1e-3) if arch == "gru" else torch.optim.Adadelta(net.parameters(), lr=1.0)
    best, best_state, stale, history = -1.0, None, 0, []
    for epoch in range(1, epochs + 1):
        net.train()
        order = rng.permutation(len(train))
        for start in range(0, len(order), batch):
            x, lengths, emo, sent = _pad([train[i] for i in order[start:start + batch]])
            e, s = net(x, lengths)
            loss = _masked_ce(e.flatten(0, 1), emo.flatten(), weights[0]) + _masked_ce(s.flatten(0, 1), sent.flatten(), weights[1])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            opt.step()
        reports = score(net, val or train)
        task = "emotion" if "emotion" in reports else "sentiment"
        value = reports[task]["weighted_f1"]
        history.append({"epoch": epoch, f"val_{task}_weighted_f1": value})
        if value > best:
            best, stale = value, 0
            best_state = {k: v.clone() for k, v in net.state_dict().items()}
        else:
            stale += 1
            if stale >= patience:
                break
    net.load_state_dict(best_state)
    net.eval()
    return net, history


def group_dialogues(keys: list[str], turns: list[int], x: torch.Tensor, emotion: np.ndarray,
                    sentiment: np.ndarray) -> list[Dialogue]:
    """Rows of one dialogue key, ordered by turn, become one Dialogue."""
    rows: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        rows.setdefault(key, []).append(i)
    out = []
    for key, idx in rows.items():
        idx = sorted(idx, key=lambda i: turns[i])
        out.append(Dialogue(key, x[idx], torch.as_tensor(emotion[idx]), torch.as_tensor(sentiment[idx])))
    return out


# ------------------------------------------------------------------ MELD's feature pickles

MELD_CSVS = ("train_sent_emo.csv", "dev_sent_emo.csv", "test_sent_emo.csv")


def load_meld_vectors(pickle_path: Path, csv_dir: Path, task: str) -> dict[str, list[Dialogue]]:
    """MELD's released vectors: a pickled (train, dev, test) tuple of dicts
    "{Dialogue_ID}_{Utterance_ID}" -> vector; labels from the official CSVs in `csv_dir`.
    Only the pickle's task is labelled (the other head's labels are UNKNOWN)."""
    try:
        with open(pickle_path, "rb") as f:
            parts = pickle.load(f, encoding="latin1")
    except (OSError, pickle.UnpicklingError, EOFError) as exc:
        raise AvemoError(f"{pickle_path}: not a readable feature pickle ({exc})") from None
    if not isinstance(parts, (tuple, list)) or len(parts) < 3 or not all(isinstance(p, dict) for p in parts[:3]):
        raise AvemoError(f"{pickle_path}: expected a (train, dev, test) tuple of dicts of vectors")
    out = {}
    for split, csv_name, vectors in zip(("train", "val", "test"), MELD_CSVS, parts[:3]):
        csv_path = Path(csv_dir) / csv_name
        if not csv_path.is_file():
            raise AvemoError(f"{csv_path}: MELD annotation CSV not found")
        keys, turns, xs, emo, sent, missing = [], [], [], [], [], 0
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            for row in csv.DictReader(f):
                key = f"{row['Dialogue_ID'].strip()}_{row['Utterance_ID'].strip()}"
                if key not in vectors:
                    missing += 1
                    continue
                keys.append(row["Dialogue_ID"].strip())
                turns.append(int(row["Utterance_ID"]))
                xs.append(np.asarray(vectors[key], dtype=np.float32).reshape(-1))
                emo.append(emotion_index(row["Emotion"]) if task == "emotion" else UNKNOWN)
                sent.append(sentiment_index(row["Sentiment"]) if task == "sentiment" else UNKNOWN)
        if missing:
            log.warning("%s: %d utterances have no vector in %s; skipped", csv_name, missing, pickle_path.name)
        if not xs:
            raise AvemoError(f"{pickle_path}: no vector matches the utterances of {csv_name}")
        out[split] = group_dialogues(keys, turns, torch.from_numpy(np.stack(xs)), np.array(emo), np.array(sent))
    return out


def train_on_vectors(pickle_path: Path, csv_dir: Path, task: str, arch: str, out_dir: Path, epochs: int = 60,
                     seed: int = 0) -> dict:
    """Train and test a context model on MELD-style vectors; writes weights, config and report."""
    import json

    from safetensors.torch import save_file

    splits = load_meld_vectors(Path(pickle_path), Path(csv_dir), task)
    net, history = fit_context(splits["train"], splits["val"], arch=arch, epochs=epochs, seed=seed)
    report = score(net, splits["test"])[task]
    log.info("%s", summary_line(f"test {task} ({arch})", report))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(out_dir / "context.safetensors"))
    meta = {"kind": "context-on-vectors", "task": task, "arch": arch, "input_dim": int(splits["train"][0].x.shape[1]),
            "hidden": net.mix[1].out_features, "features": str(pickle_path), "history": history, "test": report}
    (out_dir / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
    return report
