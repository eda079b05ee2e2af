"""Export: a trained model's network as ONNX graphs, which `runtime.OnnxRuntime` runs
without torch.

The graphs are cut as `runtime.py` says (Whisper's encoder and the voiceprint encoder where
the voice has them, voice branch, face branch, fusion + heads, and the context stage where
the model has one), each with dynamic batch and sequence axes,
and written beside a copy of the model's config.json, which records the weights they
came from. Weights that are exactly half-precision numbers (the frozen Whisper encoder,
kept so in the safetensors) are stored as float16 and cast back when a session opens:
half the size, the same numbers. Every export is checked: ONNX Runtime's and torch's
outputs on the same inputs must agree (`TOLERANCE`), or nothing is written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..audio import PRINT_MELS, WHISPER_MELS
from ..errors import AvemoError
from ..files import written_whole
from ..normalise import Normaliser
from ..predict import normalised
from ..runtime import GRAPHS, OnnxRuntime, softmax, weights_digest
from ..voiceprint import WINDOW
from .model import AvemoNet, load_net, pooled_states
from .torch_runtime import TorchRuntime

log = logging.getLogger("avemo")

OPSET = 17
#: Largest difference allowed between ONNX Runtime's and torch's probabilities.
TOLERANCE = 1e-4
#: Initializers at least this large that are exact float16 numbers are stored as float16.
HALF_MIN_SIZE = 4096


class _Encoder(nn.Module):
    def __init__(self, net: AvemoNet) -> None:
        super().__init__()
        self.whisper = net.audio.whisper

    def forward(self, mel: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return pooled_states(self.whisper, mel, lengths)


class _Voiceprint(nn.Module):
    def __init__(self, net: AvemoNet) -> None:
        super().__init__()
        self.voiceprint = net.audio.voiceprint

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return self.voiceprint(windows)


class _Voice(nn.Module):
    def __init__(self, net: AvemoNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.net.voice_out(states, lengths)


class _Face(nn.Module):
    def __init__(self, net: AvemoNet) -> None:
        super().__init__()
        self.face = net.face

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.face.embed_crops(crops)


class _Fusion(nn.Module):
    def __init__(self, net: AvemoNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, voice: torch.Tensor, face: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.net.decide(voice, face, present)


class _Context(nn.Module):
    def __init__(self, net: AvemoNet) -> None:
        super().__init__()
        self.context = net.context

    def forward(self, fused: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.context(fused, lengths)


def _examples(net: AvemoNet) -> dict[str, tuple[tuple[torch.Tensor, ...], list[str], list[str], dict]]:
    """Per graph: example inputs, input and output names, dynamic axes. The voice examples'
    two rows differ in length, so that the trace keeps the padding masks (with rows of one
    length the encoder would skip them, and the graph would ignore `lengths`)."""
    cfg = net.cfg
    gen = torch.Generator().manual_seed(0)
    mel = torch.randn(2, 320, cfg.voice_bands, generator=gen) * 0.5
    mel[1, 200:] = 0
    states = torch.randn(2, 80, cfg.voice_input_width, generator=gen)
    states[1, 50:] = 0
    crops = torch.randint(0, 256, (5, cfg.crop_size, cfg.crop_size), dtype=torch.uint8, generator=gen)
    d = cfg.embed_dim
    out = {
        "voice": ((states, torch.tensor([80, 50])), ["states", "lengths"], ["embedding"],
                  {"states": {0: "batch", 1: "frames"}, "lengths": {0: "batch"}, "embedding": {0: "batch"}}),
        "face": ((crops,), ["crops"], ["embedding"], {"crops": {0: "crops"}, "embedding": {0: "crops"}}),
        "fusion": ((torch.randn(3, cfg.voice_out_width, generator=gen), torch.randn(3, d, generator=gen),
                    torch.tensor([[True, True], [True, False], [False, True]])),
                   ["voice", "face", "present"], ["fused", "emotion", "sentiment"],
                   {name: {0: "batch"} for name in ("voice", "face", "present", "fused", "emotion", "sentiment")}),
    }
    if net.audio.whisper is not None:
        out["encoder"] = ((mel, torch.tensor([320, 200])), ["mel", "lengths"], ["states", "state_lengths"],
                          {"mel": {0: "batch", 1: "frames"}, "lengths": {0: "batch"}, "states": {0: "batch", 1: "steps"},
                           "state_lengths": {0: "batch"}})
    if net.audio.voiceprint is not None:
        windows = torch.rand(3, WINDOW, PRINT_MELS, generator=gen)
        out["voiceprint"] = ((windows,), ["windows"], ["embedding"], {"windows": {0: "windows"}, "embedding": {0: "windows"}})
    if net.context is not None:
        out["context"] = ((torch.randn(1, 6, d, generator=gen), torch.tensor([6])), ["fused", "lengths"],
                          ["emotion", "sentiment"], {"fused": {1: "segments"}, "emotion": {1: "segments"},
                                                     "sentiment": {1: "segments"}})
    return out


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """The process's stderr (file descriptor 2) closed off: torch's C++ side prints shape
    inference notes for packed sequences there, which Python's warnings cannot silence.
    Errors still come back as exceptions."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _halve(path: Path) -> None:
    """Store the graph's exact-half-precision weights as float16, each read through a Cast."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    casts = []
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT:
            continue
        values = numpy_helper.to_array(init)
        if values.size < HALF_MIN_SIZE or not np.array_equal(values.astype(np.float16).astype(np.float32), values):
            continue
        half = numpy_helper.from_array(values.astype(np.float16), init.name + "_fp16")
        init.CopyFrom(half)
        casts.append(helper.make_node("Cast", [half.name], [half.name[:-5]], to=onnx.TensorProto.FLOAT))
    for node in reversed(casts):
        graph.node.insert(0, node)
    onnx.save(model, str(path))


def _check(net: AvemoNet, directory: Path) -> float:
    """The largest difference between ONNX Runtime's and torch's emotion and sentiment
    probabilities on fresh inputs: a voice batch of other lengths than the trace's (through
    the encoder, and paired with each row standardised where the model normalises), crops, and their
    fusion (and the context stage over the fused rows)."""
    onnx_rt, torch_rt = OnnxRuntime(directory), TorchRuntime(net)
    rng = np.random.default_rng(1)
    mel = (rng.standard_normal((3, 537, net.cfg.voice_bands)) * 0.5).astype(np.float32)
    mel[:, :, WHISPER_MELS:] **= 2  # the voiceprint's bands (if any) are Mel power
    lengths = np.array([537, 301, 45], np.int64)
    for row, n in enumerate(lengths):
        mel[row, n:] = 0
    crops = rng.integers(0, 256, (7, net.cfg.crop_size, net.cfg.crop_size), dtype=np.uint8)
    present = np.array([[True, True], [True, False], [False, True]])
    pairs = []
    for rt in (onnx_rt, torch_rt):
        states, steps = rt.states(mel, lengths)
        if net.cfg.voice_norm == "group":
            states = normalised(states, steps, Normaliser("segment"))
        fused, emotion, sentiment = rt.fusion(rt.voice(states, steps), rt.faces(crops)[:3], present)
        logits = [emotion, sentiment, *(rt.context(fused[None], np.array([3], np.int64)) if rt.has_context else ())]
        pairs.append([softmax(x) for x in logits])
    return max(float(np.abs(a - b).max()) for a, b in zip(*pairs))


def export_onnx(model_dir: str | Path, out_dir: str | Path, int8: Sequence[str] = (),
                calibration: str | Path | None = None) -> dict:
    """Write `model_dir`'s network as ONNX graphs to `out_dir` (which may be `model_dir`
    itself), with its config.json; returns the config's `onnx` record. `int8`: the graphs to give
    8-bit weights (`quantise.QUANTISED`: "face", which needs `calibration`, a folder of face photos,
    and "encoder"): faster on CPUs, answers as `benchmarks/agreement.py` measures them."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
    except ImportError:
        raise AvemoError("export needs the onnx package: pip install 'avemo[train]'") from None
    from .quantise import QUANTISED

    unknown = set(int8) - set(QUANTISED)
    if unknown:
        raise AvemoError(f"--int8 takes {' and/or '.join(QUANTISED)}, not {', '.join(sorted(unknown))}")
    if ("face" in int8) != (calibration is not None):
        raise AvemoError("an int8 face graph needs --calibration (face photos), and --calibration is only for it: "
                         "give both (--int8 face --calibration DIR) or neither")
    net, meta = load_net(model_dir)
    net.face.for_inference()
    net.audio.takes_states = True  # the voice graph reads states: the encoder is a graph of its own
    modules = {"encoder": _Encoder, "voiceprint": _Voiceprint, "voice": _Voice, "face": _Face, "fusion": _Fusion, "context": _Context}
    with tempfile.TemporaryDirectory(prefix="avemo-export-") as tmp:
        work = Path(tmp)
        for graph, (args, names_in, names_out, axes) in _examples(net).items():
            with warnings.catch_warnings(), _quiet_stderr():  # the TorchScript exporter's deprecation and tracer notes
                warnings.simplefilter("ignore")
                torch.onnx.export(modules[graph](net).eval(), args, str(work / f"{graph}.onnx"), dynamo=False,
                                  opset_version=OPSET, input_names=names_in, output_names=names_out, dynamic_axes=axes)
        difference = _check(net, work)
        if difference > TOLERANCE:
            raise AvemoError(f"the exported graphs differ from torch by {difference:.2g} (> {TOLERANCE:g}); nothing written")
        record = {"opset": OPSET, "weights_sha1": weights_digest(model_dir / "model.safetensors"),
                  "graphs": [g for g in GRAPHS if (work / f"{g}.onnx").is_file()], "max_difference": difference}
        if int8:
            record.update(_quantised(net, work, int8, calibration))
        for graph in record["graphs"]:
            _halve(work / f"{graph}.onnx")
            with written_whole(out_dir / f"{graph}.onnx") as target:
                shutil.copyfile(work / f"{graph}.onnx", target)
    for graph in set(GRAPHS) - set(record["graphs"]):
        (out_dir / f"{graph}.onnx").unlink(missing_ok=True)  # a stale one from an earlier model
    with written_whole(out_dir / "config.json") as target:
        target.write_text(json.dumps({**meta, "onnx": record}, indent=2) + "\n")
    log.info("wrote %s (%s; ONNX Runtime within %.1g of torch)", out_dir, ", ".join(record["graphs"]), difference)
    return record


def _quantised(net: AvemoNet, work: Path, int8: Sequence[str], calibration: str | Path | None) -> dict:
    """Replace `work`'s graphs named in `int8` by their int8 versions; the record of what was
    quantised and how far the int8 graphs' probabilities moved from torch's on the check's inputs
    (random ones: the agreement on real data is benchmarks/agreement.py's)."""
    from .quantise import calibration_crops, quantise_encoder, quantise_face

    done = []
    if "encoder" in int8:
        if not (work / "encoder.onnx").is_file():
            raise AvemoError("--int8 encoder: this model's voice has no Whisper encoder")
        quantise_encoder(work / "encoder.onnx", work / "encoder.int8.onnx")
        done.append("encoder")
    if "face" in int8:
        quantise_face(work / "face.onnx", work / "face.int8.onnx", calibration_crops(Path(calibration), net.cfg.crop_size))
        done.append("face")
    for graph in done:
        (work / f"{graph}.int8.onnx").replace(work / f"{graph}.onnx")
    return {"int8": done, "int8_max_difference": _check(net, work),
            **({"int8_calibration": "/".join(Path(calibration).resolve().parts[-2:])} if calibration is not None else {})}
