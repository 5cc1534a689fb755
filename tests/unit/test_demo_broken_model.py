"""The demo's broken model: scores permuted over items at the graph's edges, for every graph kind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from shelfwise_local.bench.serve import build_synthetic_bundle
from shelfwise_local.demo.broken import shuffled_scores_graph


def _run(model: onnx.ModelProto, mask: np.ndarray, user: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    scores, indices = session.run(
        ["scores", "indices"],
        {
            "user_index": np.array([user], np.int64),
            "history_items": np.zeros(0, np.int64),
            "history_weights": np.zeros(0, np.float32),
            "exclude_mask": mask,
            "k": np.array([k], np.int64),
        },
    )
    return scores, indices


@pytest.mark.parametrize("int8_candidates", [False, True])
def test_the_broken_graph_gives_item_pi_j_the_score_of_j_and_keeps_exclusions(
    tmp_path: Path, int8_candidates: bool
) -> None:
    bundle = build_synthetic_bundle(
        tmp_path / "b", n_items=3000, dim=16, n_users=20, int8_candidates=int8_candidates
    )
    good = onnx.load(str(bundle / "model.onnx"))
    seed = 7
    perm = np.random.default_rng(seed).permutation(3000)
    broken = shuffled_scores_graph(onnx.load(str(bundle / "model.onnx")), seed)
    mask = np.random.default_rng(1).random(3000) < 0.3
    for user in range(5):
        scores, indices = _run(broken, mask, user, 20)
        ref_scores, ref_indices = _run(good, mask[perm], user, 20)
        assert np.array_equal(indices, perm[ref_indices]) and np.allclose(scores, ref_scores)
        assert not mask[indices].any()  # excluded items stay excluded
        _, good_indices = _run(good, mask, user, 20)
        assert len(set(indices.tolist()) & set(good_indices.tolist())) < 10  # a different list
