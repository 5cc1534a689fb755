"""Serving: ONNX Runtime recommendations with champion/challenger routing, filters, cold start and search.

Never imports pandas, pyarrow or onnx. The names below load lazily (PEP 562), so the light
modules (``api``, ``collect``, ``config``, ``errors``), which ``collect_events`` uses without the
inference layer, do not pull numpy or onnxruntime through this package's ``__init__``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ServingConfig": "config",
    "ServingRules": "config",
    "ImpressionSink": "impressions",
    "LoadedModel": "model",
    "ModelLoadError": "errors",
    "ModelLoader": "loader",
    "Filters": "filters",
    "HistoryEvent": "filters",
    "RankedItem": "lists",
    "Recommendation": "lists",
    "Recommender": "service",
    "ItemNotFoundError": "errors",
    "ModelUnavailableError": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
