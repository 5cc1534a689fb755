"""ONNX graphs vs their numpy references: same scores (1e-4), same top-K except for ties."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shelfwise import onnx_export as ox

N, D, U = 300, 8, 12


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _assert_same(onnx_out: list[np.ndarray], ref: tuple[np.ndarray, np.ndarray]) -> None:
    scores, indices = onnx_out
    ref_scores, ref_indices = ref
    assert scores.dtype == np.float32 and indices.dtype == np.int64
    assert scores.shape == ref_scores.shape
    finite = np.isfinite(ref_scores)
    assert np.array_equal(np.isfinite(scores), finite)
    np.testing.assert_allclose(scores[finite], ref_scores[finite], rtol=1e-4, atol=1e-4)
    # Identical ranking, except where two neighbouring scores tie within float noise.
    differ = indices != ref_indices
    if differ.any():
        ties = np.isclose(scores[differ], ref_scores[differ], rtol=1e-4, atol=1e-5)
        assert ties.all(), (indices, ref_indices)
    # An excluded item never appears with a finite score.
    assert np.all(np.isfinite(scores) | ~finite)


@pytest.fixture(scope="module")
def factor() -> ox.FactorModel:
    rng = np.random.default_rng(7)
    items = rng.normal(size=(N, D))
    return ox.FactorModel.create(items, rng.normal(size=(U, D)), ox.als_projection(items, 0.5))


@pytest.fixture(scope="module")
def neighbour() -> ox.NeighbourModel:
    rng = np.random.default_rng(8)
    m = 6
    idx = rng.integers(0, N, size=(N, m))
    val = rng.random((N, m)).astype(np.float32)
    val[:, -1] = 0.0  # padding slots
    lengths = rng.integers(0, 7, size=U)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    return ox.NeighbourModel.create(
        idx,
        val,
        indptr,
        rng.integers(0, N, size=indptr[-1]),
        rng.choice([1.0, 2.0, 4.0, 8.0], size=indptr[-1]),
        prior=rng.random(N) * 1e-4,
    )


@pytest.fixture(scope="module")
def factor_sessions(factor: ox.FactorModel) -> dict[bool, ort.InferenceSession]:
    return {f16: _session(ox.build_factor_model(factor, float16=f16)) for f16 in (False, True)}


@pytest.fixture(scope="module")
def neighbour_session(neighbour: ox.NeighbourModel) -> ort.InferenceSession:
    return _session(ox.build_neighbour_model(neighbour))


requests = st.fixed_dictionaries(
    {
        "user_index": st.integers(-1, U - 1),
        "history": st.lists(
            st.tuples(st.integers(0, N - 1), st.sampled_from([1.0, 2.0, 4.0, 8.0])), max_size=20
        ),
        "excluded": st.lists(st.integers(0, N - 1), max_size=50),
        "k": st.integers(0, N),
    }
)


def _inputs(req: dict) -> tuple[list[int], list[float], np.ndarray]:
    items = [h for h, _ in req["history"]]
    weights = [w for _, w in req["history"]]
    mask = np.zeros(N, bool)
    mask[req["excluded"]] = True
    return items, weights, mask


@settings(max_examples=40, deadline=None)
@given(req=requests, f16=st.booleans())
def test_factor_graph_matches_reference(
    factor: ox.FactorModel, factor_sessions: dict[bool, ort.InferenceSession], req: dict, f16: bool
) -> None:
    items, weights, mask = _inputs(req)
    feeds = ox.feeds(
        N,
        user_index=req["user_index"],
        history_items=items,
        history_weights=weights,
        exclude_mask=mask,
        k=req["k"],
    )
    out = factor_sessions[f16].run(None, feeds)
    ref = ox.factor_reference(factor, req["user_index"], items, weights, mask, req["k"], float16=f16)
    _assert_same(out, ref)


@settings(max_examples=40, deadline=None)
@given(req=requests)
def test_neighbour_graph_matches_reference(
    neighbour: ox.NeighbourModel, neighbour_session: ort.InferenceSession, req: dict
) -> None:
    items, weights, mask = _inputs(req)
    feeds = ox.feeds(
        N,
        user_index=req["user_index"],
        history_items=items,
        history_weights=weights,
        exclude_mask=mask,
        k=req["k"],
    )
    out = neighbour_session.run(None, feeds)
    _assert_same(out, ox.neighbour_reference(neighbour, req["user_index"], items, weights, mask, req["k"]))


def test_popularity_graph_matches_reference_and_excludes() -> None:
    pop = np.arange(N, dtype=np.float32)
    session = _session(ox.build_popularity_model(pop))
    mask = np.zeros(N, bool)
    mask[[N - 1, N - 3]] = True
    scores, indices = session.run(None, ox.feeds(N, exclude_mask=mask, k=3))
    assert indices.tolist() == [N - 2, N - 4, N - 5]
    _assert_same([scores, indices], ox.popularity_reference(pop, mask, 3))


def test_fold_in_is_weighted_sum_times_projection(factor: ox.FactorModel) -> None:
    """Golden check of the fold-in formula on one hand-built history."""
    session = _session(ox.build_factor_model(factor))
    scores, indices = session.run(None, ox.feeds(N, history_items=[3, 5], history_weights=[1.0, 8.0], k=N))
    user = (1.0 * factor.item_factors[3] + 8.0 * factor.item_factors[5]) @ factor.projection
    expected = factor.item_factors @ user
    np.testing.assert_allclose(scores, np.sort(expected)[::-1], rtol=1e-4, atol=1e-4)
    assert indices[0] == int(np.argmax(expected))


def test_known_user_ignores_history(factor: ox.FactorModel, factor_sessions: dict) -> None:
    session = factor_sessions[False]
    a = session.run(None, ox.feeds(N, user_index=2, history_items=[1, 2], history_weights=[1, 1], k=5))
    b = session.run(None, ox.feeds(N, user_index=2, k=5))
    assert a[1].tolist() == b[1].tolist()
    assert a[1][0] == int(np.argmax(factor.item_factors @ factor.user_factors[2]))


def test_neighbour_scores_scatter_add_by_hand() -> None:
    """Item 0 neighbours {1: .5, 2: .25}, item 1 neighbours {2: 1}: history 0x2, 1x1."""
    model = ox.NeighbourModel.create(
        np.array([[1, 2], [2, 0], [0, 1]]), np.array([[0.5, 0.25], [1.0, 0.0], [0.0, 0.0]], np.float32)
    )
    session = _session(ox.build_neighbour_model(model))
    scores, indices = session.run(None, ox.feeds(3, history_items=[0, 1], history_weights=[2.0, 1.0], k=3))
    # item 1: 2*0.5 = 1.0; item 2: 2*0.25 + 1*1.0 = 1.5; item 0: 0.
    assert indices.tolist() == [2, 1, 0]
    np.testing.assert_allclose(scores, [1.5, 1.0, 0.0])


def test_graph_io_follows_contract(factor: ox.FactorModel, neighbour: ox.NeighbourModel) -> None:
    for model in (
        ox.build_factor_model(factor),
        ox.build_neighbour_model(neighbour),
        ox.build_popularity_model(np.ones(N)),
    ):
        assert [i.name for i in model.graph.input] == list(ox.INPUT_NAMES)
        assert [o.name for o in model.graph.output] == list(ox.OUTPUT_NAMES)
        mask = model.graph.input[3].type.tensor_type
        assert mask.elem_type == onnx.TensorProto.BOOL and mask.shape.dim[0].dim_value == N
        props = {p.key: p.value for p in model.metadata_props}
        assert props[ox.META_ITEMS] == str(N)
        assert model.opset_import[0].version == ox.OPSET


def test_float16_halves_the_file(factor: ox.FactorModel) -> None:
    big = ox.FactorModel.create(np.ones((5000, 16)))
    assert len(ox.build_factor_model(big, float16=True).SerializeToString()) < 0.6 * len(
        ox.build_factor_model(big).SerializeToString()
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"item_factors": np.ones((3,))}, "2-D"),
        ({"item_factors": np.full((3, 2), np.nan)}, "NaN"),
        ({"item_factors": np.ones((3, 2)), "user_factors": np.ones((2, 3))}, "dimensions"),
        ({"item_factors": np.ones((3, 2)), "projection": np.ones((3, 3))}, "projection"),
    ],
)
def test_factor_model_rejects_bad_arrays(kwargs: dict, message: str) -> None:
    with pytest.raises(ox.ExportError, match=message):
        ox.FactorModel.create(**kwargs)


def test_neighbour_model_rejects_out_of_range() -> None:
    with pytest.raises(ox.ExportError, match="neighbour_indices"):
        ox.NeighbourModel.create(np.array([[5]]), np.array([[1.0]]))
    with pytest.raises(ox.ExportError, match="user_indptr"):
        ox.NeighbourModel.create(np.array([[0]]), np.array([[1.0]]), [1, 0], [0], [1.0])


def test_als_projection_is_ridge_inverse() -> None:
    y = np.array([[1.0, 0.0], [0.0, 2.0]])
    np.testing.assert_allclose(ox.als_projection(y, 1.0), np.diag([1 / 2, 1 / 5]), rtol=1e-6)
