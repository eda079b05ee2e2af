"""Training batches: a branch's cached inputs drawn, augmented and padded into tensors.

Why its own module: what a step sees (which files, how each voice and face is altered, how
corpora and classes are balanced, mixup) is the recipe's half that decides what a branch
learns; `train.py` is the other half, the optimisation that runs over it. Data flows one
way: datasets -> splits -> features -> batches -> train.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ..faces import CROP_SIZE
from ..normalise import Stats, group_stats, paired
from .augment import face_as_video
from .datasets import Item

#: 10 ms frames an utterance is cut to where it is scored rather than trained on (its centre).
SCORE_FRAMES = 3000


def audio_batch(mels: list[np.ndarray], max_frames: int, rng: np.random.Generator | None,
                step: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad voice frames into (B, T, bands); with `rng`, augmented as `augment_mel` says.
    `step`: 10 ms frames per frame (4 for the whisper front-end's pooled states); `max_frames`
    counts 10 ms frames."""
    clips, max_frames = [], max_frames // step
    for m in mels:
        m = m.astype(np.float32)
        if rng is not None:
            m = augment_mel(m, rng, step)
        if len(m) > max_frames:
            start = rng.integers(0, len(m) - max_frames + 1) if rng is not None else (len(m) - max_frames) // 2
            m = m[start:start + max_frames]
        clips.append(torch.from_numpy(np.ascontiguousarray(m)))
    lengths = torch.tensor([len(c) for c in clips])
    return torch.nn.utils.rnn.pad_sequence(clips, batch_first=True), lengths


