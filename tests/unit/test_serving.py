"""The recommender: routing, swaps, refusal of bad bundles, cold start, filters, similar items, search."""

from __future__ import annotations

import io
import json
import shutil
import threading
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from moto import mock_aws

from shelfwise import onnx_export as ox
from shelfwise.bundle import Bundle
from shelfwise.bundle import read_bundle as _read_bundle
from shelfwise.registry import Aliases, challenger_share
from shelfwise.served_lists import ServedListError, impression_rows, served_list_line, served_list_rows
from shelfwise.serving import (
    Filters,
    HistoryEvent,
    ImpressionSink,
    ItemNotFoundError,
    ModelLoader,
    ModelUnavailableError,
    Recommender,
    ServingConfig,
    ServingRules,
)
from shelfwise_local.bench.serve import build_synthetic_bundle

N, D, USERS = 300, 8, 40


def read_bundle(path: Path) -> Bundle:
    """The bundle with its text columns as numpy str (items.npz stores them UTF-8 encoded)."""
    bundle = _read_bundle(path)
    bundle.items = {
        k: np.char.decode(v, "utf-8") if v.dtype.kind == "S" else v for k, v in bundle.items.items()
    }
    return bundle


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Published versions: v1 and v2 (different seeds), and v3 corrupted after writing."""
    root = tmp_path_factory.mktemp("remote")
    build_synthetic_bundle(root / "v1", n_items=N, dim=D, n_users=USERS, seed=1, version="v1")
    build_synthetic_bundle(root / "v2", n_items=N, dim=D, n_users=USERS, seed=2, version="v2")
    build_synthetic_bundle(root / "v3", n_items=N, dim=D, n_users=USERS, seed=3, version="v3")
    with open(root / "v3" / "model.onnx", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02\x03")
    return root


class Aliased:
    """Alias state a test can change (stands in for SSM behind Registry.aliases)."""

    def __init__(self, **kwargs: Any) -> None:
        self.value = Aliases(**kwargs)
        self.reads = 0

    def __call__(self) -> Aliases:
        self.reads += 1
        return self.value


def _copy_fetch(remote: Path, gate: threading.Event | None = None):
    def fetch(version: str, directory: Path) -> Path:
        if gate is not None:
            gate.wait(timeout=10)
        if not directory.exists():
            shutil.copytree(remote / version, directory)
        return directory

    return fetch


def _recommender(
    remote: Path,
    tmp_path: Path,
    aliases: Aliased,
    *,
    rules: ServingRules | None = None,
    background: bool = False,
    gate: threading.Event | None = None,
    impressions: ImpressionSink | None = None,
    canary_mode: str = "split",
    interleave_factor: float = 2.0,
) -> Recommender:
    config = ServingConfig(
        model_name="recs",
        cache_dir=str(tmp_path / "cache"),
        alias_ttl_seconds=0,
        rules=rules or ServingRules(),
        canary_mode=canary_mode,  # type: ignore[arg-type]
        interleave_factor=interleave_factor,
    )
    loader = ModelLoader(None, "bucket", "recs", config.cache_dir, fetch=_copy_fetch(remote, gate))
    rec = Recommender(config, loader, aliases, impressions, background=background)
    rec.start()
    return rec


def _factor(remote: Path, version: str) -> tuple[ox.FactorModel, Any]:
    """The factor arrays inside a published graph, to score with the numpy reference."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(remote / version / "model.onnx"))
    arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    fm = ox.FactorModel.create(arrays["item_factors_t"].T, arrays["user_factors"], arrays["projection"])
    return fm, read_bundle(remote / version)


def test_known_user_matches_reference_with_stock_and_purchases_excluded(remote: Path, tmp_path: Path) -> None:
    rec = _recommender(remote, tmp_path, Aliased(champion="v1"))
    fm, bundle = _factor(remote, "v1")
    user = "user-000007"
    uidx = int(np.searchsorted(bundle.users, user))
    out = rec.recommend(user_id=user, k=10)
    assert out.variant == "champion" and out.model_version == "v1" and len(out.items) == 10
    mask = ~bundle.items["in_stock"]
    indptr, bought = bundle.purchased
    mask[bought[indptr[uidx] : indptr[uidx + 1]]] = True
    scores, indices = ox.factor_reference(fm, uidx, [], [], mask, 10)
    assert [i.item_id for i in out.items] == bundle.items["item_id"][indices].tolist()
    np.testing.assert_allclose([i.score for i in out.items], scores, rtol=1e-4, atol=1e-5)
    assert [i.position for i in out.items] == list(range(10))


