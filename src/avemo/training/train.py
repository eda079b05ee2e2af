"""Training: corpora in, a saved model folder out.

Single-modality corpora train their branch (speech corpora the voice branch, face
corpora the face branch); both branches share the heads, so one run trains them
together: every step takes one voice batch and one face batch. Paired audio-visual
clips (MELD, CREMA-D video, a manifest of videos) add a third batch that trains both
branches and the fusion at once, with modality dropout (one modality hidden at random)
so the fused model stays good when a clip lacks a voice or a face. Validation holds out
whole speakers, never files of a speaker seen in training; early stopping follows
validation weighted F1. A checkpoint is written atomically after each epoch and a
rerun with the same --out resumes from it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import random
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..config import ModelConfig, read_config
from ..errors import AvemoError
from ..files import written_whole
from ..labels import EMOTIONS, SENTIMENTS, UNKNOWN, balanced_weights
from ..metrics import classification_report, summary_line
from .augment import face_as_video
from .batches import SCORE_FRAMES, Branch, Mix, draw, mixed_faces
from .datasets import load_spec
from .features import cached_features, pretrained_front
from .model import AvemoNet, load_net, save_model
from .probe import fit_voice_probe, probe_logits
from .splits import held_out_name, split_items

log = logging.getLogger("avemo")

#: What a run without training (`epochs` 0) may change of its `init` model: a voice probe
#: added, the face crops a segment judges (fewer for a wider, slower face CNN), and whether
#: each crop is judged with its mirror image too.
AFTER_TRAINING = ("voice_probe", "max_faces", "face_mirror")

#: Kinds of training input: speech files, face images, paired audio-visual clips.
BRANCHES = ("audio", "face", "video")


@dataclass
class TrainSettings:
    """Optimisation settings, saved beside the model for reproducibility."""

    epochs: int = 24
    patience: int = 6
    audio_batch: int = 32  # each step takes one voice and one face batch: ~40 passes over the voices
    face_batch: int = 128
    video_batch: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    max_frames: int = 400  # random 4 s crops of longer utterances while training
    seed: int = 0
    val_speakers: float = 0.1  # share of speakers held out for validation
    test_speakers: float = 0.2  # share held out for the final test (corpora with >= 5 speakers)
    balance_speech: bool = True  # draw speech balanced over classes then corpora, faces over corpora (`balanced_draw`, `face_draw`)
    init: str | None = None  # a model folder to start from; branches without training data stay as they are there
    audio_variants: int = 0  # augmented copies of each speech file (codec, noise, gain, band), beside the clean one
    noise_files: tuple[str, ...] = ()  # recordings the augmented copies may mix in (music, room tone)
    own_norm_share: float = 0.3  # voice_norm "group": share of training utterances standardised by their own statistics
    face_mixup: float = 0.0  # > 0: each face batch mixed with itself shuffled, by a Beta(a, a) share (mixup)
    warm: bool = False  # with init: the branches trained here start from its weights (same held-out people only)


def _loss(logits: tuple[torch.Tensor, torch.Tensor], emo: torch.Tensor, sent: torch.Tensor,
          weights: dict[str, torch.Tensor], smoothing: float) -> torch.Tensor:
    loss = F.cross_entropy(logits[0], emo, weight=weights["emotion"], label_smoothing=smoothing)
    known = sent != UNKNOWN
    if known.any():
        loss = loss + 0.5 * F.cross_entropy(logits[1][known], sent[known], weight=weights["sentiment"], label_smoothing=smoothing)
    return loss


# ---------------------------------------------------------------- context stage

CONTEXT_HIDDEN = 64


def train_context_stage(net: AvemoNet, branches: dict[str, dict[str, Branch]], seed: int) -> dict | None:
    """Where the data has dialogues, train the context stage on the frozen model's fused
    embeddings of each dialogue's utterances in order; attach it to `net`. Returns its
    test scores (None when no training item belongs to a dialogue)."""
    from .context import fit_context, group_dialogues, score

    sets = {}
    for split in ("train", "val", "test"):
        keys, turns, xs, emo, sent = [], [], [], [], []
        for branch in (b[split] for b in branches.values()):
            rows = [i for i, item in enumerate(branch.items) if item.dialogue]
            if not rows:
                continue
            xs.append(embed_branch(net, branch)[rows])
            keys += [branch.items[i].dialogue for i in rows]
            turns += [branch.items[i].turn for i in rows]
            emo.append(branch.emotion[rows])
            sent.append(branch.sentiment[rows])
        sets[split] = group_dialogues(keys, turns, torch.cat(xs), np.concatenate(emo), np.concatenate(sent)) if xs else []
    if not sets["train"]:
        return None
    log.info("context stage: %d training dialogues", len(sets["train"]))
    context, _ = fit_context(sets["train"], sets["val"], arch=net.cfg.rnn, hidden=CONTEXT_HIDDEN, seed=seed, layers=1)
    net.context = context
    net.cfg.context_hidden = CONTEXT_HIDDEN
    reports = score(context, sets["test"]) if sets["test"] else {}
    if "emotion" in reports:
        log.info("%s", summary_line("test emotion in context", reports["emotion"]))
    return reports


GATE_STEPS = 400
GATE_BATCH = 256


#: Temperatures tried when calibrating a modality on its validation people: 1/4 to 4.
TEMPERATURES = np.exp(np.linspace(np.log(0.25), np.log(4.0), 81))


def fitted_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature that gives `logits` over it the least cross-entropy on `labels`."""
    with torch.no_grad():
        losses = [float(F.cross_entropy(logits / t, labels)) for t in TEMPERATURES]
    return float(TEMPERATURES[int(np.argmin(losses))])


