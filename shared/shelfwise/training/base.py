"""What every candidate model provides, so search, evaluation and export treat them alike."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import onnx

from shelfwise.training.data import Interactions


class Recommender(Protocol):
    """A fitted-or-not candidate: ``fit`` on interactions, score known users, export ONNX."""

    algorithm: str
    params: dict[str, Any]

    def fit(self, data: Interactions) -> Recommender: ...

    def score_users(self, users: np.ndarray) -> np.ndarray:
        """Dense float32 scores [len(users), n_items] for known (training) users."""
        ...

    def to_onnx(self) -> onnx.ModelProto: ...

    def reference(
        self,
        user_index: int,
        history_items: np.ndarray,
        history_weights: np.ndarray,
        exclude: np.ndarray,
        k: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """numpy top-k with the exact semantics of the exported graph (the parity reference)."""
        ...

    def describe(self) -> dict[str, Any]:
        """Extra facts for the manifest (e.g. loss curve); JSON-serialisable."""
        ...


def item_popularity(data: Interactions) -> np.ndarray:
    """All-time summed event weight per item (float32), the basis of popularity percentiles."""
    return np.bincount(data.item, weights=data.weight, minlength=data.n_items).astype(np.float32)