def test_session_history_folds_in_counts_unknown_and_drops_purchases(remote: Path, tmp_path: Path) -> None:
    rec = _recommender(remote, tmp_path, Aliased(champion="v1"))
    fm, bundle = _factor(remote, "v1")
    ids = bundle.items["item_id"]
    history = [
        HistoryEvent(ids[3], "view"),
        HistoryEvent("no-such-item", "view"),
        HistoryEvent(ids[5], "purchase"),
        HistoryEvent(ids[9], "search"),  # weight 0: not folded in
    ]
    out = rec.recommend(session_id="s-1", history=history, k=8)
    assert out.variant == "champion" and out.unknown_items == 1
    mask = ~bundle.items["in_stock"]
    mask[5] = True
    _, indices = ox.factor_reference(fm, -1, [3, 5], [1.0, 8.0], mask, 8)
    assert [i.item_id for i in out.items] == ids[indices].tolist()
    assert ids[5] not in [i.item_id for i in out.items]


def test_cold_user_gets_popularity_fallback_variant(remote: Path, tmp_path: Path) -> None:
    rec = _recommender(remote, tmp_path, Aliased(champion="v1"))
    bundle = read_bundle(remote / "v1")
    out = rec.recommend(user_id="never-seen", k=5, filters=Filters(categories=(bundle.items["category"][0],)))
    assert out.variant == "fallback" and out.model_version == "popularity@v1"
    in_cat = np.flatnonzero(
        (bundle.items["category"] == bundle.items["category"][0]) & bundle.items["in_stock"]
    )
    expected = in_cat[np.argsort(-bundle.items["popularity"][in_cat], kind="stable")[:5]]
    assert [i.item_id for i in out.items] == bundle.items["item_id"][expected].tolist()


def test_filters_from_request_and_rules(remote: Path, tmp_path: Path) -> None:
    bundle = read_bundle(remote / "v1")
    blocked = bundle.items["category"][1]
    rec = _recommender(
        remote, tmp_path, Aliased(champion="v1"), rules=ServingRules(blocked_categories=(blocked,))
    )
    top = rec.recommend(user_id="user-000001", k=3)
    excluded = top.items[0].item_id
    out = rec.recommend(
        user_id="user-000001",
        k=50,
        filters=Filters(price_max=30.0, exclude_items=(excluded, "ghost"), exclude_categories=("nope",)),
    )
    assert out.unknown_items == 1
    got = [i.item_id for i in out.items]
    assert excluded not in got
    assert all(i.price is not None and i.price <= 30.0 for i in out.items)
    assert all(i.category != blocked for i in out.items)
    none = rec.recommend(user_id="user-000001", k=5, filters=Filters(categories=("no-such-category",)))
    assert none.items == []


def test_routing_is_sticky_and_follows_canary_weight(remote: Path, tmp_path: Path) -> None:
    aliases = Aliased(champion="v1", challenger="v2", canary_weight=0.3)
    rec = _recommender(remote, tmp_path, aliases)
    users = [f"user-{u:06d}" for u in range(USERS)]
    first = {u: rec.recommend(user_id=u, k=3).variant for u in users}
    assert first == {u: rec.recommend(user_id=u, k=3).variant for u in users}
    for u, variant in first.items():
        assert variant == ("challenger" if challenger_share(u) < 0.3 else "champion")
    assert rec.recommend(user_id=users[0], k=3).model_version in {"v1", "v2"}


def test_alias_change_swaps_after_background_load_without_blocking(remote: Path, tmp_path: Path) -> None:
    aliases = Aliased(champion="v1")
    gate = threading.Event()
    gate.set()
    rec = _recommender(remote, tmp_path, aliases, background=True, gate=gate)
    assert rec.recommend(user_id="user-000002", k=3).model_version == "v1"
    gate.clear()  # the next download hangs until released
    aliases.value = Aliases(champion="v2", previous="v1")
    for _ in range(5):  # requests keep being answered by v1 while v2 loads
        assert rec.recommend(user_id="user-000002", k=3).model_version == "v1"
    gate.set()
    for _ in range(200):  # traffic drives refreshes; the swap happens on a background thread
        if "v2" in rec.state.models:
            break
        rec.recommend(user_id="user-000002", k=3)
        threading.Event().wait(0.02)
    assert rec.recommend(user_id="user-000002", k=3).model_version == "v2"
    assert set(rec.state.models) == {"v2"}


