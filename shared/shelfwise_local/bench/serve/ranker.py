"""The neural ranker's serving cost: a synthetic ranker over the retrieval graph, and the same-run
A/B of its graph against the plain retrieval graph it wraps."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import numpy as np

from shelfwise_local.bench._common import pct

RETRIEVAL_GRAPH = "retrieval.onnx"  # beside a ranker bundle: the retrieval graph it wraps


def synthetic_ranker_arrays(
    cats: np.ndarray, fav: np.ndarray, history: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """``Ranker.export_arrays`` of a ranker of the serving cost of a trained one: 11 features, 64 and
    32 hidden units, random weights; ``history`` stored events per user from their favourite category."""
    from shelfwise.training.ranker import FEATURES, ITEM_FEATURES

    n = cats.size
    by_cat = [np.flatnonzero(cats == c) for c in range(int(cats.max()) + 1)]
    user_items = np.concatenate(
        [rng.choice(by_cat[c], size=history) if by_cat[c].size else rng.integers(0, n, history) for c in fav]
    ).astype(np.int32)
    dims = [len(FEATURES), 64, 32, 1]
    arrays: dict[str, np.ndarray] = {
        "item_features": rng.random((n, len(ITEM_FEATURES))).astype(np.float32),
        "item_category": cats.astype(np.int64),
        "user_indptr": np.arange(0, (len(fav) + 1) * history, history, dtype=np.int64),
        "user_items": user_items,
        "user_weights": rng.choice([1.0, 2.0, 4.0, 8.0], user_items.size).astype(np.float32),
        "mu": np.zeros(len(FEATURES), np.float32),
        "sigma": np.ones(len(FEATURES), np.float32),
    }
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        arrays[f"w{i}"] = (rng.normal(size=(a, b)) / np.sqrt(a)).astype(np.float32)
        arrays[f"b{i}"] = np.zeros(b, np.float32)
    return arrays


def synthetic_ranker(
    retrieval: Any, cats: np.ndarray, fav: np.ndarray, history: int, rng: np.random.Generator
) -> Any:
    """The retrieval graph's top-100 re-ranked by :func:`synthetic_ranker_arrays`' MLP."""
    from shelfwise import onnx_ranker

    return onnx_ranker.build_ranker_model(retrieval, synthetic_ranker_arrays(cats, fav, history, rng), 100)


def ranker_ab(bundle_dir: Path, n_items: int, n_users: int, requests: int, history: int) -> dict[str, Any]:
    """The ranker bundle's graph against the plain retrieval graph it wraps, one thread each,
    alternating in blocks of 100 of the same requests (known users; sessions of ``history`` events)."""
    import onnxruntime as ort

    from shelfwise.onnx_export import feeds
    from shelfwise.serving.model import session_options

    sessions = {
        name: ort.InferenceSession(str(path), session_options(1), providers=["CPUExecutionProvider"])
        for name, path in (
            ("ranker", bundle_dir / "model.onnx"),
            ("retrieval", bundle_dir.parent / RETRIEVAL_GRAPH),
        )
    }
    rng = np.random.default_rng(4)
    times: dict[str, dict[str, list[float]]] = {n: {"known": [], "session": []} for n in sessions}
    for _ in range(0, min(requests, 3000), 100):
        block = []
        for _ in range(100):
            if rng.random() < 0.5:
                block.append(("known", feeds(n_items, user_index=int(rng.integers(n_users)), k=20)))
            else:
                h = rng.integers(n_items, size=history)
                w = np.full(history, 2.0, np.float32)
                block.append(("session", feeds(n_items, history_items=h, history_weights=w, k=20)))
        for name, sess in sessions.items():
            for kind, feed in block:
                t = time.perf_counter()
                sess.run(None, feed)
                times[name][kind].append((time.perf_counter() - t) * 1000)
    out: dict[str, Any] = {}
    for name, by_kind in times.items():
        every = by_kind["known"] + by_kind["session"]
        out[name] = {
            "p50_ms": pct(every, 50),
            "p99_ms": pct(every, 99),
            **{f"{kind}_p50_ms": pct(v, 50) for kind, v in by_kind.items()},
        }
    out["ranker_over_retrieval_p50"] = round(out["ranker"]["p50_ms"] / out["retrieval"]["p50_ms"], 2)
    return out