def augment_mel(m: np.ndarray, rng: np.random.Generator, step: int = 1) -> np.ndarray:
    """Tempo (x0.85-1.15, resampling the frames), a shift of up to 3 Mel bands (a crude
    vocal-tract-length change) and SpecAugment (two band and two time masks). Frames of
    `step` > 1 are encoder states, not bands: they get no band shift, and their masks
    hide whole dimensions.

    Why: RAVDESS has 24 actors and TESS 2, so the voice branch sees few voices; tempo
    and band shifts make new speakers out of them, masks stop it from leaning on
    any single band or moment.
    """
    n = max(2, round(len(m) / rng.uniform(0.85, 1.15)))
    pos = np.linspace(0, len(m) - 1, n)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(m) - 1)
    w = (pos - lo)[:, None].astype(np.float32)
    m = m[lo] * (1 - w) + m[hi] * w
    shift = int(rng.integers(-3, 4)) if step == 1 else 0
    if shift:
        m = np.roll(m, shift, axis=1)
        edge = slice(0, shift) if shift > 0 else slice(shift, None)
        m[:, edge] = m[:, [shift if shift > 0 else shift - 1]]
    for _ in range(2):
        f = rng.integers(0, 9)
        f0 = rng.integers(0, m.shape[1] - f + 1)
        m[:, f0:f0 + f] = 0.0
        t = rng.integers(0, min(25 // step, len(m) // 5) + 1)
        t0 = rng.integers(0, len(m) - t + 1)
        m[t0:t0 + t] = 0.0
    return m


def face_batch(crops: np.ndarray, rng: np.random.Generator | None) -> torch.Tensor:
    """(B, 1, 48, 48) uint8; with `rng`, each crop augmented as `augment_face` says."""
    x = np.stack([augment_face(c, rng) for c in crops]) if rng is not None and len(crops) else crops
    return torch.from_numpy(np.ascontiguousarray(x)).unsqueeze(1)


def augment_face(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A mirror half the time, a small rotation (±15°), zoom (±10%) and shift (±4 px),
    contrast and brightness jitter, and one erased patch (a hand, glasses) a quarter of the
    time: the pose, framing and lighting differences between a detector's crops and
    FER2013's; and half the time what video does to a face (`augment.face_as_video`)."""
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if rng.random() < 0.5:
        crop = face_as_video(crop, rng)
    c = CROP_SIZE / 2
    affine = cv2.getRotationMatrix2D((c, c), rng.uniform(-15, 15), rng.uniform(0.9, 1.1))
    affine[:, 2] += rng.uniform(-4, 4, 2)
    out = cv2.warpAffine(np.ascontiguousarray(crop), affine, (CROP_SIZE, CROP_SIZE), borderMode=cv2.BORDER_REPLICATE)
    out = cv2.convertScaleAbs(out, alpha=rng.uniform(0.8, 1.2), beta=rng.uniform(-20, 20))
    if rng.random() < 0.25:
        side = int(rng.integers(8, 17))
        x0, y0 = rng.integers(0, CROP_SIZE - side + 1, 2)
        out[y0:y0 + side, x0:x0 + side] = int(rng.integers(0, 256))
    return out


class Branch:
    """The cached inputs and labels of one modality's split.

    With `normalised`, each voice is read beside itself standardised by its speaker's statistics (`normalise.py`;
    a file without a speaker is its own group), computed per copy (clean, each variant), as
    `predict` computes them over one recording; in training a share (`own_share`) of the
    utterances are standardised by their own statistics instead, as a short clip alone is.
    `by = "file"` scores every utterance standardised alone."""

    def __init__(self, modality: str, items: list[Item], feats: list, max_faces: int, step: int = 1,
                 variants: list[list[np.ndarray]] | None = None, normalised: bool = False, own_share: float = 0.0) -> None:
        self.modality = modality
        self.items = items
        self.max_faces = max_faces
        self.step = step  # 10 ms frames per voice frame
        self.feats = feats if modality != "face" else (np.stack(feats) if feats else np.zeros((0, CROP_SIZE, CROP_SIZE), np.uint8))
        self.variants = variants or []  # augmented copies of the voice features, drawn from in training
        self.emotion = np.array([i.emotion for i in items], dtype=np.int64)
        self.sentiment = np.array([i.sentiment for i in items], dtype=np.int64)
        self.own_share, self.by = own_share, "group"
        self.stats: list[list[Stats]] | None = None  # per copy, per item: its group's statistics
        if normalised and modality == "audio":
            groups: dict[str, list[int]] = {}
            for k, item in enumerate(items):
                groups.setdefault(item.speaker or str(item.path), []).append(k)
            self.stats = []
            for copy in [self.feats, *self.variants]:
                per_item: list[Stats] = [None] * len(items)  # type: ignore[list-item]
                for members in groups.values():
                    stats = group_stats([copy[k] for k in members])
                    for k in members:
                        per_item[k] = stats
                self.stats.append(per_item)

    def __len__(self) -> int:
        return len(self.items)

    def inputs(self, idx: np.ndarray, max_frames: int, rng: np.random.Generator | None) -> dict[str, torch.Tensor]:
        if self.modality == "audio":
            pick = rng.integers(0, len(self.variants) + 1, len(idx)) if rng is not None else np.zeros(len(idx), int)
            mels = [self.variants[k - 1][i] if k else self.feats[i] for i, k in zip(idx, pick)]
            if self.stats is not None:
                own = (rng.random(len(idx)) < self.own_share) if rng is not None else np.full(len(idx), self.by == "file")
                mels = [paired(m, group_stats([m]) if alone else self.stats[k][i])
                        for m, i, k, alone in zip(mels, idx, pick, own)]
            mel, lengths = audio_batch(mels, max_frames, rng, self.step)
            return {"mel": mel, "mel_lengths": lengths}
        if self.modality == "face":
            crops = face_batch(self.feats[idx], rng)
            return {"crops": crops, "crop_mask": torch.ones(len(idx), 1, dtype=torch.bool)}
        return self._clip_inputs(idx, max_frames, rng)

    def _clip_inputs(self, idx: np.ndarray, max_frames: int, rng: np.random.Generator | None) -> dict[str, torch.Tensor]:
        """Paired clips; in training (`rng`), one modality of a clip is hidden 1 time in 4."""
        n_mels = self.feats[0][0].shape[1]
        mels = [self.feats[i][0] if len(self.feats[i][0]) else np.zeros((1, n_mels), np.float16) for i in idx]
        has_audio = torch.tensor([len(self.feats[i][0]) > 0 for i in idx])
        mel, lengths = audio_batch(mels, max_frames, rng, self.step)
        crops = torch.zeros(len(idx), self.max_faces, CROP_SIZE, CROP_SIZE, dtype=torch.uint8)
        mask = torch.zeros(len(idx), self.max_faces, dtype=torch.bool)
        for row, i in enumerate(idx):
            clip = self.feats[i][1][: self.max_faces]
            if len(clip):
                crops[row, : len(clip)] = face_batch(clip, rng)[:, 0]
                mask[row, : len(clip)] = True
        has_face = mask.any(1)
        if rng is not None:
            both = (has_audio & has_face).numpy()
            draw = rng.random(len(idx))
            has_audio &= torch.from_numpy(~(both & (draw < 0.25)))
            has_face &= torch.from_numpy(~(both & (draw >= 0.75)))
        return {"mel": mel, "mel_lengths": lengths, "crops": crops, "crop_mask": mask & has_face[:, None],
                "has_audio": has_audio, "has_face": has_face}


def by_class_and_corpus(items: list[Item]) -> dict[int, dict[str, list[int]]]:
    """The indices of `items` by emotion, then by corpus: the groups training balances over,
    by drawing (`balanced_draw`) or by weighting (`probe`)."""
    groups: dict[int, dict[str, list[int]]] = {}
    for k, item in enumerate(items):
        groups.setdefault(item.emotion, {}).setdefault(item.corpus, []).append(k)
    return groups


def balanced_draw(items: list[Item], n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` indices of `items`: a class drawn uniformly, then a corpus that has it, then one of
    its files. Why: the corpora differ tenfold in size and in which classes they have; drawn
    in proportion, ASED and nEMO would set the voice branch's idea of every class, and the
    classes few corpora have (disgust, surprise) would look rare."""
    by_class = by_class_and_corpus(items)
    classes = sorted(by_class)
    out = np.empty(n, dtype=np.int64)
    for j, c in enumerate(rng.integers(0, len(classes), n)):
        corpora = by_class[classes[c]]
        files = corpora[sorted(corpora)[int(rng.integers(0, len(corpora)))]]
        out[j] = files[int(rng.integers(0, len(files)))]
    return out


def face_draw(items: list[Item], n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` indices of `items`: a corpus drawn in proportion to the square root of its size,
    then one of its images. Why: drawn in proportion, FER2013's 29,000 images would drown
    JAFFE's 200 posed faces (under 1% of the draws); drawn uniformly, JAFFE's few would be
    seen a hundred times an epoch. Classes are balanced by the loss's weights."""
    by_corpus: dict[str, list[int]] = {}
    for k, item in enumerate(items):
        by_corpus.setdefault(item.corpus, []).append(k)
    names = sorted(by_corpus)
    share = np.sqrt([len(by_corpus[c]) for c in names])
    corpora = rng.choice(len(names), size=n, p=share / share.sum())
    out = np.empty(n, dtype=np.int64)
    for j, c in enumerate(corpora):
        files = by_corpus[names[c]]
        out[j] = files[int(rng.integers(0, len(files)))]
    return out


def draw(modality: str, items: list[Item], n: int, balance: bool, rng: np.random.Generator) -> np.ndarray:
    """One epoch's order of a branch's training items (`n` of them where drawn)."""
    if balance and modality == "audio":
        return balanced_draw(items, n, rng)
    if balance and modality == "face" and len({i.corpus for i in items}) > 1:
        return face_draw(items, n, rng)
    return rng.permutation(len(items))


@dataclass(frozen=True)
class Mix:
    """A mixup of one batch: each sample is `share` of itself and 1 - `share` of sample `order[i]`."""

    share: float
    order: torch.Tensor


def mixed_faces(inputs: dict[str, torch.Tensor], alpha: float, rng: np.random.Generator) -> tuple[dict, Mix]:
    """A face batch mixed with itself shuffled (mixup, Zhang et al. 2018), the share drawn
    from Beta(`alpha`, `alpha`). Why: FER2013's labels are noisy and its faces few for a
    CNN; training on blends of two faces with the blend of their labels smooths what the
    network learns between expressions, the usual gain on FER2013 for a small network."""
    share = float(rng.beta(alpha, alpha))
    crops = inputs["crops"].float()
    order = torch.from_numpy(rng.permutation(len(crops))).to(crops.device)
    return {**inputs, "crops": share * crops + (1 - share) * crops[order]}, Mix(share, order)
