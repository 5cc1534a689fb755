"""The sequential model: PyTorch training, its ONNX graph against the PyTorch reference, fold-in of
request events, and the guarded model selection that decides whether it is served."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pytest

from shelfwise import bundle as bundle_io
from shelfwise import onnx_sequential as osq
from shelfwise.errors import InputError
from shelfwise.events import EVENT_WEIGHTS
from shelfwise.training.data import Interactions, interactions_from_table, temporal_split
from shelfwise.training.guard import fallback_on_test, guarded_choice, paired_bootstrap
from shelfwise.training.parity import check_parity
from shelfwise.training.search import evaluate_model

torch = pytest.importorskip("torch", reason="the sequential family needs PyTorch (make torch)")

from shelfwise.training.sequential import (  # noqa: E402
    MIN_HORIZON_DAYS,
    Sequential,
    Targets,
    user_sequences,
    visit_horizon_days,
)
from tests.unit.test_training import synthetic_events  # noqa: E402

TINY = {"dim": 16, "blocks": 2, "heads": 2, "max_len": 8, "epochs": 2, "batch_size": 32, "seed": 3}


@pytest.fixture(scope="module")
def data() -> Interactions:
    return interactions_from_table(synthetic_events(n_users=80, n_items=40))


@pytest.fixture(scope="module")
def model(data: Interactions) -> Sequential:
    return Sequential(**TINY, threads=1).fit(data)


@pytest.fixture(scope="module")
def session(model: Sequential) -> Any:
    return ort.InferenceSession(model.to_onnx().SerializeToString(), providers=["CPUExecutionProvider"])


def run(session: Any, n_items: int, user: int, items: Any, weights: Any, mask: Any, k: int) -> Any:
    from shelfwise.onnx_export import feeds

    f = feeds(n_items, user_index=user, history_items=items, history_weights=weights, exclude_mask=mask, k=k)
    return session.run(["scores", "indices"], f)


def assert_same(got: Any, ref: Any) -> None:
    """Scores within 1e-4 and the same top-k except between tied scores."""
    (gs, gi), (rs, ri) = got, ref
    np.testing.assert_allclose(gs, rs, rtol=0, atol=1e-4)
    differ = gi != ri
    assert np.allclose(gs[differ], rs[differ], atol=1e-5)


def test_type_tokens_order_event_types() -> None:
    kinds = ["view", "click", "add_to_wishlist", "add_to_cart", "purchase"]
    tokens = osq.type_tokens(np.array([EVENT_WEIGHTS[k] for k in kinds], np.float32))
    assert tokens.tolist() == [1, 2, 3, 4, 5]
    assert osq.type_tokens(np.array([EVENT_WEIGHTS["rating"]], np.float32)).tolist() == [3]


def test_user_sequences_merge_consecutive_repeats_keep_strongest_type() -> None:
    ts = pa.array([1, 2, 3, 4, 5], pa.timestamp("ms", tz="UTC"))
    table = pa.table(
        {
            "event_type": ["view", "add_to_cart", "view", "purchase", "view"],
            "user_id": ["u"] * 5,
            "item_id": ["a", "a", "b", "a", "a"],
            "timestamp": ts,
            "weight": pa.array([1.0, 4.0, 1.0, 8.0, 1.0], pa.float32()),
        }
    )
    indptr, items, types = user_sequences(interactions_from_table(table))
    assert indptr.tolist() == [0, 3]
    assert items.tolist() == [0, 1, 0]  # a (view+cart), b, a (purchase+view)
    assert types.tolist() == [4, 1, 5]


def test_user_sequences_mark_the_last_token_of_each_visit() -> None:
    """A token ends its visit when the next one starts another session (a merged repeat counts by
    the session of its last event); every user's last token ends one; the mark rides on the type."""
    table = pa.table(
        {
            "event_type": ["view", "view", "view", "add_to_cart", "view", "purchase"],
            "user_id": ["u", "u", "u", "u", "u", "w"],
            "session_id": ["s1", "s1", "s2", "s2", "s3", "s9"],
            "item_id": ["a", "b", "b", "c", "d", "c"],
            "timestamp": pa.array([1, 2, 3, 4, 5, 6], pa.timestamp("ms", tz="UTC")),
            "weight": pa.array([1.0, 1.0, 1.0, 4.0, 1.0, 8.0], pa.float32()),
        }
    )
    data = interactions_from_table(table)
    indptr, items, types = user_sequences(data, visit_ends=True)
    assert indptr.tolist() == [0, 4, 5]
    assert items.tolist() == [0, 1, 2, 3, 2]  # a, b (s1 into s2, merged), c, d | c
    end = osq.VISIT_END
    assert types.tolist() == [1, 1, 4 + end, 1 + end, 5 + end]
    assert user_sequences(data)[2].tolist() == [1, 1, 4, 1, 5]
    assert osq.type_tokens(osq.type_weights(types)).tolist() == [1, 1, 4, 1, 5]  # as a request sends them