def train_fusion_gate(net: AvemoNet, branches: dict[str, dict[str, Branch]], seed: int) -> dict | None:
    """Without paired clips, calibrate each modality and teach the fusion gate from
    label-matched pairs. First each modality's temperature (`AvemoNet.calibration`) is fitted
    to its validation people's emotions: trained on ~20 actors, a voice is overconfident on
    people it never heard (and a face trained with mixup underconfident), and the one over
    its temperature is how much each counts in the fusion. Then pairs, a training
    utterance's voice beside a training face of the same emotion (other people, drawn afresh
    each step), train the gate alone, the branches and heads frozen. Each side of a pair is
    clean or, half the time, as real recordings carry it (`as_recorded`: the face as a video
    shows it, the voice its augmented copy: a codec, noise, a phone), so that the gate learns
    to lean on whichever modality is clear. Validation pairs come
    from the validation speakers and faces; the temperatures are kept where they do no worse
    than equal weights there, the gate only where it does better than what came before it.
    No pair reaches a test score. Returns the temperatures and the validation pairs'
    accuracy by voice alone, face alone, and fused with equal weights, calibrated and learnt
    (None without both modalities, or where paired clips trained the gate already)."""
    if not all(len(branches.get(m, {}).get("train", [])) for m in ("audio", "face")) or len(branches.get("video", {}).get("train", [])):
        return None
    rng = np.random.default_rng(seed)
    # each branch split clean and as recorded (its clean self where it has no augmented copy), stacked
    copies = {(m, split): (branches[m][split], as_recorded(branches[m][split], rng) or branches[m][split])
              for m in ("audio", "face") for split in ("train", "val")}
    embeddings = {key: torch.stack([embed_branch(net, b) for b in pair]) for key, pair in copies.items()}
    # the voice probe's logits of each voice (zeros without a probe: `logits` then ignores them)
    probes = {split: torch.stack([probe_logits(net, b) if net.probe is not None else torch.zeros(len(b), 0)
                                  for b in copies["audio", split]]) for split in ("train", "val")}
    both = sorted(set(branches["audio"]["train"].emotion) & set(branches["face"]["train"].emotion))

    of_class = {(m, split, c): np.flatnonzero(branches[m][split].emotion == c)
                for m in ("audio", "face") for split in ("train", "val") for c in both}

    def pairs(split: str, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        labels = rng.choice(both, n)
        rows = {m: [rng.choice(of_class[m, split, c]) for c in labels] for m in ("audio", "face")}
        kind = {m: rng.integers(0, 2, n) for m in ("audio", "face")}  # clean or as recorded
        parts = [embeddings[m, split][kind[m], rows[m]] for m in ("audio", "face")]
        return torch.stack(parts, 1), probes[split][kind["audio"], rows["audio"]], torch.from_numpy(labels)

    def emotion(x: torch.Tensor, mask: torch.Tensor, probe: torch.Tensor) -> torch.Tensor:
        return net.logits(x, mask, probe if net.probe is not None else None)[1]

    if not all(len(of_class[m, "val", c]) for m in ("audio", "face") for c in both):
        return None
    present = torch.ones(GATE_BATCH, 2, dtype=torch.bool)
    val_x, val_p, val_y = pairs("val", 4000)

    def accuracy(present: tuple[bool, bool] = (True, True)) -> float:
        with torch.no_grad():
            mask = torch.tensor([present]).expand(len(val_x), 2)
            return float((emotion(val_x, mask, val_p).argmax(1) == val_y).float().mean())

    alone = {"accuracy_voice": accuracy((True, False)), "accuracy_face": accuracy((False, True))}
    net.temperature.fill_(1.0)  # equal weights first (an --init's temperatures are fitted again): what they must beat
    before = accuracy()
    with torch.no_grad():  # each modality's clean validation rows alone (their fused embedding is the branch's)
        fitted = [fitted_temperature(branch_logits(net, branches[m]["val"], embeddings[m, "val"][0], probes["val"][0])[0],
                                     torch.from_numpy(branches[m]["val"].emotion)) for m in ("audio", "face")]
    net.temperature.copy_(torch.tensor(fitted))
    calibrated = accuracy()
    keep = calibration_kept(calibrated, before, len(val_x))
    if not keep:
        net.temperature.fill_(1.0)
    log.info("fusion on label-matched validation pairs: temperatures voice %.2f, face %.2f (%s)", *fitted,
             "kept" if keep else "not kept: clearly worse than equal weights")
    best = calibrated if keep else before
    kept = {k: v.clone() for k, v in net.gate.state_dict().items()}
    net.gate.requires_grad_(True)
    opt = torch.optim.Adam(net.gate.parameters(), lr=1e-2)
    for step in range(GATE_STEPS):
        x, p, y = pairs("train", GATE_BATCH)
        loss = F.cross_entropy(emotion(x, present, p), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % 50 == 0 and (now := accuracy()) > best:
            best, kept = now, {k: v.clone() for k, v in net.gate.state_dict().items()}
    net.gate.load_state_dict(kept)
    net.gate.requires_grad_(False)
    log.info("fusion gate on label-matched validation pairs: voice %.3f, face %.3f, fused %.3f with equal weights, "
             "%.3f calibrated, %.3f learnt", alone["accuracy_voice"], alone["accuracy_face"], before, calibrated, best)
    return {"val_pairs": len(val_x), **alone, "accuracy_equal_weights": before,
            "temperature": dict(zip(("voice", "face"), net.temperature.tolist())),
            "temperature_fitted": dict(zip(("voice", "face"), fitted)),
            "accuracy_calibrated": calibrated, "accuracy_learnt": best}


def as_recorded(branch: Branch, rng: np.random.Generator) -> Branch | None:
    """The split as real recordings carry it: each face as a video shows it (`augment.face_as_video`),
    each voice its first augmented copy (None for voices without one)."""
    out = copy.copy(branch)
    if branch.modality == "face":
        out.feats = np.stack([face_as_video(crop, rng) for crop in branch.feats]) if len(branch) else branch.feats
        return out
    if branch.modality != "audio" or not branch.variants:
        return None
    out.feats, out.variants = branch.variants[0], []
    out.stats = None if branch.stats is None else [branch.stats[1]]
    return out


def calibration_kept(calibrated: float, equal: float, n: int) -> bool:
    """Whether the fitted temperatures stay: unless equal weights fuse the `n` validation
    pairs better by more than one standard error of that accuracy. The temperatures are
    fitted to the branches' own validation people (least cross-entropy), the better-founded
    weighting; a difference within the noise of a few thousand pairs (about 0.6 points at
    4,000) must not decide, or a rebuild of the same model flips between the two."""
    return calibrated >= equal - float(np.sqrt(equal * (1 - equal) / max(n, 1)))


# ---------------------------------------------------------------- the run

def learning_rate(step: int, total: int, peak: float, warmup: float = 0.1) -> float:
    """Linear warm-up, then cosine decay to 1% of the peak.

    A pure function of the step, so a run resumed with more epochs stretches the
    same curve instead of restoring a scheduler that expects fewer steps.
    """
    rise = max(1, int(total * warmup))
    if step < rise:
        return peak * (step + 1) / rise
    progress = min(1.0, (step - rise) / max(1, total - rise))
    return peak * (0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * progress)))


