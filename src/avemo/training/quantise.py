"""int8 graphs: the network's heaviest graphs with 8-bit weights, for speed on CPUs (`avemo export --int8`).

Why these and how (measured on the shipped model, `benchmarks/agreement.py`, issue 47):
- **The face CNN** (shipped int8): its convolutions on int8 weights (one scale per channel) and
  int8 activations, whose ranges are calibrated on real face crops (static quantisation:
  `calibration`, a folder of face photos cut to the face, such as FER2013's); the first
  convolution (on raw grey levels) and the projection stay float: with them quantised FER2013
  lost 0.7-0.9 points, without them 0.2 (98.9% of its 3,589 answers unchanged; JAFFE, the
  Taiwanese faces and `av_clips/` all unchanged). 3.2x faster.
- **Whisper's encoder** (shipped int8 in part): each block's feed-forward widening product (384 ->
  1536) with int8 weights, one scale per output channel, activations quantised on the fly (dynamic
  quantisation: no data needed): 1.2x faster, 98.1-100% of every held-out voice set's answers
  unchanged, none more than 0.28 points lower, `av_clips/` the same. Every product by a weight int8
  was 2.2x faster, but URDU's natural speech each file alone lost two files (UAR 0.444 against
  0.450) and one of the seven `av_clips/` by speaker turned (a near tie in float, 0.362 against
  0.342); the products of the attention and of the narrowing half int8 beside them, URDU by
  speaker one file: issue 47 keeps float where a figure of the card is lost.
- Never the **voiceprint** (its LSTMs quantised changed 9-11% of the answers by speaker: the voice
  branch reads the voiceprint beside the speaker's own statistics, where small shifts are large),
  nor the voice branch, fusion or context stage (too small to matter).
"""

from __future__ import annotations

import contextlib
import io
import random
import tempfile
from pathlib import Path

import cv2
import numpy as np

from ..errors import AvemoError
from ..media import IMAGE_SUFFIXES

#: The graphs `avemo export --int8` can make int8.
QUANTISED = ("face", "encoder")
#: Face photos read to calibrate the face CNN's activation ranges (a random draw, seeded).
CALIBRATION_CROPS = 1024
#: The percentile of each activation's magnitudes taken as its range (outliers clipped).
CALIBRATION_PERCENTILE = 99.999


def calibration_crops(folder: Path, size: int, n: int = CALIBRATION_CROPS, seed: int = 0) -> np.ndarray:
    """(n, size, size) uint8 grey crops: face photos from `folder` (searched recursively), each
    resized whole to the crop size, as the face CNN reads a cut face."""
    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise AvemoError(f"{folder}: no face photos to calibrate the int8 face graph with (jpg, png, ...)")
    random.Random(seed).shuffle(paths)
    crops = []
    for path in paths[:n]:
        grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if grey is not None:
            crops.append(cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA))
    if not crops:
        raise AvemoError(f"{folder}: none of its images could be read")
    return np.stack(crops)


def quantise_encoder(source: Path, target: Path) -> None:
    """Whisper's encoder graph (float weights) with int8 weights in each block's feed-forward widening
    product (384 -> 1536, a third of a block's arithmetic), one scale per output channel, activations
    quantised on the fly. Why only those: with every product by a weight int8 the encoder was 2.2x
    faster but held-out answers moved (see the module's docstring); with these alone, 1.2x, and
    none of the card's figures moved."""
    import onnx
    from onnx import numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(source)).graph
    shapes = {i.name: tuple(numpy_helper.to_array(i).shape) for i in graph.initializer}
    widening = [n.name for n in graph.node if n.op_type == "MatMul" and len(shapes.get(n.input[1], ())) == 2
                and shapes[n.input[1]][1] == 4 * shapes[n.input[1]][0]]
    if not widening:
        raise AvemoError(f"{source}: no feed-forward product found to quantise (is it Whisper's encoder?)")
    others = [n.name for n in graph.node if n.op_type == "MatMul" and n.name not in widening]
    quantize_dynamic(source, target, weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"],
                     nodes_to_exclude=others)


def quantise_face(source: Path, target: Path, crops: np.ndarray) -> None:
    """The face graph with int8 convolutions calibrated on `crops`, its first convolution and
    its projection kept float."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    size = min(64, len(crops))  # batches of one size: the calibrator stacks what each gives

    class Crops(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter([{"crops": crops[i:i + size]} for i in range(0, len(crops) - size + 1, size)])

        def get_next(self) -> dict | None:
            return next(self._batches, None)

    with tempfile.TemporaryDirectory(prefix="avemo-int8-") as tmp:
        prepared = Path(tmp) / "face.onnx"
        quant_pre_process(str(source), str(prepared))
        nodes = [n for n in onnx.load(str(prepared)).graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
        keep_float = [nodes[0].name] + [n.name for n in nodes if n.op_type != "Conv"]
        with contextlib.redirect_stdout(io.StringIO()):  # the calibrator prints its histogram settings
            quantize_static(str(prepared), str(target), Crops(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.Percentile, nodes_to_exclude=keep_float,
                            extra_options={"CalibPercentile": CALIBRATION_PERCENTILE},
                            calibration_providers=["CPUExecutionProvider"])