def test_the_default_horizon_follows_the_logs_gaps_between_visits() -> None:
    """A week, or three median gaps between a user's visits when the shop's users come back slowly."""

    def log(gap_days: float, visits: int = 5) -> Interactions:
        day = 86_400_000
        ts = [int(v * gap_days * day) + e for v in range(visits) for e in (0, 60_000)]  # two events a visit
        n = len(ts)
        return interactions_from_table(
            pa.table(
                {
                    "event_type": ["view"] * n,
                    "user_id": ["u"] * n,
                    "session_id": [f"s{i // 2}" for i in range(n)],
                    "item_id": [f"i{i}" for i in range(n)],
                    "timestamp": pa.array(ts, pa.timestamp("ms", tz="UTC")),
                    "weight": pa.array([1.0] * n, pa.float32()),
                }
            )
        )

    assert visit_horizon_days(log(10.0)) == pytest.approx(30.0)
    assert visit_horizon_days(log(1.0)) == MIN_HORIZON_DAYS
    assert visit_horizon_days(log(10.0, visits=1)) == MIN_HORIZON_DAYS  # nobody came back


def test_targets_skip_items_the_user_already_touched() -> None:
    """Two users: a b a c b d (one per hour) and e e f (days apart); token positions 0..8."""
    indptr = np.array([0, 6, 9])
    items = np.array([0, 1, 0, 2, 1, 3, 4, 4, 5])
    hour, day = 3_600_000, 86_400_000
    ts = np.array([0, 1, 2, 3, 4, 5, 0, 2, 4], np.int64) * np.array([hour] * 6 + [day] * 3)
    rng = np.random.default_rng(0)
    draw = {mode: Targets(indptr, items, ts, mode, 1.0).draw(np.arange(9), rng) for mode in ("next", "new")}
    assert draw["next"].tolist() == [1, 0, 2, 1, 3, -1, 4, 5, -1]
    assert draw["new"].tolist() == [1, 2, 2, 3, 3, -1, 5, 5, -1]  # the next item not seen so far
    future = Targets(indptr, items, ts, "future", 1.0)
    allowed = [{1, 2, 3}, {2, 3}, {2, 3}, {3}, {3}, set(), set(), set(), set()]  # e's f is 2 days later
    for seed in range(20):
        got = future.draw(np.arange(9), np.random.default_rng(seed))
        for pos, want in enumerate(allowed):
            assert (got[pos] in want) if want else got[pos] == -1
    seen = {int(future.draw(np.array([0]), np.random.default_rng(s))[0]) for s in range(40)}
    assert seen == {1, 2, 3}  # drawn afresh: every later new item within the horizon turns up
    padded = future.draw(np.array([[-1, -1, 3]]), rng)
    assert padded.tolist() == [[-1, -1, 3]]
    with pytest.raises(InputError, match="targets"):
        Sequential(targets="last")


def test_onnx_graph_matches_pytorch_reference(data: Interactions, model: Sequential, session: Any) -> None:
    """Known users, anonymous histories, known users plus request events, masks: 1e-4, same top-k."""
    parity = check_parity(model, model.to_onnx(), data, k=10, n_users=20, seed=1)
    assert parity["ok"], parity
    assert parity["max_abs_score_diff"] <= 1e-4
    rng = np.random.default_rng(0)
    n = data.n_items
    for user in (-1, 0, 5, data.n_users - 1):
        for length in (0, 1, 3, 20):  # 20 > max_len: the graph keeps the last 8 tokens
            items = rng.integers(0, n, length)
            weights = rng.choice([1.0, 2.0, 4.0, 8.0], length).astype(np.float32)
            mask = rng.random(n) < 0.3
            got = run(session, n, user, items, weights, mask, 10)
            assert_same(got, model.reference(user, items, weights, mask, 10))
            assert not set(got[1].tolist()) & set(np.flatnonzero(mask).tolist())