def test_corrupt_bundle_is_refused_and_last_good_keeps_serving(remote: Path, tmp_path: Path) -> None:
    aliases = Aliased(champion="v1")
    rec = _recommender(remote, tmp_path, aliases)
    aliases.value = Aliases(champion="v3", previous="v1")
    rec.sync()
    out = rec.recommend(user_id="user-000001", k=3)
    assert out.variant == "fallback" and out.model_version == "v1"
    health = rec.health()
    assert health["status"] == "degraded" and health["last_good"] == "v1"
    assert "v3" in health["refused"] and "sha256" in health["refused"]["v3"]
    # A challenger that cannot load sends its share to the champion.
    aliases.value = Aliases(champion="v1", challenger="v3", canary_weight=1.0)
    rec.sync()
    out = rec.recommend(user_id="user-000001", k=3)
    assert (out.variant, out.model_version) == ("champion", "v1")


def test_nothing_loadable_is_unavailable_not_a_crash(remote: Path, tmp_path: Path) -> None:
    rec = _recommender(remote, tmp_path, Aliased(champion="v3"))
    with pytest.raises(ModelUnavailableError):
        rec.recommend(user_id="u", k=3)
    assert rec.health()["status"] == "unavailable"


def test_alias_read_failure_keeps_serving(remote: Path, tmp_path: Path) -> None:
    aliases = Aliased(champion="v1")
    rec = _recommender(remote, tmp_path, aliases)

    def broken() -> Aliases:
        raise RuntimeError("ssm throttled")

    rec._read_aliases = broken
    rec.sync()
    assert rec.recommend(user_id="user-000001", k=2).model_version == "v1"
    assert "throttled" in rec.health()["alias_error"]


def test_similar_uses_neighbour_table_and_rejects_unknown_items(remote: Path, tmp_path: Path) -> None:
    rec = _recommender(remote, tmp_path, Aliased(champion="v1"))
    bundle = read_bundle(remote / "v1")
    item = bundle.items["item_id"][4]
    out = rec.similar(item, k=5)
    ids = [i.item_id for i in out.items]
    assert item not in ids and len(ids) == 5
    allowed = [j for j in bundle.similar_indices[4] if bundle.items["in_stock"][j] and j != 4]
    assert ids == bundle.items["item_id"][allowed[:5]].tolist()
    assert [i.score for i in out.items] == sorted((i.score for i in out.items), reverse=True)
    with pytest.raises(ItemNotFoundError):
        rec.similar("ghost", k=5)


def test_search_matches_titles_and_reranks_candidates(remote: Path, tmp_path: Path) -> None:
    rec = _recommender(remote, tmp_path, Aliased(champion="v1"))
    bundle = read_bundle(remote / "v1")
    word = bundle.items["title"][0].split()[2]  # a noun, e.g. "hat"
    out = rec.search(query=f"{word}s", user_id="user-000003", k=10)
    assert out.items and all(word in (i.title + " " + i.category).lower() for i in out.items)
    assert out.variant == "champion"
    anon = rec.search(query=word, k=10)
    assert anon.variant == "fallback"
    candidates = bundle.items["item_id"][[10, 20, 30]].tolist()
    reranked = rec.search(candidates=[*candidates, "ghost"], user_id="user-000003", k=10)
    assert sorted(i.item_id for i in reranked.items) == sorted(
        c for c, s in zip(candidates, bundle.items["in_stock"][[10, 20, 30]], strict=True) if s
    )
    assert reranked.unknown_items == 1
    assert rec.search(query="zzzz-nothing", k=5).items == []