def _brief(report: dict) -> dict:
    """A report's headline figures, as a model card keeps them."""
    return {k: report[k] for k in ("n", "accuracy", "macro_f1", "weighted_f1", "uar", "majority_accuracy", "collapsed")}


def _initial_net(cfg: ModelConfig, s: TrainSettings, active: list[str], held_out: dict[str, list[str]]
                 ) -> tuple[AvemoNet, dict]:
    """A new network and the training card of `s.init` ({} without one); with `s.init`, that
    model's weights, where the branches without data in this run (and the shared heads) are
    frozen, so that a voice branch trained alone learns to speak the heads' language the face branch already speaks. With `s.warm` the
    branches trained here start from its weights too (more epochs on a run's result), which
    is allowed only where it held out the same people as this run (`held_out`). The whisper
    front-end's encoder comes pretrained, frozen, and is fed cached states. The card is read
    with the weights, so that it describes them even if the folder changes during the run."""
    net = AvemoNet(cfg)
    meta: dict = {}
    if cfg.audio_front == "whisper":
        front = pretrained_front(cfg.voiceprint, cfg.whisper_layers, cfg.whisper_stack)
        net.audio.whisper.load_state_dict(front.whisper.state_dict())
        if cfg.voiceprint:
            net.audio.voiceprint.load_state_dict(front.voiceprint.state_dict())
        net.audio.takes_states = True
    if s.init:
        # a voice trained here gets its probe fitted afresh after training (`fit_voice_probe`)
        trained = {"audio": ("audio", "probe"), "face": ("face",), "video": ("audio", "face", "gate", "probe")}
        open_parts = {part for m in active for part in trained[m]}
        if "video" in active or {"audio", "face"} <= set(active):
            open_parts |= {"norm", "emotion_head", "sentiment_head", "gate"}
        if s.epochs == 0:  # the whole network as it is; only the stages after training run
            open_parts = set()
        start, meta = load_net(s.init)
        mine = net.state_dict()
        if s.warm:
            theirs = meta.get("training", {}).get("held_out", {})
            differ = [m for m in active if theirs.get(m) != held_out[m]]
            if differ:
                raise AvemoError(f"--warm: {s.init} held out other {differ[0]} test people than this run; "
                                 "its weights have seen this run's test set")
        # otherwise only what stays frozen is taken: a branch trained here starts fresh, so that
        # nothing it learnt there (from speakers this run may hold out) carries over
        kept = {k: v for k, v in start.state_dict().items() if s.warm or k.split(".")[0] not in open_parts}
        wrong = [k for k, v in kept.items() if k not in mine or v.shape != mine[k].shape]
        if wrong:
            raise AvemoError(f"--init {s.init}: its frozen parts do not fit this architecture (first: {wrong[0]})")
        net.load_state_dict(kept, strict=False)
        for name, module in net.named_children():
            if name not in open_parts or name == "probe":  # the probe is fitted, never trained by gradient
                module.requires_grad_(False)
        log.info("starting from %s; trained: %s", s.init, ", ".join(sorted(open_parts)) or "nothing (--epochs 0)")
        for k, branch in enumerate(("audio", "face")):  # a branch trained here trains on the heads' own logits,
            if branch in open_parts:  # and is calibrated again after (a frozen one keeps its temperature)
                net.temperature[k] = 1.0
    return net, meta.get("training", {})


