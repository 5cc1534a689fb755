"""ONNX graphs vs their numpy references: same scores (1e-4), same top-K except for ties."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shelfwise import onnx_candidates as oc
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


# --------------------------------------------------------------------------- int8 candidate stage

NC, DC, UC = 3000, 16, 20


@pytest.fixture(scope="module")
def big_factor() -> ox.FactorModel:
    """Enough items that the candidates (C = max(4k, k + 128)) are a small part of the catalogue."""
    rng = np.random.default_rng(11)
    items = rng.normal(size=(NC, DC)) * rng.lognormal(0, 0.3, size=(NC, 1))
    return ox.FactorModel.create(items, rng.normal(size=(UC, DC)), ox.als_projection(items, 0.5))


@pytest.fixture(scope="module")
def candidate_session(big_factor: ox.FactorModel) -> ort.InferenceSession:
    return _session(oc.build_factor_candidate_model(big_factor))


@pytest.mark.parametrize("excluded_share", [0.0, 0.5, 0.99])
@pytest.mark.parametrize("k", [0, 1, 20, 500, NC])
def test_candidate_graph_matches_exact_reference(
    big_factor: ox.FactorModel, candidate_session: ort.InferenceSession, excluded_share: float, k: int
) -> None:
    rng = np.random.default_rng(k + int(100 * excluded_share))
    for user in (-1, 0, 7, UC - 1):
        hist = rng.integers(0, NC, size=0 if user >= 0 else 6)
        weights = rng.choice([1.0, 2.0, 8.0], size=hist.size)
        mask = rng.random(NC) < excluded_share
        feed = ox.feeds(
            NC, user_index=user, history_items=hist, history_weights=weights, exclude_mask=mask, k=k
        )
        out = candidate_session.run(None, feed)
        _assert_same(out, ox.factor_reference(big_factor, user, hist, weights, mask, k))


def test_candidate_graph_breaks_ties_and_pads_like_the_exact_graph() -> None:
    """Duplicated rows tie exactly: lower index first; k beyond the allowed items pads with -inf."""
    rng = np.random.default_rng(3)
    base = rng.normal(size=(50, 8))
    model = ox.FactorModel.create(np.tile(base, (60, 1)), rng.normal(size=(2, 8)))
    n = model.item_factors.shape[0]
    session = _session(oc.build_factor_candidate_model(model))
    exact = _session(ox.build_factor_model(model))
    mask = np.ones(n, bool)
    mask[rng.choice(n, size=10, replace=False)] = False
    for m, k in ((np.zeros(n, bool), 20), (mask, 50)):
        feed = ox.feeds(n, user_index=1, exclude_mask=m, k=k)
        scores, indices = session.run(None, feed)
        ref_scores, ref_indices = ox.factor_reference(model, 1, [], [], m, k)
        assert indices.tolist() == ref_indices.tolist()
        assert indices.tolist() == exact.run(None, feed)[1].tolist()
        np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-6)
    assert np.isneginf(scores[10:]).all() and np.isfinite(scores[:10]).all()


def test_export_uses_candidate_graph_when_the_check_passes(big_factor: ox.FactorModel) -> None:
    graph, record = oc.export_factor_model(big_factor, check_ks=(20, 500), check_users=40)
    assert record["graph"] == "int8-candidates"
    assert record["candidate_check"]["ok"] and record["candidate_check"]["requests_checked"] == 80
    props = {p.key: p.value for p in graph.metadata_props}
    assert props[ox.META_SCORING] == "int8-candidates"
    assert [i.name for i in graph.graph.input] == list(ox.INPUT_NAMES)
    assert [o.name for o in graph.graph.output] == list(ox.OUTPUT_NAMES)


def test_export_falls_back_to_exact_graph_when_int8_changes_topk() -> None:
    """One huge item sets the int8 scale, so every other item quantises to 0 and ranks by index."""
    rng = np.random.default_rng(5)
    items = rng.normal(size=(2000, 8)) * 0.01
    items[0] = 1000.0
    model = ox.FactorModel.create(items, rng.normal(size=(10, 8)))
    graph, record = oc.export_factor_model(model, check_users=20)
    assert record["graph"] == "exact"
    assert not record["candidate_check"]["ok"]
    assert record["candidate_check"]["requests_with_changed_topk"] > 0
    props = {p.key: p.value for p in graph.metadata_props}
    assert props[ox.META_SCORING] == "exact"
    feed = ox.feeds(2000, user_index=3, k=20)
    _assert_same(
        _session(graph).run(None, feed), ox.factor_reference(model, 3, [], [], feed["exclude_mask"], 20)
    )


def test_export_without_candidates_skips_the_check(factor: ox.FactorModel) -> None:
    graph, record = oc.export_factor_model(factor, int8_candidates=False)
    assert record == {"graph": "exact", "candidate_check": None}
    assert graph.graph.name == "shelfwise_factor"


def test_candidate_count() -> None:
    assert oc.candidate_count(20, 100_000) == 148
    assert oc.candidate_count(500, 100_000) == 2000
    assert oc.candidate_count(500, 1000) == 1000


def _assert_same_as_candidate_reference(
    session: ort.InferenceSession, model: ox.FactorModel, feed: dict[str, np.ndarray]
) -> None:
    """The graph answers what its numpy twin answers: same indices (but for float near-ties of the
    exact re-scores, whose summation order differs), scores within 1e-5."""
    scores, indices = session.run(None, feed)
    ref_scores, ref_indices = oc.candidate_reference(
        model,
        int(feed["user_index"][0]),
        feed["history_items"],
        feed["history_weights"],
        feed["exclude_mask"],
        int(feed["k"][0]),
    )
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-6)
    differ = indices != ref_indices
    assert np.isclose(ref_scores[differ], scores[differ], rtol=1e-6, atol=1e-6).all()
    assert sorted(indices[differ].tolist()) == sorted(ref_indices[differ].tolist())


@pytest.mark.parametrize("n_items", [5, 256, 1009, NC])
def test_candidate_graph_equals_its_numpy_twin(n_items: int) -> None:
    """Level-by-level selection = one TopK(C) over all items, with and without padding (1009 is
    prime), fewer blocks than C, masks of every density, fold-in and known users."""
    rng = np.random.default_rng(n_items)
    items = rng.normal(size=(n_items, DC)) * rng.lognormal(0, 0.5, size=(n_items, 1))
    model = ox.FactorModel.create(items, rng.normal(size=(UC, DC)), ox.als_projection(items, 0.5))
    session = _session(oc.build_factor_candidate_model(model))
    for i in range(30):
        user = int(rng.integers(-1, UC))
        hist = rng.integers(0, n_items, size=0 if user >= 0 else int(rng.integers(0, 6)))
        mask = rng.random(n_items) < (0.0, 0.05, 0.5, 0.99, 1.0)[i % 5]
        k = int(rng.choice([0, 1, 20, 500, n_items]))
        feed = ox.feeds(
            n_items,
            user_index=user,
            history_items=hist,
            history_weights=np.ones(hist.size),
            exclude_mask=mask,
            k=min(k, n_items),
        )
        _assert_same_as_candidate_reference(session, model, feed)


def test_candidate_graph_equals_its_twin_where_int8_is_wrong() -> None:
    """Every item but one quantises to 0: all integer scores tie, so only the tie rule (lower index,
    across blocks) decides the candidates; the answer then differs from the exact one."""
    rng = np.random.default_rng(5)
    items = rng.normal(size=(2000, 8)) * 0.01
    items[1500] = 1000.0
    model = ox.FactorModel.create(items, rng.normal(size=(10, 8)))
    session = _session(oc.build_factor_candidate_model(model))
    mask = rng.random(2000) < 0.3
    for user, m in ((3, np.zeros(2000, bool)), (4, mask)):
        feed = ox.feeds(2000, user_index=user, exclude_mask=m, k=20)
        _assert_same_as_candidate_reference(session, model, feed)
        exact = ox.factor_reference(model, user, [], [], m, 20)[1]
        assert session.run(None, feed)[1].tolist() != exact.tolist()


def test_candidate_graph_scans_the_items_once_in_integer_codes(big_factor: ox.FactorModel) -> None:
    """No float32 product over all items and no full-length Where: the expensive passes are gone."""
    graph = oc.build_factor_candidate_model(big_factor)
    ops = [node.op_type for node in graph.graph.node]
    assert ops.count("MatMulIntegerToFloat") == 1 and "MatMul" in ops  # MatMul: the candidates only
    inits = {t.name: t for t in graph.graph.initializer}
    assert inits["item_codes_t"].data_type == onnx.TensorProto.UINT8
    assert list(inits["item_codes_t"].dims) == [DC, NC]  # 3000 items fill blocks of 15: no padding
    assert "padding_flags" not in inits
    where = [node for node in graph.graph.node if node.op_type == "Where"]
    assert [node.input[0] for node in where] == ["cand_excluded"]


def test_export_keeps_the_exact_graph_above_the_candidate_dimension_limit() -> None:
    rng = np.random.default_rng(2)
    model = ox.FactorModel.create(rng.normal(size=(40, oc.MAX_CANDIDATE_DIM + 1)))
    with pytest.raises(ox.ExportError, match="dimensions"):
        oc.build_factor_candidate_model(model)
    graph, record = oc.export_factor_model(model)
    assert record["graph"] == "exact" and record["candidate_check"] is None
    assert "dimensions" in record["candidate_skipped"]
    assert graph.graph.name == "shelfwise_factor"


def test_quantise_items_offsets_int8_codes_by_128() -> None:
    items = np.array([[1.0, -0.5], [0.25, -1.0]], np.float32)
    codes, scale = oc.quantise_items(items)
    assert scale == pytest.approx(1 / 127)
    assert codes.dtype == np.uint8
    assert codes.tolist() == [[255, 128 - 64], [128 + 32, 1]]


@pytest.mark.parametrize("blocks", [(4,), (4, 4), (2, 3, 4)])
def test_best_keys_equal_one_topk_over_all_keys(blocks: tuple[int, ...]) -> None:
    """The level-by-level selection returns exactly the c smallest keys (ties to the lower index,
    many ties here), in ascending index order, for every c from 0 to n."""
    n = blocks[0] * 23  # the upper levels need +inf padding
    nodes, inits = oc._best_keys("keys", "c", n, blocks, "chosen")
    graph = onnx.helper.make_graph(
        nodes,
        "best_keys",
        [
            onnx.helper.make_tensor_value_info("keys", onnx.TensorProto.FLOAT, [1, n]),
            onnx.helper.make_tensor_value_info("c", onnx.TensorProto.INT64, [1]),
        ],
        [onnx.helper.make_tensor_value_info("chosen", onnx.TensorProto.INT64, None)],
        inits,
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", ox.OPSET)])
    model.ir_version = ox.IR_VERSION
    session = _session(model)
    rng = np.random.default_rng(len(blocks))
    for keys in (rng.integers(0, 6, n), rng.normal(size=n), np.zeros(n)):
        keys = keys.astype(np.float32)
        for c in range(n + 1):
            (chosen,) = session.run(None, {"keys": keys[None], "c": np.array([c])})
            expected = np.sort(np.argsort(keys, kind="stable")[:c])
            assert chosen.tolist() == expected.tolist(), (keys, c)


def test_candidate_blocks_prefer_a_divisor_near_16() -> None:
    assert oc.candidate_blocks(100_000) == (16, 16)
    assert oc.candidate_blocks(3000) == (15, 16)
    assert oc.candidate_blocks(1009) == (16, 16)  # prime: the keys are padded to 1024


def test_candidate_graph_with_float16_rescoring(big_factor: ox.FactorModel) -> None:
    """float16 stores the re-scoring matrix in half precision; the answers are the fp16 exact ones."""
    graph, record = oc.export_factor_model(big_factor, float16=True, check_ks=(20,), check_users=10)
    assert record["graph"] == "int8-candidates"
    assert "item_factors_f16" in {t.name for t in graph.graph.initializer}
    session = _session(graph)
    mask = np.random.default_rng(4).random(NC) < 0.2
    for user in (0, 5):
        feed = ox.feeds(NC, user_index=user, exclude_mask=mask, k=20)
        _assert_same(
            session.run(None, feed), ox.factor_reference(big_factor, user, [], [], mask, 20, float16=True)
        )