def test_every_served_list_is_one_log_line_with_its_impressions(remote: Path, tmp_path: Path) -> None:
    out = io.StringIO()
    sink = ImpressionSink(out)
    rec = _recommender(remote, tmp_path, Aliased(champion="v1"), impressions=sink)
    a = rec.recommend(user_id="user-000001", k=4)
    b = rec.recommend(session_id="s-secret", history=[HistoryEvent(a.items[0].item_id, "click")], k=3)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and sink.recorded == 2 and sink.pending() == 0
    docs = [json.loads(line) for line in lines]
    assert all(d["shelfwise"] == "served_list" and d["endpoint"] == "recommendations" for d in docs)
    assert [d["recommendation_id"] for d in docs] == [a.recommendation_id, b.recommendation_id]
    assert docs[0]["items"] == [i.item_id for i in a.items] and docs[0]["k"] == 4
    assert docs[0]["scores"] == [round(i.score, 6) for i in a.items]
    assert (docs[0]["variant"], docs[0]["model_version"]) == ("champion", "v1")
    # No personal data: neither the user nor the session id is written.
    assert "user-000001" not in out.getvalue() and "s-secret" not in out.getvalue()
    rows = [r for d in docs for r in served_list_rows(d)]
    assert len(rows) == 7 and len({r["event_id"] for r in rows}) == 7
    assert [r["position"] for r in rows[:4]] == [0, 1, 2, 3]
    assert all(r["session_id"] == r["recommendation_id"] and "user_id" not in r for r in rows)


def test_interleaved_canary_team_drafts_both_rankings_and_logs_each_items_source(
    remote: Path, tmp_path: Path
) -> None:
    out = io.StringIO()
    aliases = Aliased(champion="v1", challenger="v2", canary_weight=1.0)
    rec = _recommender(remote, tmp_path, aliases, impressions=ImpressionSink(out), canary_mode="interleave")
    champion = _recommender(remote, tmp_path / "b", Aliased(champion="v1"))
    challenger = _recommender(remote, tmp_path / "c", Aliased(champion="v2"))
    k = 6
    for user in ("user-000001", "user-000002", "user-000003"):
        got = rec.recommend(user_id=user, k=k)
        a = [i.item_id for i in champion.recommend(user_id=user, k=k).items]
        b = [i.item_id for i in challenger.recommend(user_id=user, k=k).items]
        assert got.variant == "interleaved" and got.model_version == "v2"
        assert got.sources is not None and len(got.sources) == len(got.item_ids) == k
        assert len(set(got.item_ids)) == k
        # Each team contributes half, and each item is its team's best not yet taken, in order.
        assert got.sources.count("v1") == got.sources.count("v2") == k // 2
        for team, ranking in (("v1", a), ("v2", b)):
            picked = [i for i, s in zip(got.item_ids, got.sources, strict=True) if s == team]
            assert [ranking.index(i) for i in picked] == sorted(ranking.index(i) for i in picked)
    rows = [r for line in out.getvalue().splitlines() for r in served_list_rows(json.loads(line))]
    assert {r["variant"] for r in rows} == {"interleaved"}
    assert sorted({r["model_version"] for r in rows}) == ["v1", "v2"]
    # Without a signal for the user, both would serve popularity: the fallback, not interleaved.
    assert rec.recommend(session_id="anon", k=k).variant == "fallback"
    # Split mode keeps the A/B split.
    split = _recommender(remote, tmp_path / "d", Aliased(champion="v1", challenger="v2", canary_weight=1.0))
    assert split.recommend(user_id="user-000001", k=k).variant == "challenger"


def test_interleaved_canary_interleaves_the_factor_times_the_weights_shoppers(
    remote: Path, tmp_path: Path
) -> None:
    """Team draft gives the challenger half of a list: at factor 2 the interleaved shoppers are twice
    the weight's, so the challenger's share of shown items is the weight, as in a split."""
    from shelfwise.registry import challenger_share

    aliases = Aliased(champion="v1", challenger="v2", canary_weight=0.2)
    users = [f"user-{i:06d}" for i in range(40)]
    for factor in (1.0, 2.0):
        rec = _recommender(
            remote, tmp_path / str(factor), aliases, canary_mode="interleave", interleave_factor=factor
        )
        for user in users:
            want = "interleaved" if challenger_share(user) < 0.2 * factor else "champion"
            assert rec.recommend(user_id=user, k=4).variant == want
    # The split is not widened: its challenger serves exactly the weight's shoppers.
    split = _recommender(remote, tmp_path / "split", aliases, interleave_factor=2.0)
    for user in users:
        want = "challenger" if challenger_share(user) < 0.2 else "champion"
        assert split.recommend(user_id=user, k=4).variant == want


