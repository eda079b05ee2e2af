"""Rebuild src/avemo/assets/vad/silero_vad_16k_batched.onnx from silero-vad's own graph beside it.

Why: silero-vad's graph judges one 32 ms chunk a call, its LSTM state carried from call to
call: 9,375 calls for five minutes of sound, ~140 µs each, most of it the call itself (1.3 s
of a core for a 5-minute talking video). Only the LSTM carries anything from one chunk to
the next: the STFT and the four convolutions see one chunk (and its 64-sample context) alone.
The graph made here runs those on a whole batch of chunks at once and ONNX's LSTM over their
sequence, so that a block of sound is one call with the same weights, the same arithmetic,
and the state in and out as before (`segments.VoiceActivity`; a test holds its probabilities
to silero's own graph, chunk by chunk, on real speech).

    python scripts/make_vad_graph.py    (needs the onnx package: the [train] extra)

Inputs: `chunks` (N, 576) float32, each 32 ms chunk after the last 64 samples before it;
`state` (2, 1, 128) float32, the LSTM's h and c. Outputs: `probs` (N,) speech probabilities,
`stateN` (2, 1, 128). Only the 16 kHz branch is kept (avemo resamples all sound to 16 kHz).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

VAD = Path(__file__).resolve().parent.parent / "src" / "avemo" / "assets" / "vad"
SOURCE = VAD / "silero_vad.onnx"
TARGET = VAD / "silero_vad_16k_batched.onnx"
HIDDEN = 128
CHUNK = 576  # 512 samples and the 64 before them


def sixteen_k_branch(model: onnx.ModelProto) -> onnx.GraphProto:
    """The If node's branch taken when sr == 16000 (the graph's test is Equal(sr, 16000))."""
    (branch_node,) = [n for n in model.graph.node if n.op_type == "If"]
    constant = [n for n in model.graph.node if n.op_type == "Constant"][0]
    assert int(numpy_helper.to_array(constant.attribute[0].t)) == 16000, "the graph's If no longer tests sr == 16000"
    return [a.g for a in branch_node.attribute if a.name == "then_branch"][0]


def conv1d(x: np.ndarray, w: np.ndarray, stride: int = 1, pad: int = 0) -> np.ndarray:
    """(B, C, L) through a convolution's weights (O, C, K), as ONNX's Conv computes it."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad)))
    k = w.shape[2]
    steps = (x.shape[2] - k) // stride + 1
    windows = np.stack([x[:, :, t * stride:t * stride + k] for t in range(steps)], axis=1)  # (B, L', C, K)
    return np.einsum("btck,ock->bot", windows, w)


def dense(linear, width: int) -> np.ndarray:
    """The matrix (width, out) of a linear map of flat vectors: its image of each unit vector."""
    return linear(np.eye(width, dtype=np.float64)).reshape(width, -1)


