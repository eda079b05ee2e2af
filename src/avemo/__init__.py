"""avemo: emotion and sentiment of people in video, from how they sound and what their face shows."""

from .errors import AvemoError
from .predict import Model, SegmentResult, load_model

__all__ = ["AvemoError", "Model", "SegmentResult", "load_model"]
__version__ = "0.1.0"