def _run_key(cfg: ModelConfig, s: TrainSettings, branches: dict[str, dict[str, Branch]]) -> str:
    """What a checkpoint must share with the run that resumes it: architecture, settings
    (but epochs and patience, which a resume may raise) and the files of every split.
    Why: resuming another run's weights after its held-out speakers changed would
    silently train on the test speakers."""
    settings = {k: v for k, v in asdict(s).items() if k not in ("epochs", "patience")}
    files = {f"{m}/{split}": sorted(str(i.path) for i in b.items) for m, splits in branches.items() for split, b in splits.items()}
    return hashlib.sha1(json.dumps([asdict(cfg), settings, files], sort_keys=True).encode()).hexdigest()


@torch.no_grad()
def embed_branch(net: AvemoNet, branch: Branch, max_frames: int = SCORE_FRAMES) -> torch.Tensor:
    """Fused embeddings (n, embed_dim) of a whole branch split, in item order."""
    net.eval()
    device = next(net.parameters()).device
    out = torch.zeros(len(branch), net.cfg.embed_dim)
    order = np.argsort([len(f) for f in branch.feats]) if branch.modality == "audio" else np.arange(len(branch))
    size = {"audio": 64, "face": 512, "video": 32}[branch.modality]
    for start in range(0, len(order), size):
        idx = order[start:start + size]
        out[idx] = net.embed(**{k: v.to(device) for k, v in branch.inputs(idx, max_frames, None).items()}).cpu()
    return out


