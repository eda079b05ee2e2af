"""The voice probe's fitting (`model.VoiceProbe`): after the recurrent voice branch is trained,
a logistic regression over the pooled statistics of the same inputs, mixed into the voice's
logits by a share chosen on the validation speakers.

How: every training utterance, clean and in each augmented copy, standardised by its speaker
(as `avemo evaluate` reads a known speaker) and by itself (as one short clip is read), gives
one row of statistics (`VoiceProbe.pooled`); rows count balanced over classes, then corpora
(as `batches.balanced_draw` draws the branch's batches), the by-itself rows for the branch's
`own_share`. The regression is fitted full-batch (L-BFGS) with an L2 penalty; the penalty and
the emotion logits' share are those whose mix is best on the validation speakers (emotion UAR,
by speaker and alone averaged), then the sentiment logits' share the one best there for sentiment
(its own UAR): a probe that helps one head need not help the other. Shares of 0 for both there
mean the probe does not help: the model keeps none.

Why its own module: the probe is fitted, not trained with the branch (the regression is convex,
its optimum found in a minute on two cores from the cached inputs), and `train.py` calls it
as it calls the temperatures' fit, after the branch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..labels import UNKNOWN
from ..metrics import classification_report
from ..normalise import group_stats, paired
from .batches import SCORE_FRAMES, Branch, audio_batch, by_class_and_corpus
from .model import AvemoNet, VoiceProbe

log = logging.getLogger("avemo")

#: L2 penalties tried, and the probe's shares of the voice's logits.
PENALTIES = (1e-2, 3e-2, 1e-1, 3e-1, 1.0)
SHARES = (0.0, 0.25, 0.5, 0.75)


def _pooled(frames: np.ndarray, stats: tuple[np.ndarray, np.ndarray] | None, step: int) -> np.ndarray:
    """One utterance's statistics as the probe reads them: its frames, paired with themselves
    standardised by `stats` where the model normalises, cut as the branch's scores cut them."""
    x, lengths = audio_batch([frames if stats is None else paired(frames, stats)], SCORE_FRAMES, None, step)
    with torch.no_grad():
        return VoiceProbe.pooled(x, lengths)[0].numpy()


def pooled_rows(branch: Branch, copy: int = 0, alone: bool | None = None) -> np.ndarray:
    """(n, 2W): the statistics of each of `branch`'s utterances in one copy (0: clean), standardised
    by its speaker, or by itself with `alone` (default: as the branch scores, `Branch.by`)."""
    alone = branch.by == "file" if alone is None else alone
    feats = branch.feats if copy == 0 else branch.variants[copy - 1]
    rows = []
    for k, frames in enumerate(feats):
        stats = None if branch.stats is None else group_stats([frames]) if alone else branch.stats[copy][k]
        rows.append(_pooled(frames, stats, branch.step))
    return np.stack(rows)


@torch.no_grad()
def probe_logits(net: AvemoNet, branch: Branch) -> torch.Tensor:
    """The probe's (n, E + S) logits over a voice branch split, as it scores (`Branch.by`)."""
    return net.probe.read(torch.from_numpy(pooled_rows(branch)))


def _balance(branch: Branch) -> np.ndarray:
    """Per utterance: weights that make every class count alike, and within a class every corpus."""
    w = np.zeros(len(branch))
    groups = by_class_and_corpus(branch.items)
    for corpora in groups.values():
        for members in corpora.values():
            w[members] = 1.0 / (len(groups) * len(corpora) * len(members))
    return w * len(w)


