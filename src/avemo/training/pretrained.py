"""The frozen pretrained encoders' weights, for training a model that reads them: from the package
they came from where it is installed (build time), else from the shipped default model, which
carries them (so that a retrain needs no download)."""

from __future__ import annotations

from pathlib import Path

from ..errors import AvemoError
from ..shipped import default_model_dir


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


def voiceprint_state() -> dict:
    """Resemblyzer's LSTM and linear layer, for training a model with a voiceprint: from the
    installed `Resemblyzer` package's weights file (build time), else from the shipped default
    model, which carries them."""
    from importlib.util import find_spec

    import torch

    spec = find_spec("resemblyzer")  # located, not imported: its own imports are not needed
    if spec is not None and spec.origin:
        checkpoint = torch.load(Path(spec.origin).parent / "pretrained.pt", map_location="cpu", weights_only=True)
        return {k: v for k, v in checkpoint["model_state"].items() if k.startswith(("lstm.", "linear."))}
    return shipped_state("audio.voiceprint.", "a voiceprint needs Resemblyzer's weights: pip install --no-deps resemblyzer==0.1.4")