@torch.no_grad()
def branch_logits(net: AvemoNet, branch: Branch, embedded: torch.Tensor | None = None,
                  probe: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Emotion and sentiment logits over a whole branch split (its `embedded` embeddings and the
    probe's logits, if computed already), as a segment with that modality alone gets them: a voice
    with the probe's logits mixed in where the model has one (uncalibrated: temperatures 1 in `logits`' place)."""
    device = next(net.parameters()).device
    embedded = (embed_branch(net, branch) if embedded is None else embedded).to(device)
    if branch.modality != "audio" or net.probe is None:
        return net.heads(embedded)
    mixed = net.logits(torch.stack([embedded, torch.zeros_like(embedded)], 1),
                       torch.tensor([[True, False]], device=device).expand(len(embedded), 2),
                       (probe_logits(net, branch) if probe is None else probe).to(device))
    scale = net.temperature[0]  # `logits` divides by the voice's temperature: undone, as `heads` gives them
    return mixed[1] * scale, mixed[2] * scale


def predict_branch(net: AvemoNet, branch: Branch) -> tuple[np.ndarray, np.ndarray]:
    """Emotion and sentiment predictions over a whole branch split."""
    emo, sent = branch_logits(net, branch)
    return emo.argmax(1).cpu().numpy(), sent.argmax(1).cpu().numpy()


def branch_reports(net: AvemoNet, branch: Branch, by_corpus: bool = False) -> dict:
    """Emotion and sentiment reports over a branch split; with `by_corpus`, also one emotion
    report per corpus in it (`"corpora"`), since a pooled figure hides the corpus it fails on."""
    emo, sent = predict_branch(net, branch)
    known = branch.sentiment != UNKNOWN
    out = {
        "emotion": classification_report(branch.emotion, emo, list(EMOTIONS)),
        "sentiment": classification_report(branch.sentiment[known], sent[known], list(SENTIMENTS)),
    }
    if by_corpus:
        corpus = np.array([i.corpus for i in branch.items])
        out["corpora"] = {c: classification_report(branch.emotion[corpus == c], emo[corpus == c], list(EMOTIONS))
                          for c in sorted(set(corpus))}
    return out


class _StepLoss(torch.nn.Module):
    """One step's loss over every active branch's batch, as one module call: DistributedDataParallel
    expects one forward per backward, and a step runs the network once per branch."""

    def __init__(self, net: AvemoNet, smoothing: float) -> None:
        super().__init__()
        self.net = net
        self.smoothing = smoothing

    def forward(self, parts: list[tuple[dict, torch.Tensor, torch.Tensor, dict, Mix | None]]) -> torch.Tensor:
        return sum(self._part(*part) for part in parts)

    def _part(self, inputs: dict, emo: torch.Tensor, sent: torch.Tensor, w: dict, mix: Mix | None) -> torch.Tensor:
        logits = self.net(**inputs)
        loss = _loss(logits, emo, sent, w, self.smoothing)
        if mix is None:
            return loss
        # a blend of two faces: each one's label counts in the share of its face
        return mix.share * loss + (1 - mix.share) * _loss(logits, emo[mix.order], sent[mix.order], w, self.smoothing)


def _end_epoch(net: AvemoNet, opt: torch.optim.Optimizer, state: dict, branches: dict[str, dict[str, Branch]],
               active: list[str], loss: float, out_dir: Path, run: str) -> None:
    """Validate, keep the best model, count epochs without progress, write the checkpoint."""
    val = {m: branch_reports(net, branches[m]["val"]) for m in active if len(branches[m]["val"])}
    score = float(np.mean([v["emotion"]["weighted_f1"] for v in val.values()])) if val else -loss
    state["epoch"] += 1
    state["history"].append({"epoch": state["epoch"], "loss": loss, "val_weighted_f1": score})
    log.info("epoch %d loss %.3f val weighted-F1 %.3f", state["epoch"], loss, score)
    for m, v in val.items():
        log.info("  %s", summary_line(f"val {m} emotion", v["emotion"]))
    if score > state["best"]:
        state["best"], state["stale"] = score, 0
        save_model(net, out_dir / "best")
    else:
        state["stale"] += 1
    with written_whole(out_dir / "checkpoint.pt") as tmp:
        torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "state": state, "run": run}, tmp)


def _features(items: list, cfg: ModelConfig, s: TrainSettings, cache_dir: Path, workers: int) -> tuple[dict, dict]:
    """Every file's training input, and each voice's augmented copies (`s.audio_variants`),
    extracted once into the cache. All files at once, in the corpora's order: the cache shards
    then stay the same whichever files a split (a seed, a cross-validation fold) puts where."""
    features, variants = {}, {}
    for modality in BRANCHES:
        chosen = [i for i in items if i.modality == modality]
        if chosen:
            features.update(zip(chosen, cached_features(chosen, modality, cfg, cache_dir, workers)))
        if chosen and modality == "audio":
            for k in range(1, s.audio_variants + 1):
                copies = cached_features(chosen, modality, cfg, cache_dir, workers, variant=k, noise_files=s.noise_files)
                for item, copy in zip(chosen, copies):
                    variants.setdefault(item, []).append(copy)
    return features, variants


def _branches(splits: dict[str, list], features: dict, variants: dict, cfg: ModelConfig,
              s: TrainSettings) -> dict[str, dict[str, Branch]]:
    """{modality: {split: Branch}}: each split's files of each modality with their features,
    less the files that gave nothing to learn from (said in the log, not silently dropped)."""
    branches: dict[str, dict[str, Branch]] = {}
    step = 4 if cfg.audio_front == "whisper" else 1  # the cache holds the encoder's pooled states
    for name, group in splits.items():
        for modality in BRANCHES:
            chosen = [i for i in group if i.modality == modality]
            feats = [features[i] for i in chosen]
            usable = [k for k, f in enumerate(feats) if (len(f[0]) or len(f[1]) if modality == "video" else len(f))]
            if len(usable) < len(chosen):
                why = {"audio": "no speech found", "face": "unreadable or no face found", "video": "neither speech nor a face"}[modality]
                log.warning("%s %s: %d of %d files could not be used (%s); skipped",
                            name, modality, len(chosen) - len(usable), len(chosen), why)
                chosen, feats = [chosen[k] for k in usable], [feats[k] for k in usable]
            copies = [[variants[i][k] for i in chosen] for k in range(s.audio_variants)] if modality == "audio" else None
            branches.setdefault(modality, {})[name] = Branch(modality, chosen, feats, cfg.max_faces, step, copies,
                                                             cfg.voice_norm == "group", s.own_norm_share)
    return branches


def _test_scores(net: AvemoNet, branches: dict[str, dict[str, Branch]], active: list[str], normalised: bool) -> dict:
    """Each trained branch's reports on its held-out test people, overall and per corpus; a
    normalising voice also read each file alone (standardised by itself, as one short clip
    is at inference), since by speaker is the figure a lone clip does not get."""
    def logged(scores: dict, overall: str, per_corpus: str) -> dict:
        log.info("%s", summary_line(overall, scores["emotion"]))
        for corpus, report in scores["corpora"].items():
            log.info("  %s", summary_line(f"{per_corpus}, {corpus}", report))
        return scores

    scores = {m: logged(branch_reports(net, branches[m]["test"], by_corpus=True), f"test {m} emotion", f"test {m} emotion")
              for m in active if len(branches[m]["test"])}
    if normalised and "audio" in active and len(branches["audio"]["test"]):
        test = branches["audio"]["test"]
        by, test.by = test.by, "file"
        try:
            scores["audio_alone"] = logged(branch_reports(net, test, by_corpus=True),
                                           "test audio emotion, each file normalised alone", "test audio emotion alone")
        finally:
            test.by = by
    return scores


def _keep_init_record(training: dict, before: dict, s: TrainSettings, active: list[str]) -> None:
    """What the parts kept from `--init` were trained on, and scored, stays on the new card:
    its sizes, held-out people and test scores for the branches this run did not train, and
    the run that trained them under "init" (a model refitted with --epochs 0 keeps its init's)."""
    for key in ("sizes", "held_out", "test"):
        training[key] = {**{m: v for m, v in before.get(key, {}).items() if m not in active}, **training[key]}
    kept = ("audio", "face") if s.epochs == 0 else [m for m in ("audio", "face") if m not in active]
    if s.epochs == 0 and before.get("settings", {}).get("epochs") == 0 and "init" in before:
        training["init"] = before["init"]  # it trained nothing either: the record of the run that did stays
    else:
        training["init"] = {"from": str(s.init), "data": before.get("data", []), "kept": sorted(kept),
                            "settings": before.get("settings", {}), "history": before.get("history", []),
                            **({"face_bf16": True} if before.get("face_bf16") else {})}


def _join_ranks() -> tuple[int, int, torch.device]:
    """(rank, world size, device). Under torchrun (WORLD_SIZE > 1) this process joins the
    group: NCCL with one GPU per process where there are GPUs, else gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    gpu = torch.cuda.is_available()
    if world == 1:
        return 0, 1, torch.device("cuda" if gpu else "cpu")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if gpu:
        torch.cuda.set_device(local)
    torch.distributed.init_process_group("nccl" if gpu else "gloo")
    return torch.distributed.get_rank(), world, torch.device("cuda", local) if gpu else torch.device("cpu")


def train(data_specs: list[str], out_dir: str | Path, settings: TrainSettings | None = None,
          config: ModelConfig | None = None, cache_dir: str | Path = ".avemo-cache", workers: int = 2) -> dict:
    """Train a model on the given corpora and save it to `out_dir`; returns its held-out scores.

    Under `torchrun --nproc_per_node N` the N processes share each step's batches
    (DistributedDataParallel: gloo on CPU, NCCL on GPUs); rank 0 extracts the features
    first, validates, checkpoints and writes the model, the others train and return {}.
    """
    rank, world, device = _join_ranks()
    if rank:
        log.setLevel(logging.WARNING)
    s = settings or TrainSettings()
    cfg = config or ModelConfig()
    if s.epochs == 0:
        if not s.init:
            raise AvemoError("--epochs 0 trains no branch: it needs --init MODEL, whose stages after training are run again")
        saved = read_config(s.init, "model.safetensors")[0]  # that model as it is, but what `config` changes of
        default = ModelConfig()  # `AFTER_TRAINING` (given unlike the default): a probe added, the crops a segment judges
        cfg = replace(saved, **{k: getattr(config, k) for k in AFTER_TRAINING
                                if config and getattr(config, k) != getattr(default, k)})
    out_dir, cache_dir = Path(out_dir), Path(cache_dir)
    random.seed(s.seed)
    np.random.seed(s.seed)
    torch.manual_seed(s.seed)
    items = [item for spec in data_specs for item in load_spec(spec)]
    splits = split_items(items, s.seed, s.val_speakers, s.test_speakers)
    if rank:
        torch.distributed.barrier()  # rank 0 fills the cache, the others then read it
    features, variants = _features(items, cfg, s, cache_dir, workers)
    if world > 1 and not rank:
        torch.distributed.barrier()
    branches = _branches(splits, features, variants, cfg, s)
    active = [m for m in BRANCHES if len(branches[m]["train"])]
    if not active:
        raise AvemoError("no training files: every corpus given is empty in its train split")
    for m in active:
        log.info("%s: %s", m, {k: len(v) for k, v in branches[m].items()})

    held_out = {m: sorted({held_out_name(i) for i in branches[m]["test"].items}) for m in active}
    net, before = _initial_net(cfg, s, active, held_out)  # `before`: the init's card, read with its weights
    net = net.to(device)
    face_bf16 = s.epochs > 0 and bool({"face", "video"} & set(active)) and net.face.train_in_bf16(device)
    if face_bf16:
        log.info("face CNN trained in bfloat16 (this CPU computes it natively)")
    trainable = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=s.lr, weight_decay=s.weight_decay) if trainable else None
    batch = {"audio": s.audio_batch, "face": s.face_batch, "video": s.video_batch}
    steps_per_epoch = max(max(1, len(branches[m]["train"]) // batch[m]) for m in active)
    total_steps = s.epochs * steps_per_epoch
    # speech is drawn balanced over classes and corpora (`balanced_draw`): its loss needs no class weights
    weights = {
        m: {"emotion": (torch.ones(len(EMOTIONS)) if m == "audio" and s.balance_speech else
                        torch.from_numpy(balanced_weights(branches[m]["train"].emotion, len(EMOTIONS)))).to(device),
            "sentiment": torch.from_numpy(balanced_weights(branches[m]["train"].sentiment, len(SENTIMENTS))).to(device)}
        for m in active
    }
    state = {"epoch": 0, "best": -1.0, "stale": 0, "history": []}
    run = _run_key(cfg, s, branches)
    ckpt = out_dir / "checkpoint.pt"
    if ckpt.exists() and opt is not None:
        saved = torch.load(ckpt, weights_only=False, map_location=device)
        if saved.get("run") != run:
            raise AvemoError(f"{out_dir} holds a checkpoint of another run (other data, split, architecture or "
                             "settings): give a new --out, or delete its checkpoint.pt to start over")
        net.load_state_dict(saved["net"])
        opt.load_state_dict(saved["opt"])
        state = saved["state"]
        log.info("resuming from %s after epoch %d", ckpt, state["epoch"])
    step_loss = _StepLoss(net, s.label_smoothing)
    if world > 1:
        step_loss = torch.nn.parallel.DistributedDataParallel(step_loss, device_ids=[device] if device.type == "cuda" else None)
    rng = np.random.default_rng(s.seed + state["epoch"])  # the same on every rank: the same batches

    while state["epoch"] < s.epochs and state["stale"] < s.patience:
        net.train()
        # one process augments with the batch generator (as the shipped model was trained);
        # under torchrun each rank augments its share of the batch with its own generator
        augment = rng if world == 1 else np.random.default_rng([s.seed, state["epoch"], rank])
        orders = {m: draw(m, branches[m]["train"].items, steps_per_epoch * batch[m], s.balance_speech, rng) for m in active}
        total = 0.0
        for step in range(steps_per_epoch):
            parts = []
            for m in active:
                b = branches[m]["train"]
                size = batch[m]
                idx = np.take(orders[m], range(step * size, (step + 1) * size), mode="wrap")[rank::world]
                inputs = {k: v.to(device) for k, v in b.inputs(idx, s.max_frames, augment).items()}
                mix = None
                if m == "face" and s.face_mixup > 0:
                    inputs, mix = mixed_faces(inputs, s.face_mixup, augment)
                parts.append((inputs, torch.from_numpy(b.emotion[idx]).to(device),
                              torch.from_numpy(b.sentiment[idx]).to(device), weights[m], mix))
            for group in opt.param_groups:
                group["lr"] = learning_rate(state["epoch"] * steps_per_epoch + step, total_steps, s.lr)
            opt.zero_grad()
            loss = step_loss(parts)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            opt.step()
            total += loss.item()
        if rank == 0:
            _end_epoch(net, opt, state, branches, active, total / steps_per_epoch, out_dir, run)
        if world > 1:  # rank 0's verdict (validation, early stopping) holds for all
            shared = [state]
            torch.distributed.broadcast_object_list(shared, src=0)
            state = shared[0]
    if world > 1:
        torch.distributed.destroy_process_group()
        if rank:
            return {}

    if s.epochs:
        net, _ = load_net(out_dir / "best")
        net.audio.takes_states = cfg.audio_front == "whisper"
    probe = None
    if net.probe is not None and "audio" in active:  # fitted again by every run that has voices
        probe = fit_voice_probe(net, branches["audio"], s.own_norm_share, embed_branch)
    scores = _test_scores(net, branches, active, cfg.voice_norm == "group")
    gate = train_fusion_gate(net, branches, s.seed)  # the test scores above are the branches' own: it changes none
    context = train_context_stage(net, branches, s.seed)
    if context:
        scores["context"] = context
    training = {
        "data": data_specs,
        "context_stage": bool(context),
        "fusion_gate": (gate or "equal weights") if "video" not in active else "trained on paired clips",
        **({"voice_probe": probe} if probe else {}),
        "sizes": {m: {k: len(v) for k, v in branches[m].items()} for m in active},
        **({"face_bf16": True} if face_bf16 else {}),
        "held_out": held_out,
        "settings": asdict(s),
        "history": state["history"],
        "test": {m: {task: _brief(r) if task != "corpora" else {c: _brief(x) for c, x in r.items()}
                     for task, r in rep.items()} for m, rep in scores.items()},
    }
    if s.init:
        _keep_init_record(training, before, s, active)
    save_model(net, out_dir, training)
    return scores
