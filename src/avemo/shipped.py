"""The shipped default model: where its folder lies, and the frozen pretrained encoders it carries.

Why a module of its own: inference finds the folder here (no torch), and training reads an
encoder's weights from it where the package they came from is not installed, from the
encoders' own modules (`whisper`, `voiceprint`), which the model module builds on.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .errors import AvemoError


def default_model_dir() -> Path:
    return Path(str(resources.files("avemo") / "assets" / "default"))


def shipped_state(prefix: str, missing: str) -> dict:
    """The shipped default model's weights under `prefix` (a frozen pretrained encoder it
    carries), as float32 torch tensors named without the prefix. AvemoError(`missing`) where
    it has none."""
    from safetensors.torch import load_file

    state = {k[len(prefix):]: v.float() for k, v in load_file(str(default_model_dir() / "model.safetensors")).items()
             if k.startswith(prefix)}
    if not state:
        raise AvemoError(missing)
    return state
