"""Serving: ONNX Runtime recommendations with champion/challenger routing, filters, cold start and search.

Imports numpy, onnxruntime (lazily, when a model loads), pydantic and the shelfwise core only:
never pandas, pyarrow or onnx, so the serving function stays small and starts fast.
"""

from shelfwise.serving.config import ServingConfig, ServingRules
from shelfwise.serving.impressions import ImpressionSink
from shelfwise.serving.model import LoadedModel, ModelLoader, ModelLoadError
from shelfwise.serving.service import (
    Filters,
    HistoryEvent,
    ItemNotFoundError,
    ModelUnavailableError,
    RankedItem,
    Recommendation,
    Recommender,
)

__all__ = [
    "Filters",
    "HistoryEvent",
    "ImpressionSink",
    "ItemNotFoundError",
    "LoadedModel",
    "ModelLoadError",
    "ModelLoader",
    "ModelUnavailableError",
    "RankedItem",
    "Recommendation",
    "Recommender",
    "ServingConfig",
    "ServingRules",
]