def test_known_user_request_events_are_folded_in(data: Interactions, model: Sequential, session: Any) -> None:
    """A known user's stored events are followed by the request's: the answer changes, and equals an
    anonymous request carrying the stored events followed by the same events."""
    arrays = model.export_arrays()
    n = data.n_items
    mask = np.zeros(n, bool)
    user = int(np.argmax(np.diff(arrays.user_indptr)))
    stored_items, stored_types = arrays.user_history(user)
    assert stored_items.size == TINY["max_len"]  # the graph stores the last max_len events
    request = np.array([1, 2], np.int64)
    request_w = np.array([8.0, 4.0], np.float32)
    alone = run(session, n, user, [], [], mask, n)
    with_session = run(session, n, user, request, request_w, mask, n)
    assert not np.allclose(alone[0], with_session[0])
    # the stored tokens (the last one ends its visit) followed by the request's, inside the visit
    assert stored_types[-1] > osq.VISIT_END
    sequence = (
        np.concatenate([stored_items, request])[-TINY["max_len"] :],
        np.concatenate([stored_types, osq.type_tokens(request_w)])[-TINY["max_len"] :],
    )
    expected = np.sort(model._scores([sequence])[0])[::-1]
    np.testing.assert_allclose(with_session[0], expected, atol=1e-4)
    # an anonymous request with the same events reads them all as one visit: another answer
    stored_w = osq.type_weights(stored_types)
    anonymous = run(
        session,
        n,
        -1,
        np.concatenate([stored_items, request]),
        np.concatenate([stored_w, request_w]),
        mask,
        n,
    )
    assert not np.allclose(with_session[0], anonymous[0], atol=1e-4)
    # the stored sequence is what evaluation scored for that user
    np.testing.assert_allclose(
        np.sort(alone[0])[::-1], np.sort(model.score_users(np.array([user]))[0])[::-1], atol=1e-4
    )


def test_training_is_seeded(data: Interactions, model: Sequential) -> None:
    again = Sequential(**TINY, threads=1).fit(data)
    np.testing.assert_array_equal(again.score_users(np.arange(5)), model.score_users(np.arange(5)))
    assert again.loss_curve == model.loss_curve and len(model.loss_curve) == TINY["epochs"]


def test_item_embeddings_start_from_the_logs_als_factors(data: Interactions) -> None:
    from shelfwise.training.mf import ALS
    from shelfwise.training.sequential import EMBEDDING_STD, INIT_ALS_ALPHA, INIT_ALS_REGULARIZATION

    frozen = {**TINY, "epochs": 1, "lr": 0.0}  # no step moves a weight: the start is what stays
    started = Sequential(**frozen, threads=1).fit(data).net.item_emb.weight[1:].detach().numpy()
    als = ALS(TINY["dim"], INIT_ALS_REGULARIZATION, INIT_ALS_ALPHA, seed=TINY["seed"], threads=1)
    factors = als.fit(data).item_factors
    np.testing.assert_allclose(started, factors * (EMBEDDING_STD / factors.std()), rtol=1e-5, atol=1e-7)
    random = Sequential(**frozen, init="random", threads=1).fit(data).net.item_emb.weight[1:].detach().numpy()
    assert abs(float(np.corrcoef(random.ravel(), factors.ravel())[0, 1])) < 0.2
    with pytest.raises(InputError, match="init"):
        Sequential(init="svd")


def test_early_stopping_on_validation_keeps_best_epoch(data: Interactions) -> None:
    events: list[dict[str, Any]] = []
    validation = temporal_split(data, 0.8)
    m = Sequential(**{**TINY, "epochs": 6, "patience": 1}, threads=1)
    m.progress = lambda stage, fields: events.append({"stage": stage, **fields})
    m.fit_validated(validation, "ndcg@10", lambda fitted: evaluate_model(fitted, validation, 10)["ndcg@10"])
    curve = m.validation_curve
    assert [e["epoch"] for e in events] == list(range(1, len(curve) + 1))
    assert all("loss" in e and "validation_ndcg@10" in e for e in events)
    best = int(np.argmax(curve)) + 1
    assert m.params["epochs"] == best
    # each epoch is scored as served (no dropout): the kept weights score exactly the curve's best
    assert evaluate_model(m, validation, 10)["ndcg@10"] == pytest.approx(max(curve), abs=1e-12)
    assert len(curve) == 6 or len(curve) == best + 1  # stopped one epoch after the best (patience 1)


def test_bundle_with_sequential_graph_loads_in_serving(
    data: Interactions, model: Sequential, tmp_path: Any
) -> None:
    from shelfwise.serving.model import LoadedModel

    hist = data.history_matrix()
    bundle_io.write_bundle(
        tmp_path,
        model=model.to_onnx(),
        items={
            "item_id": data.item_ids,
            "category": data.item_info["category"],
            "title": data.item_info["title"],
            "price": data.item_info["price"],
            "popularity": np.ones(data.n_items, np.float32),
        },
        manifest={"algorithm": "sequential", "version": "v1"},
        users=data.user_ids,
        purchased=(hist.indptr, hist.indices),
    )
    loaded = LoadedModel.from_directory(tmp_path, "v1")
    assert loaded.kind == "sequential"
    items, weights = np.array([3, 4], np.int64), np.array([1.0, 8.0], np.float32)
    scores, indices = loaded.score(2, items, weights, np.zeros(data.n_items, bool), 5)
    ref_scores, ref_indices = model.reference(2, items, weights, np.zeros(data.n_items, bool), 5)
    assert_same((scores, indices), (ref_scores, ref_indices))


