"""A model's description: architecture, label sets, feature settings, and what it was
trained on and scored (its card), read from `config.json` and checked.

Why its own module, free of torch: a model runs on ONNX Runtime (`runtime.py`) or on
torch (`model.py`), and both read and check the same description before any weights.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .audio import PRINT_MELS, PRINT_WIDTH, WHISPER_MELS, WHISPER_WIDTH, MelSettings
from .errors import AvemoError
from .labels import EMOTIONS, SENTIMENTS
from .normalise import VOICE_NORMS

FORMAT_VERSION = 1


@dataclass
class ModelConfig:
    """Architecture, labels and feature settings: everything needed to rebuild the network."""

    emotions: list[str] = field(default_factory=lambda: list(EMOTIONS))
    sentiments: list[str] = field(default_factory=lambda: list(SENTIMENTS))
    mel: dict = field(default_factory=lambda: MelSettings().to_dict())
    rnn: str = "gru"  # "gru" or "lstm"
    audio_front: str = "logmel"  # "logmel" (64-band log-Mel, strided convs) or "whisper" (Whisper tiny.en's frozen encoder)
    audio_channels: int = 96
    audio_hidden: int = 96
    audio_layers: int = 2
    face_channels: int = 24  # width of the first CNN stage; doubled at each stage after
    face_blocks: int = 3  # CNN stages, two convolutions and a 2x pooling each: 3 end at 6x6, 4 at 3x3
    crop_size: int = 48
    embed_dim: int = 128
    dropout: float = 0.3
    frame_rate: float = 5.0  # frames per second sampled for faces at inference
    face_mirror: bool = False  # at inference each crop is judged with its mirror image too, their embeddings averaged
    max_faces: int = 8  # face crops per segment given to the model (16 judged the same, at a tenth more wall time: docs/speed.md)
    context_hidden: int = 0  # > 0: a context stage over a file's segments (trained on dialogues)
    voice_norm: str = "none"  # "group": voice frames read as they are and standardised per speaker or file (`normalise.py`)
    voiceprint: bool = False  # the whisper front-end's states with each utterance's voiceprint beside them (`voiceprint.py`)
    voice_probe: bool = False  # a linear probe of the voice's pooled inputs beside the recurrent branch (`model.VoiceProbe`)
    whisper_layers: int = 4  # the whisper front-end's states: after this many of its 4 blocks (`whisper.WhisperEncoder`)
    whisper_stack: bool = False  # the whisper front-end's states after each of those blocks, side by side

    @property
    def voice_bands(self) -> int:
        """Bands of the voice's log-Mel frames."""
        if self.audio_front != "whisper":
            return self.mel["n_mels"]
        return WHISPER_MELS + (PRINT_MELS if self.voiceprint else 0)

    @property
    def state_width(self) -> int:
        """Width of the frames the voice branch reads after its front-end (`runtime.Runtime.states`):
        Whisper's encoder states (and the voiceprint beside them), or the log-Mel bands themselves."""
        if self.audio_front != "whisper":
            return self.mel["n_mels"]
        return WHISPER_WIDTH * (self.whisper_layers if self.whisper_stack else 1) + (PRINT_WIDTH if self.voiceprint else 0)

    @property
    def voice_input_width(self) -> int:
        """Width of the voice branch's input: its states, beside them standardised (`normalise.paired`)
        where the model normalises voices."""
        return self.state_width * (2 if self.voice_norm == "group" else 1)

    @property
    def voice_out_width(self) -> int:
        """Width of what the voice graph gives: the embedding, and the probe's logits beside it where the model has one."""
        return self.embed_dim + (len(self.emotions) + len(self.sentiments) if self.voice_probe else 0)


def card(cfg: ModelConfig, training: dict | None = None, **extra: object) -> dict:
    """The JSON a model folder keeps beside its weights."""
    return {"format_version": FORMAT_VERSION, "architecture": asdict(cfg), "training": training or {}, **extra}


def read_config(directory: str | Path, weights: str) -> tuple[ModelConfig, dict]:
    """A model folder's checked description and its whole card; `weights` is the file
    (beside config.json) that must be there too."""
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file() or not (directory / weights).is_file():
        raise AvemoError(f"{directory}: not a model folder (needs config.json and {weights})")
    try:
        meta = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise AvemoError(f"{config_path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        found = meta.get("format_version") if isinstance(meta, dict) else None
        raise AvemoError(f"{directory}: model format {found} is not {FORMAT_VERSION}")
    try:
        cfg = ModelConfig(**meta["architecture"])
        if cfg.audio_front not in ("logmel", "whisper") or cfg.rnn not in ("gru", "lstm") or cfg.voice_norm not in VOICE_NORMS:
            raise ValueError(f"audio_front {cfg.audio_front!r}, rnn {cfg.rnn!r}, voice_norm {cfg.voice_norm!r}")
        if (cfg.voiceprint or cfg.whisper_stack) and cfg.audio_front != "whisper":
            raise ValueError("a voiceprint and stacked states are Whisper's: audio_front must be whisper")
        if not 1 <= cfg.whisper_layers <= 4:
            raise ValueError(f"whisper_layers {cfg.whisper_layers!r}: Whisper tiny.en's encoder has blocks 1 to 4")
        if not 1 <= cfg.face_blocks <= 4:
            raise ValueError(f"face_blocks {cfg.face_blocks!r}: a 48-pixel crop halves at most four times here")
        if cfg.max_faces < 1:
            raise ValueError(f"max_faces {cfg.max_faces!r}: a segment judges at least one face crop")
        defaults = ModelConfig()
        for f in fields(cfg):
            value, kind = getattr(cfg, f.name), type(getattr(defaults, f.name))
            if type(value) is not kind and not (kind is float and type(value) is int):
                raise TypeError(f"{f.name} is {value!r}, not a {kind.__name__}")
        MelSettings(**cfg.mel)
    except (KeyError, TypeError, ValueError) as exc:
        raise AvemoError(f"{config_path}: its architecture is not one avemo knows ({type(exc).__name__}: {exc})") from None
    if list(cfg.emotions) != list(EMOTIONS) or list(cfg.sentiments) != list(SENTIMENTS):
        raise AvemoError(f"{directory}: label sets differ from MELD's ({cfg.emotions}, {cfg.sentiments})")
    if cfg.mel != MelSettings(**cfg.mel).to_dict():
        raise AvemoError(f"{directory}: feature settings in config.json are incomplete")
    return cfg, meta
