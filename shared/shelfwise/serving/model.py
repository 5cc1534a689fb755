"""A loaded model version: verified bundle, ONNX Runtime session and catalogue, scored in one call."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shelfwise.bundle import (
    MODEL_FILE,
    Bundle,
    GraphIO,
    check_graph_io,
    read_bundle,
)
from shelfwise.serving.catalog import Catalog
from shelfwise.serving.errors import ModelLoadError


def session_options(intra_op_threads: int = 1) -> Any:
    """ONNX Runtime options for a small, latency-bound function: fixed threads, no spinning."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return opts


@dataclass
class LoadedModel:
    """One servable version. Immutable after load, so requests share it without locks."""

    version: str
    kind: str
    bundle: Bundle
    catalog: Catalog
    session: Any
    loaded_at: float
    load_seconds: float
    # Seconds the fetch took (download and checksums, or checking the cached copy); set by ModelLoader.
    fetch_seconds: float = 0.0

    @classmethod
    def from_directory(
        cls, directory: str | Path, version: str, intra_op_threads: int = 1, *, checksums: bool = True
    ) -> LoadedModel:
        """Verify the bundle in ``directory``, create the session, check its I/O, build the catalogue.

        ``checksums=False`` when the caller has just verified them (:func:`download_bundle` does).
        """
        import onnxruntime as ort

        t0 = time.perf_counter()
        bundle = read_bundle(directory, checksums=checksums)
        try:
            session = ort.InferenceSession(
                str(Path(directory) / MODEL_FILE),
                session_options(intra_op_threads),
                providers=["CPUExecutionProvider"],
            )
        except Exception as exc:  # onnxruntime raises its own exception types for bad graphs
            raise ModelLoadError(f"version {version}: onnxruntime cannot load model.onnx: {exc}") from exc
        graph = GraphIO.from_session(session)
        check_graph_io(bundle, graph)
        _warm_up(session, bundle.n_items, version)
        catalog = Catalog.from_bundle(bundle)
        return cls(
            version=version,
            kind=graph.metadata.get("shelfwise.kind", str(bundle.manifest.get("algorithm", "unknown"))),
            bundle=bundle,
            catalog=catalog,
            session=session,
            loaded_at=time.time(),
            load_seconds=time.perf_counter() - t0,
        )

    @property
    def n_items(self) -> int:
        return self.catalog.n_items

    def score(
        self,
        user_index: int,
        history_items: np.ndarray,
        history_weights: np.ndarray,
        exclude_mask: np.ndarray,
        k: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, indices) from the graph, excluded items (-inf) dropped."""
        k = min(k, self.n_items)
        if k <= 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        scores, indices = self.session.run(
            None,
            {
                "user_index": np.array([user_index], dtype=np.int64),
                "history_items": history_items,
                "history_weights": history_weights,
                "exclude_mask": exclude_mask,
                "k": np.array([k], dtype=np.int64),
            },
        )
        keep = np.isfinite(scores)
        if not keep.all():
            scores, indices = scores[keep], indices[keep]
        return scores, indices


def _warm_up(session: Any, n_items: int, version: str) -> None:
    """Run the graph once before it serves: a version that cannot run is refused at load, and the
    first request it answers (after a cold start or a swap) does not pay ONNX Runtime's first-run
    allocations (about 10-20 ms)."""
    if n_items <= 0:
        return
    try:
        session.run(
            None,
            {
                "user_index": np.array([-1], dtype=np.int64),
                "history_items": np.zeros(0, dtype=np.int64),
                "history_weights": np.zeros(0, dtype=np.float32),
                "exclude_mask": np.zeros(n_items, dtype=bool),
                "k": np.array([1], dtype=np.int64),
            },
        )
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelLoadError(f"version {version}: the graph fails on a warm-up request: {exc}") from exc
