"""Popularity over a recency window: the baseline every model is reported against, and the fallback."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from shelfwise import onnx_export as ox
from shelfwise.training.base import item_popularity
from shelfwise.training.data import MS_PER_DAY, Interactions


class Popularity:
    """Scores = summed event weight per item in the last ``window_days`` of training (None = all).

    All-time popularity, scaled below one unit of window weight, breaks ties, so items that
    were quiet in the window still come out in a sensible order.
    """

    algorithm = "popularity"

    def __init__(self, window_days: float | None = 30.0) -> None:
        self.params: dict[str, Any] = {"window_days": window_days}
        self.scores: np.ndarray | None = None

    def fit(self, data: Interactions) -> Popularity:
        overall = item_popularity(data).astype(np.float64)
        window = self.params["window_days"]
        if window is None:
            recent = overall
        else:
            start = int(data.ts[-1]) - int(float(window) * MS_PER_DAY)
            sel = data.ts >= start
            recent = np.bincount(data.item[sel], weights=data.weight[sel], minlength=data.n_items)
        tiebreak = overall / (overall.max() * 2.0) if overall.max() > 0 else overall
        self.scores = (recent + tiebreak).astype(np.float32)
        return self

    def _scores(self) -> np.ndarray:
        if self.scores is None:
            raise RuntimeError("fit the model first")
        return self.scores

    def score_users(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self._scores(), (len(users), self._scores().size))

    def to_onnx(self) -> onnx.ModelProto:
        return ox.build_popularity_model(self._scores(), meta={"shelfwise.algorithm": self.algorithm})

    def reference(
        self,
        user_index: int,
        history_items: np.ndarray,
        history_weights: np.ndarray,
        exclude: np.ndarray,
        k: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        return ox.popularity_reference(self._scores(), exclude, k)

    def describe(self) -> dict[str, Any]:
        return {}