# --------------------------------------------------------------------------- the guard


def test_paired_bootstrap_sees_a_real_gain_and_not_noise() -> None:
    rng = np.random.default_rng(0)
    base = rng.random(2000)
    assert paired_bootstrap(base, base + 0.05, seed=1)["p_value"] < 0.01
    noise = paired_bootstrap(base, base + rng.normal(0, 0.2, 2000), seed=1)
    assert noise["p_value"] > 0.05 or abs(noise["gain"]) < 0.02
    worse = paired_bootstrap(base, base - 0.05, seed=1)
    assert worse["p_value"] > 0.99 and worse["gain"] < 0


def test_guard_keeps_the_simpler_model_without_a_significant_gain() -> None:
    rng = np.random.default_rng(1)
    pop = rng.random(500) * 0.2
    knn = pop + 0.1  # clearly better than popularity
    noise = rng.normal(0, 0.1, 500)
    seq = knn + (noise - noise.mean()) + 0.002  # a hair better on average, with per-user noise
    chosen, record = guarded_choice(
        ("popularity", "popularity_all", "itemknn", "sequential"),
        {"popularity": pop, "popularity_all": pop + 1.0, "itemknn": knn, "sequential": seq},
        ("popularity", "popularity_all", "itemknn", "als", "sequential"),
    )
    assert seq.mean() > knn.mean()  # the naive rule would take it
    assert chosen == "itemknn"
    assert record["order"] == ["popularity", "itemknn", "sequential"]  # all-time popularity never competes
    assert [s["replaces"] for s in record["steps"]] == [True, False]
    assert "does not beat itemknn significantly" in record["steps"][1]["reason"]
    chosen, _ = guarded_choice(
        ("popularity", "itemknn", "sequential"),
        {"popularity": pop, "itemknn": knn, "sequential": knn + 0.05},
        ("popularity", "itemknn", "sequential"),
    )
    assert chosen == "sequential"


def test_test_window_fallback_never_serves_below_popularity() -> None:
    metrics = {"popularity": {"ndcg@10": 0.08}, "als": {"ndcg@10": 0.07}, "itemknn": {"ndcg@10": 0.09}}
    served, why = fallback_on_test("als", metrics, "ndcg@10")
    assert served == "popularity" and why and "below popularity" in why
    assert fallback_on_test("itemknn", metrics, "ndcg@10") == ("itemknn", None)


def test_job_with_the_sequential_family_reports_selection_and_curves(tmp_path: Any) -> None:
    from shelfwise.training.job import Progress, TrainConfig, run_training

    events: list[dict[str, Any]] = []
    result = run_training(
        synthetic_events(n_users=80, n_items=40),
        tmp_path / "bundle",
        TrainConfig(
            search="none", families=("popularity", "itemknn", "sequential"), threads=1, parity_users=8
        ),
        progress=Progress(stream=None, sinks=[events.append]),
    )
    ev = result.manifest["evaluation"]
    assert set(ev["models"]) == {"popularity", "itemknn", "sequential"}
    assert ev["selection"]["served"] == result.manifest["algorithm"]
    assert [s["challenger"] for s in ev["selection"]["steps"]] == ["itemknn", "sequential"]
    curve = ev["curves"]["sequential"]
    assert len(curve["loss"]) == len(curve["validation_ndcg@10"]) >= 1
    assert any(e["stage"] == "epoch" and "validation_ndcg@10" in e for e in events)
    report = (tmp_path / "bundle" / "report.html").read_text()
    assert "sequential: training loss per epoch" in report and "Model selection" in report


def test_families_named_on_the_command_line_keep_the_baselines() -> None:
    from shelfwise.training.search import FAMILIES, parse_families

    assert parse_families("") == FAMILIES and "sequential" not in FAMILIES
    assert parse_families("sequential") == ("popularity", "itemknn", "sequential")
    assert parse_families("als, sequential,als") == ("popularity", "itemknn", "als", "sequential")


def test_extra_families_join_the_named_or_the_default_ones_and_unknown_names_are_refused() -> None:
    from shelfwise.errors import InputError
    from shelfwise.training.search import FAMILIES, parse_families

    assert parse_families("", "sequential") == (*FAMILIES, "sequential")
    assert parse_families("als", "sequential") == ("popularity", "itemknn", "als", "sequential")
    assert parse_families("", "") == FAMILIES
    with pytest.raises(InputError, match="unknown model family 'transformer'"):
        parse_families("", "transformer")


def test_a_torch_family_can_train_only_where_pytorch_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from shelfwise.training import trigger

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda m: None if m == "torch" else real(m))
    assert trigger.training_available("")
    assert not trigger.training_available("sequential")
