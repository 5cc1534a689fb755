"""The ONNX parity check: the exported graph against the training-side reference, before a bundle is written.

ONNX Runtime and the model's numpy (or PyTorch) reference answer the same sample requests (known
users, anonymous histories, known users with request events); the check also holds the served
scores against the ones the offline evaluation ranked by.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from shelfwise.events import EVENT_WEIGHTS
from shelfwise.training.base import Recommender
from shelfwise.training.data import Interactions


def check_parity(
    model: Recommender,
    graph: onnx.ModelProto | bytes,
    data: Interactions,
    k: int,
    n_users: int,
    seed: int,
) -> dict[str, Any]:
    """ONNX Runtime vs the training-side reference (and vs the scores evaluation used) on sample requests.

    Known users by index, the same users' histories as fold-in requests, and known users with
    request events; scores must agree
    within 1e-4 and top-k must be identical apart from ties.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    serialized = graph if isinstance(graph, bytes) else graph.SerializeToString()
    session = ort.InferenceSession(serialized, opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    users = rng.choice(data.n_users, size=min(n_users, data.n_users), replace=False)
    hist = data.matrix("user")
    kk = min(k, data.n_items)
    max_diff, mismatches, checked = 0.0, 0, 0
    for u in users:
        items = hist.indices[hist.indptr[u] : hist.indptr[u + 1]].astype(np.int64)
        exclude = np.zeros(data.n_items, dtype=bool)
        exclude[items[: len(items) // 2]] = True
        weights = np.full(len(items), EVENT_WEIGHTS["purchase"], dtype=np.float32)
        # known user alone, anonymous history, and known user plus the request's own events
        # (only sequence models read both; the others ignore a known user's request history)
        requests = (
            (int(u), items[:0], weights[:0]),
            (-1, items, weights),
            (int(u), items[-3:], weights[-3:]),
        )
        for user_index, h, w in requests:
            feeds = {
                "user_index": np.array([user_index], np.int64),
                "history_items": h,
                "history_weights": w,
                "exclude_mask": exclude,
                "k": np.array([kk], np.int64),
            }
            got_scores, got_idx = session.run(["scores", "indices"], feeds)
            ref_scores, ref_idx = model.reference(user_index, h, w, exclude, kk)
            finite = np.isfinite(ref_scores)
            if finite.any():
                max_diff = max(max_diff, float(np.max(np.abs(got_scores[finite] - ref_scores[finite]))))
            differ = got_idx != ref_idx
            if differ.any() and not np.allclose(got_scores[differ], ref_scores[differ], rtol=1e-4, atol=1e-5):
                mismatches += 1
            checked += 1
    # The scores the offline evaluation ranked by (the user's items excluded, as there) are the
    # served top-k scores for known users.
    sample = users[:8].astype(np.int64)
    eval_scores = np.array(model.score_users(sample), dtype=np.float32, copy=True)
    none_i, none_w = np.zeros(0, np.int64), np.zeros(0, np.float32)
    served, evaluated = [], []
    for row, u in enumerate(sample.tolist()):
        seen = np.zeros(data.n_items, dtype=bool)
        seen[hist.indices[hist.indptr[u] : hist.indptr[u + 1]]] = True
        served.append(model.reference(u, none_i, none_w, seen, kk)[0])
        evaluated.append(-np.sort(-np.where(seen, -np.inf, eval_scores[row]))[:kk])
    eval_diff = 0.0
    if len(sample):
        a, b = np.stack(served), np.stack(evaluated).astype(np.float32)
        both = np.isfinite(a) & np.isfinite(b)
        eval_diff = float(np.max(np.abs(a - b)[both], initial=0.0))
        if (np.isfinite(a) != np.isfinite(b)).any():
            eval_diff = float("inf")
    return {
        "requests": checked,
        "max_abs_score_diff": max_diff,
        "topk_mismatches": mismatches,
        "evaluation_vs_reference_max_diff": eval_diff,
        "ok": max_diff <= 1e-4 and mismatches == 0 and eval_diff <= 1e-4,
    }
