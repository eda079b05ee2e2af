"""Runtimes: the network run by ONNX Runtime (the default, no torch needed) or by torch.

The pipeline (`predict.py`) hands each runtime numpy arrays and gets numpy arrays back,
cut where the network cuts: the voice front-end over a batch of padded frames (Whisper's
encoder, where the model has it: `states`), the rest of the voice branch over those states
(`voice`; the voice normalisation of `normalise.py` comes between the two), the face
branch over a flat batch of crops, then fusion and heads over the branches' embeddings,
and the context stage over a file's fused embeddings where the model has one. The mean
over a segment's crops, which rows have which modality, and the softmax are the
pipeline's, the same for both runtimes.

A folder written by `avemo export --onnx` (`export.py`) holds these graphs beside the
model's config.json; the shipped model carries both its safetensors (for training and
export) and its graphs (for inference).
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from .audio import PRINT_WIDTH
from .config import ModelConfig, read_config
from .errors import AvemoError
from .voiceprint import with_voiceprints

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

#: The graphs an exported model folder holds: the encoder only where the voice has Whisper's
#: front-end, the voiceprint only where it reads one, the context graph only where the model has that stage.
GRAPHS = ("encoder", "voiceprint", "voice", "face", "fusion", "context")
#: The graphs every exported folder has.
REQUIRED = ("voice", "face", "fusion")


class Runtime(Protocol):
    """What the pipeline asks of a network."""

    name: str
    has_context: bool

    def states(self, mel: np.ndarray, lengths: np.ndarray, prints: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """(B, T, bands) float32 frames and (B,) int64 lengths to the voice branch's input
        frames (B, T', state_width) and their lengths: Whisper's pooled encoder states (with
        the voiceprint beside them where the model reads one: `prints` (B, 256) those already
        known, NaN rows for those to compute), or the frames themselves for a log-Mel front-end."""

    def voice(self, states: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """(B, T', state_width) float32 states and (B,) int64 lengths to (B, embed_dim) embeddings
        (with the voice probe's logits beside them where the model has one: `ModelConfig.voice_out_width`)."""

    def faces(self, crops: np.ndarray) -> np.ndarray:
        """(N, size, size) uint8 crops to (N, embed_dim) embeddings."""

    def voiceprints(self, windows: np.ndarray) -> np.ndarray:
        """(N, 160, 40) windows of the voiceprint encoder's Mel power to (N, 256) embeddings
        (a model that reads a voiceprint: `ModelConfig.voiceprint`); what tells voices apart."""

    def fusion(self, voice: np.ndarray, face: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, ...]:
        """Branch outputs (as `voice` and `faces` give them) and present (B, 2) bool to the fused
        embedding and the emotion and sentiment logits."""

    def context(self, fused: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(1, T, embed_dim) fused embeddings of a file's segments to (1, T, E) and (1, T, S) logits."""


def one_thread_session(path: str | os.PathLike[str] | Traversable):
    """An ONNX Runtime session on one CPU thread, for the pipeline's small helper graphs (the VAD, the
    face detector): each runs beside the decoder and the network, which have the other cores.
    Opening a session sets the process's OpenMP threads to its own one: torch's are given back."""
    import onnxruntime as ort

    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch else None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    if threads:
        torch.set_num_threads(threads)
    return session


def each_alone(encode: Callable[[int, int], Sequence[np.ndarray]], lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whisper's states of a batch's rows, each row encoded alone at its own length (`encode(row,
    frames)` gives its (1, T', D) states and (1,) steps), padded together with zeros. Why not the
    batch in one call: (1) the training cache encodes each file alone, and in a batch a row with an
    odd number of states had its last pooled state averaged with a padded one (up to 2.9 apart);
    (2) the int8 encoder quantises its activations with one scale per call, which would make a
    row's states depend on its neighbours'; (3) no padding is encoded (8 rows alone: 0.075 s,
    as one batch: 0.12 s)."""
    rows = [encode(i, n) for i, n in enumerate(np.asarray(lengths).tolist())]
    return padded([row_states[0] for row_states, _ in rows])[0], np.concatenate([np.asarray(r[1], np.int64) for r in rows])


def padded(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Frames of several segments (each (T_i, D)) zero-padded to the longest: (B, T, D) and (B,) lengths."""
    lengths = np.array([len(m) for m in rows], np.int64)
    out = np.zeros((len(rows), int(lengths.max()), rows[0].shape[1]), np.float32)
    for row, m in enumerate(rows):
        out[row, : len(m)] = m
    return out, lengths


def weights_digest(path: Path) -> str:
    """SHA-1 of a weights file: an exported folder records the weights it was made from."""
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def has_graphs(directory: Path) -> bool:
    return all((directory / f"{g}.onnx").is_file() for g in REQUIRED)


class OnnxRuntime:
    """The exported graphs on ONNX Runtime's CPU (or CUDA) provider."""

    name = "onnx"

    def __init__(self, directory: Path, threads: int | None = None, device: str = "cpu") -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise AvemoError("ONNX Runtime is missing: pip install onnxruntime") from None
        options = ort.SessionOptions()
        # half the cores: the frame decoder, the faces and the sound run beside the network (on
        # 2 cores, 1 thread measured 1.42x decode-only against 1.53x with 2)
        options.intra_op_num_threads = threads or max(1, min(4, (os.cpu_count() or 1) // 2))
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise AvemoError("--device cuda: this onnxruntime has no CUDA provider (pip install onnxruntime-gpu)")
            providers.insert(0, "CUDAExecutionProvider")
        self.has_context = (directory / "context.onnx").is_file()
        self._sessions = {}
        for graph in (g for g in GRAPHS if g in REQUIRED or (directory / f"{g}.onnx").is_file()):
            try:
                self._sessions[graph] = ort.InferenceSession(str(directory / f"{graph}.onnx"), options, providers=providers)
            except Exception as exc:  # onnxruntime raises its own exception types for damaged graphs
                raise AvemoError(f"{directory / graph}.onnx: does not load ({type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0][:200]})") from None

    def check(self, cfg: ModelConfig, directory: Path) -> None:
        """The graphs' fixed sizes against the config's: bands, crop size, embedding width, labels."""
        def last(graph: str, outputs: bool = True) -> list:
            session = self._sessions[graph]
            return [v.shape[-1] for v in (session.get_outputs() if outputs else session.get_inputs())]

        for graph, needed, what in (("encoder", cfg.audio_front == "whisper", f"its voice's front-end is {cfg.audio_front}"),
                                    ("voiceprint", cfg.voiceprint, f"its voice reads {'a' if cfg.voiceprint else 'no'} voiceprint")):
            if needed != (graph in self._sessions):
                raise AvemoError(f"{directory}: its ONNX graphs do not match config.json ({what}, and {graph}.onnx is "
                                 f"{'missing' if needed else 'there'}): export them again (avemo export --onnx)")
        expected = {"voice in": cfg.voice_input_width, "face in": cfg.crop_size,
                    "voice out": cfg.voice_out_width, "face out": cfg.embed_dim, "emotions": len(cfg.emotions),
                    "sentiments": len(cfg.sentiments)}
        found = {"voice in": last("voice", False)[0],
                 "face in": last("face", False)[0], "voice out": last("voice")[0],
                 "face out": last("face")[0], "emotions": last("fusion")[1], "sentiments": last("fusion")[2]}
        if "encoder" in self._sessions:
            expected["encoder in"], found["encoder in"] = cfg.voice_bands, last("encoder", False)[0]
        wrong = [k for k in expected if found[k] != expected[k]]
        if wrong:
            raise AvemoError(f"{directory}: its ONNX graphs do not match config.json ({wrong[0]}: "
                             f"{found[wrong[0]]} in the graphs, {expected[wrong[0]]} in the config)")

    def _run(self, graph: str, **inputs: np.ndarray) -> list[np.ndarray]:
        return self._sessions[graph].run(None, inputs)

    def states(self, mel: np.ndarray, lengths: np.ndarray, prints: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        if "encoder" not in self._sessions:
            return mel, lengths
        states, steps = each_alone(lambda i, n: self._run("encoder", mel=mel[i:i + 1, :n], lengths=lengths[i:i + 1]),
                                   lengths)
        if "voiceprint" in self._sessions:
            states = with_voiceprints(states, steps, mel, lengths, lambda w: self._run("voiceprint", windows=w)[0], prints)
        return states, steps

    def voice(self, states: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        return self._run("voice", states=states, lengths=lengths)[0]

    def faces(self, crops: np.ndarray) -> np.ndarray:
        return self._run("face", crops=crops)[0]

    def voiceprints(self, windows: np.ndarray) -> np.ndarray:
        return self._run("voiceprint", windows=windows)[0]

    def fusion(self, voice: np.ndarray, face: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(self._run("fusion", voice=voice, face=face, present=present))

    def context(self, fused: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        emotion, sentiment = self._run("context", fused=fused, lengths=lengths)
        return emotion, sentiment


def one_blas_thread() -> None:
    """numpy's BLAS (OpenBLAS) on one thread, for the whole process. Why: avemo's own matrix
    products (Mel filters, pooling, clustering voices) are small, and OpenBLAS's second thread
    spins between them, taking a core from the decoders and the network: on 2 cores the talking
    5-minute loop took 7.8 s with it, 5.6 s without (its thread had burnt 2.3 s of CPU)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")


def open_runtime(directory: Path, runtime: str = "auto", threads: int | None = None, device: str = "cpu"
                 ) -> tuple[Runtime, ModelConfig, dict]:
    """The model folder's runtime, config and card. `runtime`: "onnx" (its exported graphs),
    "torch" (its safetensors) or "auto": the graphs where the folder has them, else torch.
    Graphs beside weights they were not exported from are refused (a retrained model
    whose graphs were not exported again would silently give the old answers). Sets numpy's
    BLAS to one thread (`one_blas_thread`)."""
    one_blas_thread()
    if runtime not in ("auto", "onnx", "torch"):
        raise AvemoError(f"runtime must be auto, onnx or torch, not {runtime!r}")
    weights = directory / "model.safetensors"
    graphs = has_graphs(directory)
    if not (directory / "config.json").is_file() or not (graphs or weights.is_file()):
        raise AvemoError(f"{directory}: not a model folder (needs config.json beside model.safetensors, "
                         "or beside the ONNX graphs of avemo export --onnx)")
    if runtime == "onnx" or (runtime == "auto" and graphs):
        cfg, meta = read_config(directory, "voice.onnx")
        if not graphs:
            raise AvemoError(f"{directory}: no ONNX graphs (voice, face, fusion .onnx); make them with avemo export --onnx")
        made_from = meta.get("onnx", {}).get("weights_sha1")
        if weights.is_file() and weights_digest(weights) != made_from:
            raise AvemoError(f"{directory}: its ONNX graphs were exported from other weights than its model.safetensors: "
                             "export them again (avemo export --onnx)")
        network = OnnxRuntime(directory, threads, device)
        network.check(cfg, directory)
        return network, cfg, meta
    try:
        from .training.model import load_net
        from .training.torch_runtime import TorchRuntime
    except ImportError:
        raise AvemoError(f"{directory}: this model has no ONNX graphs, and running its weights needs torch: "
                         "pip install 'avemo[train]', or export it with avemo export --onnx where torch is") from None
    net, meta = load_net(directory)
    return TorchRuntime(net, threads, device), net.cfg, meta


class SharedRuntime:
    """One runtime shared by several files analysed at once (one thread each), whose calls
    are merged: the voice rows of all waiting files padded into one batch, their crops into
    another, their fusions into a third. Why: a GPU is only busy with batches far larger
    than one file's segments give; on a CPU the files' decoding also overlaps.

    A call waits until every file being analysed has a call of the same kind waiting, or
    `linger` seconds, then the last to come runs them all as one and hands each its rows.
    Rows are independent in every graph (padding is masked), so each file's results are
    those it gets alone (to float rounding: 1e-6).
    """

    def __init__(self, runtime: Runtime, linger: float = 0.05) -> None:
        self.base = runtime
        self.name = runtime.name
        self.has_context = runtime.has_context
        self.linger = linger
        self._lock = threading.Condition()
        self._active = 0
        self._pending: dict[str, list[dict]] = {"states": [], "voice": [], "faces": [], "fusion": []}

    def enter(self) -> None:
        with self._lock:
            self._active += 1

    def leave(self) -> None:
        with self._lock:
            self._active -= 1
            self._lock.notify_all()  # those waiting for this file's call need not wait any longer

    def _merged(self, kind: str, arrays: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        request = {"arrays": arrays, "out": None, "error": None}
        with self._lock:
            self._pending[kind].append(request)
            deadline = time.monotonic() + self.linger
            while request["out"] is None and request["error"] is None:  # else another's batch took it
                queue = self._pending[kind]
                if len(queue) >= self._active or time.monotonic() >= deadline:
                    self._pending[kind] = []
                    self._run(kind, queue)
                    self._lock.notify_all()
                else:
                    self._lock.wait(max(0.0, deadline - time.monotonic()))
        if request["error"] is not None:
            raise request["error"]
        return request["out"]

    def _run(self, kind: str, batch: list[dict]) -> None:
        """Run `batch`'s calls as one (under the lock: one merged call at a time), each request
        then holding its own rows."""
        try:
            if kind in ("states", "voice"):  # padded frames: padded again to the longest of the batch
                mels = [r["arrays"][0] for r in batch]
                frames = max(m.shape[1] for m in mels)
                mel = np.concatenate([np.pad(m, ((0, 0), (0, frames - m.shape[1]), (0, 0))) for m in mels])
                lengths = np.concatenate([r["arrays"][1] for r in batch])
                if kind == "states":
                    prints = np.concatenate([r["arrays"][2] for r in batch])
                    outs = self.base.states(mel, lengths, None if np.isnan(prints).all() else prints)
                else:
                    outs = (self.base.voice(mel, lengths),)
            elif kind == "faces":
                outs = (self.base.faces(np.concatenate([r["arrays"][0] for r in batch])),)
            else:
                outs = self.base.fusion(*(np.concatenate([r["arrays"][k] for r in batch]) for k in range(3)))
            start = 0
            for r in batch:
                rows = len(r["arrays"][0])
                r["out"] = tuple(o[start:start + rows] for o in outs)
                start += rows
        except Exception as exc:  # every file of the batch hears of it
            for r in batch:
                r["error"] = exc

    def states(self, mel: np.ndarray, lengths: np.ndarray, prints: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        known = np.full((len(mel), PRINT_WIDTH), np.nan, np.float32) if prints is None else prints
        states, steps = self._merged("states", (mel, lengths, known))
        return states, steps

    def voice(self, states: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        return self._merged("voice", (states, lengths))[0]

    def faces(self, crops: np.ndarray) -> np.ndarray:
        return self._merged("faces", (crops,))[0]

    def voiceprints(self, windows: np.ndarray) -> np.ndarray:
        return self.base.voiceprints(windows)  # a file's own windows, between its batches: nothing to merge

    def fusion(self, voice: np.ndarray, face: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, ...]:
        return self._merged("fusion", (voice, face, present))

    def context(self, fused: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.base.context(fused, lengths)  # one file's whole sequence: nothing to merge