def test_the_sink_writes_to_stdout_at_call_time_and_never_raises(capsys: pytest.CaptureFixture[str]) -> None:
    sink = ImpressionSink()
    sink.record(("r", "champion", "v1", "search", 1, 0.0, ["a"], [1.0]))
    assert json.loads(capsys.readouterr().out)["items"] == ["a"]
    # A list that breaks the contract is still written: the ingest quarantines it, nothing is lost.
    sink.record(("r", "champion", "v1", "search", 1, 0.0, ["a", "b"], [1.0]))
    assert json.loads(capsys.readouterr().out)["scores"] == [1.0]
    # Only what cannot be written at all is dropped (and counted), never raised into the request.
    sink.record(("r", "champion", "v1", "search", 1, 0.0, [object()], [1.0]))  # type: ignore[list-item]
    assert (sink.recorded, sink.dropped) == (2, 1) and capsys.readouterr().out == ""


def test_impression_rows_follow_the_contract() -> None:
    rows = impression_rows(("rid", "challenger", "v9", "search", 2, 1_800_000_000.0, ["x", "y"], [0.9, 0.1]))
    assert rows[1]["position"] == 1 and rows[1]["score"] == 0.1 and rows[0]["timestamp"].endswith("Z")
    assert rows[0]["properties"] == {"endpoint": "search", "k": 2, "schema_version": 1}
    assert rows[0]["event_id"] != rows[1]["event_id"]


@settings(max_examples=200, deadline=None)
@given(
    rec_id=st.text(min_size=1, max_size=40),
    items=st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=8),
    scores=st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=8, max_size=8),
    ts=st.floats(min_value=0, max_value=4e9),
)
def test_a_served_list_line_expands_to_exactly_the_impression_rows(
    rec_id: str, items: list[str], scores: list[float], ts: float
) -> None:
    """The contract between serving and the ingest: line -> rows == impression_rows(served)."""
    served = (rec_id, "fallback", "popularity@v1", "similar", 8, ts, items, scores[: len(items)])
    line = served_list_line(served)
    assert line.endswith("\n") and "\n" not in line[:-1]  # one log event
    assert served_list_rows(json.loads(line)) == impression_rows(served)


def test_a_non_finite_score_keeps_the_line_valid_json() -> None:
    line = served_list_line(("r", "champion", "v1", "search", 2, 0.0, ["a", "b"], [float("nan"), 0.5]))
    doc = json.loads(line)  # strict JSON: no NaN token
    assert doc["scores"] == [None, 0.5] and "NaN" not in line
    assert [r["score"] for r in served_list_rows(doc)] == [None, 0.5]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"scores": [0.5]}, "2 items but 1 scores"),
        ({"items": "ab"}, "must be lists"),
        ({"items": [], "scores": []}, "1 to 500 items"),
        ({"items": ["a"] * 501, "scores": [0.1] * 501}, "1 to 500 items"),
        ({"items": ["a", 7]}, "item ids must be strings"),
        ({"scores": [0.5, "high"]}, "scores must be numbers"),
        ({"scores": [0.5, True]}, "scores must be numbers"),
        ({"k": "2"}, "k must be an integer"),
        ({"recommendation_id": None}, "recommendation_id must be a string"),
    ],
)
def test_a_broken_served_list_is_refused_whole(change: dict[str, Any], message: str) -> None:
    doc = json.loads(served_list_line(("r", "champion", "v1", "search", 2, 0.0, ["a", "b"], [0.9, 0.5])))
    doc.update(change)
    with pytest.raises(ServedListError, match=message):
        served_list_rows(doc)


