"""avemo: emotion and sentiment of people in video, from how they sound and what their face shows."""

from .errors import AvemoError

__all__ = ["AvemoError", "Model", "SegmentResult", "load_model"]
__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """The API, imported on first use: `import avemo` (and `avemo --help`) stays quick, and
    OpenCV, FFmpeg and ONNX Runtime load only when a model is (torch only for training)."""
    if name in ("Model", "SegmentResult", "load_model"):
        from . import predict

        return getattr(predict, name)
    raise AttributeError(f"module 'avemo' has no attribute {name!r}")
