"""The network run by torch, as trained (`model.AvemoNet`): `load_model(runtime="torch")`, and the
reference the exported ONNX graphs are checked against. Needs the [train] extra."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import AvemoError
from ..runtime import each_alone
from .model import encoder_states


class TorchRuntime:
    """The network in torch (`model.AvemoNet`), as trained; needs `avemo[train]`."""

    name = "torch"

    def __init__(self, net: object, threads: int | None = None, device: str = "cpu") -> None:
        if threads:
            torch.set_num_threads(threads)
        if device == "cuda" and not torch.cuda.is_available():
            raise AvemoError("--device cuda: torch finds no CUDA device")
        self.device = torch.device(device)
        self.net = net.eval().to(self.device)
        self.net.face.for_inference()
        self.net.audio.takes_states = self.net.audio.whisper is not None  # `states` runs the encoder
        self.has_context = self.net.context is not None

    def _call(self, fn, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        with torch.no_grad():
            out = fn(*(torch.from_numpy(a).to(self.device) for a in arrays))
        return tuple(o.float().cpu().numpy() for o in (out if isinstance(out, tuple) else (out,)))

    def states(self, mel: np.ndarray, lengths: np.ndarray, prints: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        if self.net.audio.whisper is None:
            return mel, lengths
        def row(i: int, n: int) -> tuple[np.ndarray, ...]:
            own = None if prints is None else prints[i:i + 1]
            return self._call(lambda m, k: encoder_states(self.net.audio, m, k, own), mel[i:i + 1, :n], lengths[i:i + 1])

        return each_alone(row, lengths)

    def voice(self, states: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        return self._call(self.net.voice_out, states, lengths)[0]

    def faces(self, crops: np.ndarray) -> np.ndarray:
        return self._call(self.net.face.embed_crops, crops)[0]

    def voiceprints(self, windows: np.ndarray) -> np.ndarray:
        return self._call(self.net.audio.voiceprint, windows)[0]

    def fusion(self, voice: np.ndarray, face: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, ...]:
        return self._call(self.net.decide, voice, face, present)

    def context(self, fused: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        emotion, sentiment = self._call(self.net.context, fused, lengths)
        return emotion, sentiment