def test_neighbour_and_popularity_bundles_are_served_like_factor_ones(tmp_path: Path) -> None:
    """ItemKNN graphs (user CSR inside) and popularity graphs go through the same serving path."""
    from shelfwise.bundle import write_bundle

    rng = np.random.default_rng(5)
    n = 60
    items = {
        "item_id": np.array([f"i{j:03d}" for j in range(n)]),
        "popularity": rng.random(n),
        "in_stock": rng.random(n) > 0.1,
    }
    nm = ox.NeighbourModel.create(
        rng.integers(0, n, size=(n, 5)),
        rng.random((n, 5)),
        [0, 3, 5],
        [1, 2, 3, 4, 5],
        [1.0, 2.0, 4.0, 1.0, 8.0],
        prior=1e-6 * items["popularity"],
    )
    remote = tmp_path / "remote"
    write_bundle(
        remote / "knn",
        model=ox.build_neighbour_model(nm),
        items=items,
        manifest={},
        users=["a", "b"],
        parquet=False,
    )
    write_bundle(
        remote / "pop",
        model=ox.build_popularity_model(items["popularity"]),
        items=items,
        manifest={},
        parquet=False,
    )
    aliases = Aliased(champion="knn")
    rec = _recommender(remote, tmp_path, aliases)
    out = rec.recommend(user_id="b", k=5)
    mask = ~items["in_stock"]
    _, expected = ox.neighbour_reference(nm, 1, [], [], mask, 5)
    assert out.variant == "champion" and [i.item_id for i in out.items] == items["item_id"][expected].tolist()
    session = rec.recommend(session_id="s", history=[HistoryEvent("i007", "add_to_cart")], k=5)
    _, expected = ox.neighbour_reference(nm, -1, [7], [4.0], mask, 5)
    assert [i.item_id for i in session.items] == items["item_id"][expected].tolist()
    aliases.value = Aliases(champion="pop")
    rec.sync()
    out = rec.recommend(session_id="s", history=[HistoryEvent("i007", "view")], k=3)
    order = np.argsort(-np.where(mask, -np.inf, items["popularity"]), kind="stable")[:3]
    assert out.model_version == "pop" and [i.item_id for i in out.items] == items["item_id"][order].tolist()


@mock_aws
def test_download_bundle_downloads_verifies_reuses_and_refuses(remote: Path, tmp_path: Path) -> None:
    from shelfwise.bundle import BundleChecksumError, BundleMissingError, upload_bundle
    from shelfwise.bundle import download_bundle as fetch_bundle

    s3 = boto3.client("s3", region_name="eu-west-1")
    s3.create_bucket(Bucket="models", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    upload_bundle(s3, remote / "v1", "models", "models/recs/v1")
    target = fetch_bundle(s3, "models", "models/recs/v1", tmp_path / "v1")
    local = json.loads((target / "manifest.json").read_text())["files"]
    assert sorted(local) == sorted(p.name for p in target.iterdir() if p.name != "manifest.json")
    assert all((target / name).read_bytes() == (remote / "v1" / name).read_bytes() for name in local)
    assert read_bundle(target).n_items == N

    # a verified copy is reused; a tampered cached copy is fetched again
    s3.delete_object(Bucket="models", Key="models/recs/v1/users.npz")
    assert fetch_bundle(s3, "models", "models/recs/v1", target) == target
    (target / "items.npz").write_bytes(b"tampered")
    with pytest.raises(BundleMissingError):
        fetch_bundle(s3, "models", "models/recs/v1", target)
    assert not target.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".download-")]

    # an object that does not match its manifest checksum is refused, nothing left behind
    upload_bundle(s3, remote / "v2", "models", "models/recs/v2")
    s3.put_object(Bucket="models", Key="models/recs/v2/model.onnx", Body=b"not the model")
    with pytest.raises(BundleChecksumError):
        fetch_bundle(s3, "models", "models/recs/v2", tmp_path / "v2")
    assert not (tmp_path / "v2").exists()
    with pytest.raises(BundleMissingError):
        fetch_bundle(s3, "models", "models/recs/v9", tmp_path / "v9")


def test_disabled_tracing_does_not_import_the_xray_recorder() -> None:
    import subprocess
    import sys

    code = (
        "import sys, shelfwise.observability as o\n"
        "@o.tracer.capture_lambda_handler(capture_response=False)\n"
        "def handler(event, context):\n"
        "    return 'ok'\n"
        "print(handler({}, None), o.tracer.disabled, 'aws_xray_sdk.core' in sys.modules)\n"
    )
    env = {"PATH": "", "POWERTOOLS_TRACE_DISABLED": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["ok", "True", "False"]
    env = {"PATH": "", "LAMBDA_TASK_ROOT": "/var/task", "AWS_DEFAULT_REGION": "eu-west-1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split()[1:] == ["False", "True"]