def build() -> onnx.ModelProto:
    source = onnx.load(str(SOURCE))
    branch = sixteen_k_branch(source)
    consts = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in branch.node if n.op_type == "Constant"}

    def weight(suffix: str) -> np.ndarray:
        (name,) = [k for k in consts if k.endswith(suffix)]
        return consts[name].astype(np.float64)

    # The STFT (reflect-padded by 64 samples on the right, 256-sample windows every 128) and the four
    # convolutions see 4, 4, 2, 1 and 1 steps of one chunk: each is a small dense matrix on the flat
    # (channels x steps) vector, which one matrix product runs for a whole batch of chunks, where
    # ONNX's Conv spent most of its time on such short rows.
    basis = weight("stft.forward_basis_buffer")  # (258, 1, 256): real then imaginary parts of 129 bins
    stft = dense(lambda x: conv1d(np.pad(x, ((0, 0), (0, 64)), mode="reflect")[:, None], basis, stride=128), CHUNK)
    bins = basis.shape[0] // 2
    real, imag = stft.reshape(CHUNK, 2 * bins, -1)[:, :bins], stft.reshape(CHUNK, 2 * bins, -1)[:, bins:]
    steps = real.shape[2]
    layers, width = [], bins * steps
    for n, stride in enumerate((1, 2, 2, 1)):
        w, b = weight(f"encoder.{n}.reparam_conv.weight"), weight(f"encoder.{n}.reparam_conv.bias")
        matrix = dense(lambda x, w=w, c=width // steps, s=steps, stride=stride: conv1d(x.reshape(-1, c, s), w, stride, 1), width)
        steps = (steps + 2 - 3) // stride + 1
        layers.append((matrix, np.repeat(b, steps)))  # the bias of each output channel at each of its steps
        width = matrix.shape[1]
    assert steps == 1 and width == HIDDEN, "the encoder no longer ends in one step of 128 channels"

    # PyTorch's LSTMCell gates (i, f, g, o) in ONNX's order (i, o, f, g), as silero's own export slices them
    order = np.r_[0:HIDDEN, 3 * HIDDEN:4 * HIDDEN, HIDDEN:3 * HIDDEN]
    arrays = {"stft_real": real.reshape(CHUNK, -1), "stft_imag": imag.reshape(CHUNK, -1),
              "lstm_W": weight("decoder.rnn.weight_ih")[order][None],
              "lstm_R": weight("decoder.rnn.weight_hh")[order][None],
              "lstm_B": np.concatenate([weight("decoder.rnn.bias_ih")[order], weight("decoder.rnn.bias_hh")[order]])[None],
              "head_W": weight("decoder.decoder.2.weight").reshape(1, HIDDEN).T, "head_B": weight("decoder.decoder.2.bias")}
    nodes = [helper.make_node("MatMul", ["chunks", "stft_real"], ["re"]),
             helper.make_node("MatMul", ["chunks", "stft_imag"], ["im"]),
             helper.make_node("Mul", ["re", "re"], ["re2"]),
             helper.make_node("Mul", ["im", "im"], ["im2"]),
             helper.make_node("Add", ["re2", "im2"], ["power"]),
             helper.make_node("Sqrt", ["power"], ["x0"])]
    for n, (matrix, bias) in enumerate(layers):
        arrays[f"conv{n}_W"], arrays[f"conv{n}_B"] = matrix, bias
        nodes += [helper.make_node("MatMul", [f"x{n}", f"conv{n}_W"], [f"y{n}"]),
                  helper.make_node("Add", [f"y{n}", f"conv{n}_B"], [f"z{n}"]),
                  helper.make_node("Relu", [f"z{n}"], [f"x{n + 1}"])]
    inits = [numpy_helper.from_array(a.astype(np.float32), name) for name, a in arrays.items()]
    inits += [numpy_helper.from_array(np.array(v, np.int64), name) for v, name in
              (([1], "axis_batch"), ([0], "first"), ([1], "second"), ([-1], "flat"), ([-1, HIDDEN], "flat_hidden"))]
    nodes += [
        helper.make_node("Unsqueeze", [f"x{len(layers)}", "axis_batch"], ["sequence"]),  # (N, 1, 128): one step a chunk
        helper.make_node("Gather", ["state", "first"], ["h0"], axis=0),  # (1, 1, 128)
        helper.make_node("Gather", ["state", "second"], ["c0"], axis=0),
        helper.make_node("LSTM", ["sequence", "lstm_W", "lstm_R", "lstm_B", "", "h0", "c0"], ["hs", "hN", "cN"],
                         hidden_size=HIDDEN),
        helper.make_node("Reshape", ["hs", "flat_hidden"], ["h"]),  # (N, 128)
        helper.make_node("Relu", ["h"], ["h_relu"]),
        helper.make_node("MatMul", ["h_relu", "head_W"], ["logit"]),
        helper.make_node("Add", ["logit", "head_B"], ["logit_b"]),
        helper.make_node("Sigmoid", ["logit_b"], ["prob"]),
        helper.make_node("Reshape", ["prob", "flat"], ["probs"]),
        helper.make_node("Concat", ["hN", "cN"], ["stateN"], axis=0),
    ]
    graph = helper.make_graph(
        nodes, "silero_vad_16k_batched",
        [helper.make_tensor_value_info("chunks", TensorProto.FLOAT, ["N", CHUNK]),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, 1, HIDDEN])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N"]),
         helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, 1, HIDDEN])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)],
                              producer_name="avemo scripts/make_vad_graph.py")
    model.ir_version = source.ir_version
    onnx.checker.check_model(model)
    return model


if __name__ == "__main__":
    onnx.save(build(), str(TARGET))
    print(f"{TARGET} ({TARGET.stat().st_size / 1e6:.1f} MB)")
