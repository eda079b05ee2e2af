"""The avemo network: a voice branch, a face branch, a fusion and two heads.

    log-Mel (B, T, 64) ──conv×2 (÷4 in time)──BiGRU×2──masked attention pool──┐
      (or Whisper's states) └─ optional probe: mean, spread ── linear ─ logits ─┼─ (mixed into the voice's logits)
                                                                              ├─ fusion ─ emotion (7)
    face crops (B, N, 48, 48) ──CNN per crop──masked mean over N──────────────┘        └ sentiment (3)

    optional context stage: the fused embeddings of a dialogue's (or video's) segments,
    in order ──masked BiGRU── emotion and sentiment of each segment in context

Both branches map into one shared embedding space read by one pair of heads, so a
branch trained alone (speech corpora, face corpora) already speaks the heads'
language, and fusion is a gated, masked mean of whichever embeddings are present:
a missing modality simply drops out of the mean. On paired audio-visual data the
gates learn how much to trust each modality. Without such data each modality has a
temperature, fitted on validation people after training (`train.train_fusion_gate`):
the logits are the mean of each present modality's logits over its temperature, so
a branch that is overconfident on people it never saw speaks more softly, alone (its
probabilities calibrated) and beside the other (it counts for less in the mean).

A model on disk is `model.safetensors` plus `config.json` (`config.ModelConfig`,
feature settings, label sets, and what it was trained on and scored).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..audio import PRINT_MELS, PRINT_WIDTH
from ..config import ModelConfig, card, read_config
from ..errors import AvemoError
from ..files import written_whole
from ..voiceprint import with_voiceprints
from .whisper import N_MELS, WhisperEncoder


@torch.no_grad()
def pooled_states(whisper: WhisperEncoder, mel: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Whisper log-Mel (B, T, 80; bands past the 80th are the voiceprint's, not read here) to the
    encoder's states averaged in pairs (B, T/4, 384), and their lengths."""
    states = whisper(mel[:, :, :N_MELS].transpose(1, 2), lengths)
    steps = whisper.state_lengths(lengths)
    pooled = nn.functional.avg_pool1d(states.transpose(1, 2), 2, ceil_mode=True).transpose(1, 2)
    return pooled, ((steps + 1) // 2).clamp(min=1)


class VoiceprintLSTM(nn.Module):
    """Resemblyzer's GE2E speaker encoder (`voiceprint.py`): windows of 40-band Mel power
    (N, 160, 40) to L2-normed embeddings (N, 256)."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(PRINT_MELS, PRINT_WIDTH, 3, batch_first=True)
        self.linear = nn.Linear(PRINT_WIDTH, PRINT_WIDTH)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(windows)
        embeds = torch.relu(self.linear(hidden[-1]))
        return embeds / embeds.norm(dim=1, keepdim=True).clamp(min=1e-12)


@torch.no_grad()
def encoder_states(audio: AudioEncoder, mel: torch.Tensor, lengths: torch.Tensor,
                   prints: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """What the whisper front-end's recurrent branch reads (`AudioEncoder.takes_states`): the
    pooled encoder states, and where the model has one each row's voiceprint beside them
    (`prints`: those already known, as `voiceprint.with_voiceprints` takes them)."""
    states, steps = pooled_states(audio.whisper, mel, lengths)
    if audio.voiceprint is None:
        return states, steps

    def embed(w: np.ndarray) -> np.ndarray:
        return audio.voiceprint(torch.from_numpy(w).to(mel.device)).float().cpu().numpy()

    both = with_voiceprints(states.float().cpu().numpy(), steps.cpu().numpy(), mel.float().cpu().numpy(),
                            lengths.cpu().numpy(), embed, prints)
    return torch.from_numpy(both).to(mel.device), steps


class AudioEncoder(nn.Module):
    """Speech to one embedding: a front-end, a BiRNN over its frames, attention pooling.

    The front-end is either strided convolutions over 64-band log-Mel frames (÷4 in time:
    25 states a second), or Whisper tiny.en's frozen encoder over its own 80-band log-Mel,
    its states averaged in pairs (also 25 a second) and projected, with the utterance's
    voiceprint (Resemblyzer's frozen speaker encoder, `voiceprint.py`) beside each state where
    `cfg.voiceprint`. Training the whisper front-end reads encoder states computed once and
    cached (`takes_states`, `encoder_states`): the encoders never change, and running them
    every epoch would cost more than the rest of training.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        width, ch = cfg.voice_input_width, cfg.audio_channels
        self.whisper = WhisperEncoder(cfg.whisper_layers, cfg.whisper_stack).requires_grad_(False) if cfg.audio_front == "whisper" else None
        self.voiceprint = VoiceprintLSTM().requires_grad_(False) if cfg.voiceprint else None
        self.takes_states = False  # True while training on cached encoder states (see `states`)
        if self.whisper is not None:
            self.front = nn.Sequential(nn.Linear(width, ch), nn.GELU())
        else:
            self.front = nn.Sequential(
                nn.Conv1d(width, ch, 5, stride=2, padding=2),
                nn.BatchNorm1d(ch),
                nn.GELU(),
                nn.Conv1d(ch, ch, 5, stride=2, padding=2),
                nn.BatchNorm1d(ch),
                nn.GELU(),
            )
        rnn = nn.GRU if cfg.rnn == "gru" else nn.LSTM
        self.rnn = rnn(ch, cfg.audio_hidden, num_layers=cfg.audio_layers, batch_first=True,
                       bidirectional=True, dropout=cfg.dropout)
        self.attn = nn.Linear(2 * cfg.audio_hidden, 1)
        self.proj = nn.Linear(4 * cfg.audio_hidden, cfg.embed_dim)

    def forward(self, mel: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.whisper is None:
            x = self.front(mel.transpose(1, 2)).transpose(1, 2)  # (B, T/4, ch)
            steps = ((lengths + 3) // 4).clamp(min=1, max=x.shape[1])
        else:
            if not self.takes_states:
                mel, lengths = encoder_states(self, mel, lengths)
            x = self.front(mel)
            steps = lengths.clamp(min=1, max=x.shape[1])
        packed = nn.utils.rnn.pack_padded_sequence(x, steps.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        mask = torch.arange(x.shape[1], device=x.device)[None, :] < steps[:, None]
        scores = self.attn(out).squeeze(-1).masked_fill(~mask, float("-inf"))
        attended = (scores.softmax(1).unsqueeze(-1) * out).sum(1)
        peak = out.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1)
        return self.proj(torch.cat([attended, peak], dim=1))


class VoiceProbe(nn.Module):
    """A second judge of the voice, beside the recurrent branch: the mean and the spread over
    time of each of the branch's input dimensions (Whisper's states, the voiceprint, and both
    standardised by the speaker where the model normalises), standardised, one linear map to
    emotion and sentiment logits (fitted after training, `probe.py`: an L2-regularised,
    class-balanced logistic regression). The voice's logits are the branch's and the probe's
    mixed by `share`: the probe's share of the emotion logits, then of the sentiment logits,
    each chosen on the validation speakers by its own head's recall.

    Why: the recurrent branch fits its training speakers almost perfectly (97%) and a linear
    read of the same states, made another way, errs elsewhere: a linear probe of these
    features is what `../shared/notes/pretrained-probes.md` found to carry across corpora,
    and the two together beat either on the validation speakers.
    """

    def __init__(self, width: int, n_outputs: int) -> None:
        super().__init__()
        self.register_buffer("shift", torch.zeros(2 * width))
        self.register_buffer("scale", torch.ones(2 * width))
        self.register_buffer("share", torch.zeros(2))
        self.linear = nn.Linear(2 * width, n_outputs)

    @staticmethod
    def pooled(states: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """(B, T, W) frames, (B,) lengths to their mean and standard deviation over time (B, 2W)."""
        mask = (torch.arange(states.shape[1], device=states.device)[None, :] < steps[:, None]).unsqueeze(-1).float()
        count = mask.sum(1).clamp(min=1.0)
        mean = (states * mask).sum(1) / count
        spread = ((states - mean.unsqueeze(1)).square() * mask).sum(1) / count
        return torch.cat([mean, spread.sqrt()], 1)

    def read(self, pooled: torch.Tensor) -> torch.Tensor:
        """`pooled` statistics (B, 2W) to (B, E + S): emotion then sentiment logits."""
        return self.linear((pooled - self.shift) / self.scale)

    def forward(self, states: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        return self.read(self.pooled(states, steps))


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class FaceEncoder(nn.Module):
    """48×48 grey face crops to one embedding: a VGG-style CNN per crop, mean over the crops."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        widths = [1] + [cfg.face_channels * 2**k for k in range(cfg.face_blocks)]
        self.cnn = nn.Sequential(*(_conv_block(cin, cout) for cin, cout in zip(widths, widths[1:])))
        self.proj = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(widths[-1], cfg.embed_dim))
        self.mirror = cfg.face_mirror  # see embed_crops
        self.fast = False  # see for_inference
        self.bf16 = False  # see train_in_bf16

    def embed_crops(self, crops: torch.Tensor) -> torch.Tensor:
        """(n, 48, 48) uint8 or float crops to (n, embed_dim). Where the model mirrors faces,
        outside training each crop's embedding is the mean of its own and its mirror image's:
        the CNN learnt from flipped photos, so the two are equally good readings of one face,
        and their mean errs less (FER2013 PublicTest: +1 point, for twice the CNN's work)."""
        x = crops.float().unsqueeze(1) / 127.5 - 1.0
        mirrored = self.mirror and not self.training
        if mirrored:
            x = torch.cat([x, x.flip(-1)])
        if self.fast or self.bf16:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.bf16 and self.training):
            pooled = self.cnn(x).mean((2, 3)).float()
        if mirrored:
            pooled = pooled.reshape(2, -1, pooled.shape[-1]).mean(0)  # (own, mirror) pairs; shape-free for ONNX
        return self.proj(pooled)

    def train_in_bf16(self, device: torch.device) -> bool:
        """Training's convolutions in bfloat16, channels-last, where the CPU computes bfloat16
        natively (AVX-512 BF16, AMX): 2.4x faster steps on this project's 2-core machine, so
        that a face CNN trains for many epochs in CPU hours. Weights, BatchNorm statistics and
        the loss stay float32, and inference runs float32. Where bfloat16 is emulated it would
        be slower, so there (and on a GPU) nothing changes. Returns whether it is on."""
        self.bf16 = (device.type == "cpu" and torch.backends.mkldnn.is_available()
                     and torch.ops.mkldnn._is_mkldnn_bf16_supported())
        return self.bf16

    def forward(self, crops: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The mean embedding of each row's crops where `mask` is set."""
        if self.training:  # every slot, as the model was trained: BatchNorm's batch statistics include the padding
            b, n = crops.shape[:2]
            emb = self.embed_crops(crops.reshape(b * n, *crops.shape[2:])).reshape(b, n, -1)
        else:  # only the crops that are there go through the CNN
            emb = torch.zeros(*mask.shape, self.proj[-1].out_features, device=crops.device)
            if mask.any():
                emb[mask] = self.embed_crops(crops[mask])
        weights = mask.float().unsqueeze(-1)
        return (emb * weights).sum(1) / weights.sum(1).clamp(min=1.0)

    def for_inference(self) -> FaceEncoder:
        """Each BatchNorm folded into the convolution before it, and the convolutions in
        channels-last layout: a third less time on CPU, the same embeddings (to 1e-5).
        Inference only: training needs the BatchNorms, and safetensors saves contiguous
        tensors alone."""
        for block in self.cnn:
            for i in range(0, len(block) - 1):
                if isinstance(block[i], nn.Conv2d) and isinstance(block[i + 1], nn.BatchNorm2d):
                    block[i] = fuse_conv_bn_eval(block[i].eval(), block[i + 1].eval())
                    block[i + 1] = nn.Identity()
        self.cnn.to(memory_format=torch.channels_last)
        self.fast = True
        return self


class AvemoNet(nn.Module):
    """Voice + face emotion and sentiment; either modality may be absent per sample."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.audio = AudioEncoder(cfg)
        self.face = FaceEncoder(cfg)
        self.gate = nn.Linear(cfg.embed_dim, 1)  # how much each modality's embedding counts
        # zero: modalities count equally until paired clips train the gate (single-modality
        # batches give it no gradient, so a random start would stay an arbitrary preference)
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)
        # voice, face; 1 (logits as the heads give them) until fitted after training
        self.register_buffer("temperature", torch.ones(2))
        self.norm = nn.LayerNorm(cfg.embed_dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.emotion_head = nn.Linear(cfg.embed_dim, len(cfg.emotions))
        self.sentiment_head = nn.Linear(cfg.embed_dim, len(cfg.sentiments))
        self.context = ContextNet(cfg.embed_dim, cfg.context_hidden, cfg.rnn, len(cfg.emotions), len(cfg.sentiments),
                                  cfg.dropout) if cfg.context_hidden else None
        self.probe = VoiceProbe(cfg.voice_input_width, len(cfg.emotions) + len(cfg.sentiments)) if cfg.voice_probe else None

    def _weights(self, embeddings: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """(B, 2): each present modality's share of the fused mean, by its gate and one over its temperature."""
        scores = self.gate(embeddings).squeeze(-1) - self.temperature.log()
        return torch.nan_to_num(scores.masked_fill(~present, float("-inf")).softmax(1))  # nothing present: zero

    def fuse(self, embeddings: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Gated mean over the modalities: embeddings (B, 2, D) and present (B, 2) bool,
        voice then face. Each counts in proportion to its gate and one over its temperature."""
        return (self._weights(embeddings, present).unsqueeze(-1) * embeddings).sum(1)

    def calibration(self, present: torch.Tensor) -> torch.Tensor:
        """(B, 1): what a row's logits are multiplied by, the mean of one over the present
        modalities' temperatures. With `fuse`'s weights this makes the logits the mean of each
        modality's logits over its temperature (the heads are linear). 1 at temperatures 1."""
        inverse = present.float() / self.temperature
        return inverse.sum(1, keepdim=True) / present.sum(1, keepdim=True).clamp(min=1)

    def embed(self, **inputs: torch.Tensor) -> torch.Tensor:
        """The fused embedding (B, embed_dim) (see `branches` for the inputs)."""
        return self.fuse(*self.branches(**inputs))

    def branches(
        self,
        mel: torch.Tensor | None = None,
        mel_lengths: torch.Tensor | None = None,
        crops: torch.Tensor | None = None,
        crop_mask: torch.Tensor | None = None,
        has_audio: torch.Tensor | None = None,
        has_face: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The branches' normalised embeddings (B, 2, embed_dim), voice then face, and which
        rows have each (B, 2). Give mel and/or crops; has_* mark which rows have them."""
        given = mel if mel is not None else crops
        batch, device = given.shape[0], given.device
        absent = torch.zeros(batch, self.cfg.embed_dim, device=device)  # counts for nothing: not present
        voice = self.norm(self.audio(mel, mel_lengths)) if mel is not None else absent
        face = self.norm(self.face(crops, crop_mask)) if crops is not None else absent
        if has_audio is None or mel is None:
            has_audio = torch.full((batch,), mel is not None, device=device)
        if has_face is None or crops is None:
            has_face = crop_mask.any(1) if crops is not None else torch.zeros(batch, dtype=torch.bool, device=device)
        return torch.stack([voice, face], 1), torch.stack([has_audio, has_face], 1)

    def voice_out(self, states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """What the voice graph gives (`runtime.Runtime.voice`): the voice branch's embedding
        (B, embed_dim), and where the model has a probe its logits beside it (B, embed_dim + E + S)."""
        embedding = self.audio(states, lengths)
        if self.probe is None:
            return embedding
        return torch.cat([embedding, self.probe(states, lengths.clamp(min=1, max=states.shape[1]))], 1)

    def decide(self, voice: torch.Tensor, face: torch.Tensor, present: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Inference from the branches' outputs, voice (B, `voice_out` width) and face
        (B, embed_dim) (a row's absent one anything, zeros): present (B, 2) marks voice and
        face; the fused embedding and the emotion and sentiment logits. What `embed` + `heads`
        do, cut where the runtimes (`runtime.py`) cut the network: branches, then this."""
        d = self.cfg.embed_dim
        probe = voice[:, d:] if self.probe is not None else None
        return self.logits(torch.stack([self.norm(voice[:, :d]), self.norm(face)], 1), present, probe)

    def logits(self, embeddings: torch.Tensor, present: torch.Tensor, probe: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The normalised embeddings (B, 2, D) and present (B, 2) to the fused embedding and the
        emotion and sentiment logits; with the probe's logits (B, E + S) of the voice rows, the
        voice's own logits are its head's and the probe's mixed by the probe's share (the heads
        are linear: the fused logits are the mean of the modalities', each weighted as `fuse` does)."""
        weights = self._weights(embeddings, present)
        fused = (weights.unsqueeze(-1) * embeddings).sum(1)
        emotion, sentiment = self.heads(fused, present)
        if probe is None or self.probe is None:
            return fused, emotion, sentiment
        voice = torch.cat(self.heads(embeddings[:, 0]), 1)
        shift = (probe - voice) * self.calibration(present) * weights[:, :1]
        e = emotion.shape[1]
        return fused, emotion + self.probe.share[0] * shift[:, :e], sentiment + self.probe.share[1] * shift[:, e:]

    def heads(self, fused: torch.Tensor, present: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Emotion and sentiment logits of fused embeddings; calibrated (`calibration`) where
        `present` says which modalities each row has."""
        fused = self.drop(fused)
        scale = 1.0 if present is None else self.calibration(present)
        return self.emotion_head(fused) * scale, self.sentiment_head(fused) * scale

    def forward(self, **inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Emotion and sentiment logits of each segment on its own (see `branches` for the inputs)."""
        embeddings, present = self.branches(**inputs)
        return self.heads(self.fuse(embeddings, present), present)


class ContextNet(nn.Module):
    """The conversation context stage (MELD's bcLSTM): a masked bidirectional GRU or LSTM
    over the sequence of utterance vectors of one dialogue (or the segments of one video),
    classifying every utterance in the light of its neighbours.

    Its heads read the utterance's own vector beside the context, so it starts from what
    the utterance alone says and learns what the neighbours add. Inputs are standardised
    with the training set's statistics, kept as buffers so they travel with the weights.
    """

    def __init__(self, input_dim: int, hidden: int, rnn: str, n_emotions: int, n_sentiments: int,
                 dropout: float = 0.3, layers: int = 1) -> None:
        super().__init__()
        cell = nn.GRU if rnn == "gru" else nn.LSTM
        self.rnn = cell(input_dim, hidden, num_layers=layers, batch_first=True, bidirectional=True,
                        dropout=dropout if layers > 1 else 0.0)
        self.mix = nn.Sequential(nn.Dropout(dropout), nn.Linear(input_dim + 2 * hidden, hidden), nn.ReLU())
        self.emotion_head = nn.Linear(hidden, n_emotions)
        self.sentiment_head = nn.Linear(hidden, n_sentiments)
        self.register_buffer("shift", torch.zeros(input_dim))
        self.register_buffer("scale", torch.ones(input_dim))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, input_dim), lengths (B,) -> emotion (B, T, E) and sentiment (B, T, S) logits."""
        x = (x - self.shift) / self.scale
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu().clamp(min=1), batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        h = self.mix(torch.cat([x, out], -1))
        return self.emotion_head(h), self.sentiment_head(h)


_FROZEN_HALF = ("audio.whisper.", "audio.voiceprint.")


def save_model(net: AvemoNet, directory: str | Path, training: dict | None = None) -> None:
    """Write weights (safetensors) and config (JSON) side by side, each atomically."""
    directory = Path(directory)
    # the frozen Whisper encoder is kept in half precision: half the size, the same answers to 1e-3
    state = {k: (v.half() if k.startswith(_FROZEN_HALF) else v).detach().cpu().contiguous() for k, v in net.state_dict().items()}
    with written_whole(directory / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    with written_whole(directory / "config.json") as tmp:
        tmp.write_text(json.dumps(card(net.cfg, training), indent=2) + "\n")


def load_net(directory: str | Path) -> tuple[AvemoNet, dict]:
    """Rebuild a saved network, checking that config and weights describe the same model."""
    directory = Path(directory)
    weights_path = directory / "model.safetensors"
    cfg, meta = read_config(directory, weights_path.name)
    try:
        net = AvemoNet(cfg)
        state = load_file(str(weights_path))
    except (RuntimeError, TypeError, ValueError, OSError, SafetensorError) as exc:  # impossible sizes, damaged weights
        raise AvemoError(f"{directory}: model does not load ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    expected = net.state_dict()
    state.setdefault("temperature", expected["temperature"])  # a model from before temperatures: 1, as it was
    wrong = [k for k in expected if k not in state or state[k].shape != expected[k].shape]
    extra = sorted(set(state) - set(expected))
    if wrong or extra:
        raise AvemoError(f"{directory}: weights do not match config.json (first mismatch: {(wrong or extra)[0]})")
    net.load_state_dict(state)
    net.eval()
    return net, meta