def _even(weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """`weight` rescaled so that every class of `labels` weighs the same in total (the total kept).
    Why: rows balanced by emotion are 4 in 6 negative in sentiment (anger, disgust, fear, sadness),
    and a regression fitted on them learns to lean negative."""
    totals = torch.zeros(int(labels.max()) + 1).index_add_(0, labels, weight)
    present = totals > 0
    share = torch.where(present, weight.sum() / (present.sum() * totals.clamp_min(1e-12)), torch.zeros_like(totals))
    return weight * share[labels]


def _fit(x: torch.Tensor, emotion: torch.Tensor, sentiment: torch.Tensor, weight: torch.Tensor, n_emotions: int,
         n_sentiments: int, penalty: float) -> torch.nn.Linear:
    """The logistic regression: emotion and (where known, at half weight, as in training, its
    classes weighing alike) sentiment."""
    linear = torch.nn.Linear(x.shape[1], n_emotions + n_sentiments)
    known = sentiment != UNKNOWN
    sentiment_weight = _even(weight[known], sentiment[known])
    opt = torch.optim.LBFGS(linear.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        out = linear(x)
        loss = (F.cross_entropy(out[:, :n_emotions], emotion, reduction="none") * weight).mean()
        loss = loss + 0.5 * (F.cross_entropy(out[known, n_emotions:], sentiment[known], reduction="none") * sentiment_weight).mean()
        loss = loss + penalty * linear.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return linear


def fit_voice_probe(net: AvemoNet, voice: dict[str, Branch], own_share: float,
                    embed: Callable[[AvemoNet, Branch], torch.Tensor]) -> dict:
    """Fit `net.probe` on `voice`'s training utterances and choose its penalty and share on its
    validation speakers (see the module's docstring), beside the branch's own logits of their
    `embed`dings (`train.embed_branch`); returns what was fitted and how each choice scored.
    Where no share above 0 helps, the probe is removed from `net`."""
    train, val = voice["train"], voice["val"]
    n_emotions = len(net.cfg.emotions)
    parts, weights = [], []
    balance = _balance(train)
    for copy in range(len(train.variants) + 1):
        for alone, share in ((False, 1.0 - own_share), (True, own_share)):
            if train.stats is None and alone:
                continue  # a model that does not normalise reads every utterance one way
            parts.append(pooled_rows(train, copy, alone))
            weights.append(balance * (share if train.stats is not None else 1.0))
    x = np.concatenate(parts)
    shift, scale = x.mean(0), np.maximum(x.std(0), 1e-3)
    copies = len(parts)
    xt = torch.from_numpy((x - shift) / scale)
    emotion = torch.from_numpy(np.tile(train.emotion, copies))
    sentiment = torch.from_numpy(np.tile(train.sentiment, copies))
    weight = torch.from_numpy(np.concatenate(weights)).float()

    ways = ("group", "file") if val.stats is not None else ("group",)
    own, rows = {}, {}
    for way in ways:  # the branch's own logits and the probe's inputs on the validation speakers, both ways read
        val.by = way
        embedded = embed(net, val)
        with torch.no_grad():
            own[way] = torch.cat(net.heads(embedded), 1)
        rows[way] = torch.from_numpy((pooled_rows(val) - shift) / scale)
    val.by = "group"
    known = val.sentiment != UNKNOWN
    heads = {"emotion": (val.emotion, slice(None), slice(None, n_emotions), list(net.cfg.emotions)),
             "sentiment": (val.sentiment[known], known, slice(n_emotions, None), list(net.cfg.sentiments))}

    def mixed_uar(probe: dict[str, torch.Tensor], share: float, head: str) -> list[float]:
        """The head's validation UAR, each way read, of the branch's logits and `share` of the probe's."""
        labels, rows_kept, columns, names = heads[head]
        return [classification_report(labels, ((1 - share) * own[w] + share * probe[w])[rows_kept, columns].argmax(1).numpy(),
                                      names)["uar"] for w in ways]

    tried, best = {}, None
    for penalty in PENALTIES:
        linear = _fit(xt, emotion, sentiment, weight, n_emotions, len(net.cfg.sentiments), penalty)
        with torch.no_grad():
            probe = {way: linear(rows[way]) for way in ways}
        for share in SHARES:
            uar = tried[f"{penalty:g}/{share:g}"] = mixed_uar(probe, share, "emotion")
            score = float(np.mean(uar))
            if best is None or score > best[0] + 1e-9:
                best = (score, penalty, share, linear, probe)
    score, penalty, share, linear, probe = best
    sentiment_tried = {f"{s:g}": mixed_uar(probe, s, "sentiment") for s in SHARES}
    sentiment_share = max(SHARES, key=lambda s: float(np.mean(sentiment_tried[f"{s:g}"])))  # the first best
    log.info("voice probe on %d validation utterances: UAR %.3f with share %g (penalty %g), %.3f without; "
             "sentiment UAR %.3f with share %g, %.3f without", len(val), score, share, penalty,
             float(np.mean(tried[f"{PENALTIES[0]:g}/0"])), float(np.mean(sentiment_tried[f"{sentiment_share:g}"])),
             sentiment_share, float(np.mean(sentiment_tried["0"])))
    fitted = {"tried": tried, "sentiment_tried": sentiment_tried}
    if share == sentiment_share == 0:
        net.probe, net.cfg.voice_probe = None, False
        return {"kept": False, **fitted}
    with torch.no_grad():
        net.probe.shift.copy_(torch.from_numpy(shift))
        net.probe.scale.copy_(torch.from_numpy(scale))
        net.probe.share.copy_(torch.tensor([share, sentiment_share]))
        net.probe.linear.load_state_dict(linear.state_dict())
    return {"kept": True, "penalty": penalty, "share": share, "sentiment_share": sentiment_share, "val_uar": score,
            "rows": len(x), **fitted}
