"""The shipped default model: where its folder lies (no torch: inference finds it here; training
reads the frozen encoders it carries through `training.pretrained`)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def default_model_dir() -> Path:
    return Path(str(resources.files("avemo") / "assets" / "default"))
