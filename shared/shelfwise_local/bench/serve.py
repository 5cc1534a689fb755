"""`shelfwise bench serve`: latency of the serving handler, the bare ONNX kernel, the HTTP API, cold start.

Builds a synthetic factor-model bundle (``--items`` x ``--dim``), registers it in an embedded moto
server (S3 + SSM + Firehose), then measures in the same run:

1. the bare ONNX MatMul+TopK kernel on the same item matrix (the baseline);
2. the serve_recommendations handler in-process (payload 2.0 events, per request p50/p95/p99);
3. the same requests through a local HTTP API (real loopback socket, payload 2.0);
4. cold start: a fresh interpreter importing the handler, loading the bundle from the emulator's
   S3 and answering one request; and the serving package size (function + layers).

Prints one JSON line last. Figures only: nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from shelfwise.cli.common import plain
from shelfwise_local.bench._common import emit, peak_rss_mb

REPO = Path(__file__).resolve().parents[3]
SERVE_APP = REPO / "functions" / "serve_recommendations" / "app.py"
_WORDS = [
    "classic",
    "slim",
    "organic",
    "merino",
    "vintage",
    "linen",
    "cotton",
    "leather",
    "travel",
    "compact",
    "wireless",
    "smart",
    "ceramic",
    "bamboo",
    "steel",
    "premium",
    "everyday",
    "outdoor",
    "kids",
    "deluxe",
    "soft",
]
_NOUNS = [
    "shoe",
    "hat",
    "lamp",
    "mug",
    "scarf",
    "jacket",
    "kettle",
    "backpack",
    "speaker",
    "watch",
    "blanket",
    "bottle",
    "chair",
    "candle",
    "notebook",
    "pillow",
    "towel",
    "teapot",
    "umbrella",
    "glove",
]


def synthetic_factors(
    n_items: int, dim: int, n_users: int, n_categories: int = 20, seed: int = 0
) -> tuple[np.random.Generator, np.ndarray, np.ndarray, Any]:
    """(rng, item categories, users' favourite categories, FactorModel) of the synthetic catalogue: items of a category share
    a centroid; users lean towards one category. Deterministic in ``seed``."""
    from shelfwise import onnx_export as ox

    rng = np.random.default_rng(seed)
    cats = rng.integers(0, n_categories, size=n_items)
    centroids = rng.normal(size=(n_categories, dim)).astype(np.float32)
    items = (centroids[cats] + 0.5 * rng.normal(size=(n_items, dim))).astype(np.float32) / np.sqrt(dim)
    fav = rng.integers(0, n_categories, size=n_users)
    users = (centroids[fav] + 0.3 * rng.normal(size=(n_users, dim))).astype(np.float32)
    return rng, cats, fav, ox.FactorModel.create(items, users, ox.als_projection(items, 1.0))


def build_synthetic_bundle(
    directory: str | Path,
    *,
    n_items: int,
    dim: int,
    n_users: int = 1000,
    n_categories: int = 20,
    seed: int = 0,
    version: str = "v1",
    neighbours: int = 20,
    float16: bool = False,
    int8_candidates: bool = False,
    ann: bool = True,
    save_items: Path | None = None,
    model_kind: str = "als",
    history: int = 50,
) -> Path:
    """A consistent factor-model bundle: clustered item factors, users, titles, prices, neighbours.

    Items of a category share a centroid, so similar items and fold-in results are meaningful
    enough for tests and demos (a user who viewed hats gets hats). The graph comes from
    :func:`shelfwise.onnx_ann.export_factor_model` (the page index above 128 MiB of factors,
    with its recall check); with ``int8_candidates`` (what
    ``bench serve`` exports unless ``--exact-graph``) the int8 candidate graph when its check on
    200 sampled users (k = 20 and 500, with and without masks) passes, else the exact one. The
    manifest's ``onnx_graph`` says which, with the check's result. Test fixtures keep the exact
    graph (default): they read its ``item_factors_t`` back to score with the numpy reference.
    """
    from shelfwise import bundle as bd

    rng, cats, fav, model = synthetic_factors(n_items, dim, n_users, n_categories, seed)
    items = model.item_factors
    if save_items is not None:
        np.save(save_items, items)
    category_names = np.array([f"{_NOUNS[c % len(_NOUNS)]}s-{c}" for c in range(n_categories)])
    titles = np.array(
        [
            f"{_WORDS[(i * 7) % len(_WORDS)]} {_WORDS[(i * 13) % len(_WORDS)]} {_NOUNS[c % len(_NOUNS)]} {i}"
            for i, c in enumerate(cats.tolist())
        ]
    )
    rank = rng.permutation(n_items)
    popularity = (1000.0 / (rank + 1) ** 0.8).astype(np.float32)
    user_ids = np.array([f"user-{u:06d}" for u in range(n_users)])
    counts = rng.integers(0, 4, size=n_users)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    purchased = rng.integers(0, n_items, size=int(indptr[-1]))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    from shelfwise import onnx_ann

    graph: Any = None
    graph_record: dict[str, Any] = {"graph": "sequential", "candidate_check": None}
    if model_kind != "sequential":
        graph, graph_record = onnx_ann.export_factor_model(
            model,
            int8_candidates=int8_candidates,
            check_ks=(20, 500),
            check_users=200,
            float16=float16,
            **({} if ann else {"ann_min_bytes": None}),
        )
    m = min(neighbours, n_items - 1)
    if graph_record["graph"] == "ann-pages":
        # a neighbour table of 20 per item is 160 MB at 1M items: large catalogues answer
        # similar items from the model (the fold-in of the item, through the index)
        similar = None
    elif n_items <= 5000:
        unit = items / np.linalg.norm(items, axis=1, keepdims=True)
        sims = unit @ unit.T
        np.fill_diagonal(sims, -np.inf)
        sim_idx = np.argsort(-sims, axis=1)[:, :m]
        sim_val = np.take_along_axis(sims, sim_idx, axis=1).clip(min=0)
    else:  # same-category neighbours, without the N^2 similarity matrix
        order = np.argsort(cats, kind="stable")
        starts = np.searchsorted(cats[order], np.arange(n_categories))
        sizes = np.bincount(cats, minlength=n_categories)
        picks = rng.random((n_items, m))
        sim_idx = order[starts[cats][:, None] + (picks * sizes[cats][:, None]).astype(np.int64)]
        sim_val = np.sort(rng.random((n_items, m)), axis=1)[:, ::-1]
    if graph_record["graph"] != "ann-pages":
        similar = (sim_idx, sim_val)
    if model_kind == "sequential":
        graph = _synthetic_sequential(items, cats, fav, history, rng)
    if model_kind == "ranker":
        if save_items is not None:  # the plain retrieval graph beside the bundle, for the same-run A/B
            (save_items.parent / RETRIEVAL_GRAPH).write_bytes(graph.SerializeToString())
        graph = _synthetic_ranker(graph, cats, fav, history, rng)
        graph_record = {**graph_record, "graph": f"ranker over {graph_record['graph']}"}
    bd.write_bundle(
        directory,
        model=graph,
        items={
            "item_id": np.array([f"sku-{i:07d}" for i in range(n_items)]),
            "category": category_names[cats],
            "title": titles,
            "price": np.round(rng.lognormal(3, 1, size=n_items), 2),
            "popularity": popularity,
            "in_stock": rng.random(n_items) > 0.05,
        },
        manifest={
            "algorithm": model_kind,
            "version": version,
            "synthetic": True,
            "dim": dim,
            "onnx_graph": graph_record,
        },
        users=user_ids,
        similar=similar,
        purchased=(indptr, purchased),
        parquet=False,
    )
    return directory


def _synthetic_sequential(
    items: np.ndarray, cats: np.ndarray, fav: np.ndarray, history: int, rng: np.random.Generator
) -> Any:
    """A sequential graph of the serving cost of a trained one: 2 blocks, random weights, the item
    matrix as its embeddings, and ``history`` stored events per user from their favourite category."""
    from shelfwise import onnx_sequential as osq

    n, d = items.shape

    def w(*shape: int) -> np.ndarray:
        return (rng.normal(size=shape) / np.sqrt(shape[0])).astype(np.float32)

    zeros, ones = np.zeros(d, np.float32), np.ones(d, np.float32)

    def block() -> osq.Block:
        names = [f.name for f in dataclasses.fields(osq.Block)]
        return osq.Block(
            **{
                n: ones if n.endswith("_g") else zeros if n[0] == "b" or n.endswith("_b") else w(d, d)
                for n in names
            }
        )

    blocks = (block(), block())
    by_cat = [np.flatnonzero(cats == c) for c in range(int(cats.max()) + 1)]
    user_items = np.concatenate(
        [rng.choice(by_cat[c], size=history) if by_cat[c].size else rng.integers(0, n, history) for c in fav]
    ).astype(np.int32)
    arrays = osq.SequentialModel(
        item_emb=items,
        item_bias=np.zeros(n, np.float32),
        type_emb=w(osq.N_TYPES, d),
        pos_emb=w(50, d),
        blocks=blocks,
        ln_g=ones,
        ln_b=zeros,
        heads=1,
        user_indptr=np.arange(0, (len(fav) + 1) * history, history, dtype=np.int64),
        user_items=user_items,
        user_types=rng.integers(1, osq.N_TYPES, user_items.size).astype(np.int8),
    )
    return osq.build_sequential_model(arrays, meta={"shelfwise.algorithm": "sequential"})


def _synthetic_ranker(
    retrieval: Any, cats: np.ndarray, fav: np.ndarray, history: int, rng: np.random.Generator
) -> Any:
    """The retrieval graph's top-100 re-ranked by an MLP of the serving cost of a trained ranker
    (11 features, 64 and 32 hidden units, random weights), ``history`` stored events per user."""
    from shelfwise import onnx_ranker
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
    return onnx_ranker.build_ranker_model(retrieval, arrays, 100)


def _ranker_ab(bundle_dir: Path, n_items: int, n_users: int, requests: int, history: int) -> dict[str, Any]:
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
    total = min(requests, 3000)
    for _ in range(0, total, 100):
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
            "p50_ms": _pct(every, 50),
            "p99_ms": _pct(every, 99),
            **{f"{kind}_p50_ms": _pct(v, 50) for kind, v in by_kind.items()},
        }
    out["ranker_over_retrieval_p50"] = round(out["ranker"]["p50_ms"] / out["retrieval"]["p50_ms"], 2)
    return out


# The IAM principal API Gateway reports for a SigV4-signed call (the template's default ApiAuth).
SHOP_CLIENT = "arn:aws:iam::123456789012:role/shop-backend"


def iam_authorizer(user_arn: str) -> dict[str, Any]:
    """``requestContext.authorizer`` of a call API Gateway's IAM authorization accepted."""
    return {"iam": {"accountId": "123456789012", "userArn": user_arn, "userId": "AROAEXAMPLE:shop"}}


def apigw_event(
    method: str,
    path: str,
    *,
    query: dict[str, str] | None = None,
    body: Any = None,
    caller: str | None = SHOP_CLIENT,
) -> dict[str, Any]:
    """A payload format 2.0 event as API Gateway HTTP APIs send it (``caller``: the IAM principal
    its authorizer accepted; None for an anonymous call)."""
    raw_query = "&".join(f"{k}={v}" for k, v in (query or {}).items())
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": raw_query,
        "headers": {"content-type": "application/json", "host": "api.local"},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": "api.local",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1"},
            "requestId": "bench",
            "routeKey": "$default",
            "stage": "$default",
            "time": "28/Nov/2026:16:00:00 +0000",
            "timeEpoch": 1795881600000,
        },
        "isBase64Encoded": False,
    }
    if caller is not None:
        event["requestContext"]["authorizer"] = iam_authorizer(caller)
    if query:
        event["queryStringParameters"] = query
    if body is not None:
        event["body"] = json.dumps(body)
    return event


class _Ctx:
    function_name = "serve"
    memory_limit_in_mb = 1769
    aws_request_id = "bench"
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:serve"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


KERNEL_ITEMS = "kernel_items.npy"  # beside the bundle: the float32 factors, for the bare kernel
RETRIEVAL_GRAPH = "retrieval.onnx"  # beside a ranker bundle: the retrieval graph it wraps


def _pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 3)


def _kernel(
    bundle_dir: Path, n_items: int, requests: int, *, evict: bool = False, served: bool = False
) -> tuple[list[float], list[float], list[float]]:
    """Bare float32 MatMul+TopK on the same item matrix (wall, CPU ms) and the served graph (wall ms).

    The kernel is what the exact graph cannot beat; ``served=True`` also runs the bundle's own
    model.onnx (top-20 for a random known user, no exclusions: the issue-5 figure) on one thread,
    alternating with the kernel in blocks of 100 requests so both see the same machine load.

    ``evict``: each run follows a pass over 256 MB of other memory, so the matrix is read from
    DRAM rather than the caches (the kernel streams the whole matrix: where it lives decides its
    speed). Run in its own process (:func:`_kernel_after_eviction`) so the buffer does not count
    in this process's peak RSS.
    """
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(bundle_dir / "model.onnx"), load_external_data=False)
    # the float32 item matrix the bundle was exported from (the ANN graph stores none)
    item_t = np.ascontiguousarray(np.load(bundle_dir.parent / KERNEL_ITEMS).T, dtype=np.float32)
    n_users = int({p.key: p.value for p in model.metadata_props}.get("shelfwise.n_users", "0"))
    dim = item_t.shape[0]
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["u", "Y"], ["s"]),
            helper.make_node("Reshape", ["s", "shape"], ["flat"]),
            helper.make_node("TopK", ["flat", "k"], ["v", "i"]),
        ],
        "kernel",
        [
            helper.make_tensor_value_info("u", TensorProto.FLOAT, [1, dim]),
            helper.make_tensor_value_info("k", TensorProto.INT64, [1]),
        ],
        [
            helper.make_tensor_value_info("v", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("i", TensorProto.INT64, None),
        ],
        [
            numpy_helper.from_array(item_t, "Y"),
            numpy_helper.from_array(np.array([n_items], np.int64), "shape"),
        ],
    )
    kernel = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    from shelfwise.serving.model import session_options

    sess = ort.InferenceSession(
        kernel.SerializeToString(), session_options(1), providers=["CPUExecutionProvider"]
    )
    served_sess = (
        ort.InferenceSession(
            str(bundle_dir / "model.onnx"), session_options(1), providers=["CPUExecutionProvider"]
        )
        if served
        else None
    )
    from shelfwise.onnx_export import feeds

    rng = np.random.default_rng(1)
    k = np.array([20], np.int64)
    other = np.ones(256 * 2**20 // 8) if evict else None
    times, cpu, served_times = [], [], []
    total = min(requests, 3000) + 50
    # Blocks of 100 requests alternate between the two graphs: both see the same machine load,
    # and each runs back to back as in a process that serves only it (interleaving every request
    # would let the kernel's 25.6 MB stream evict the served graph's matrix from the caches).
    for start in range(0, total, 100):
        block = min(100, total - start)
        for _ in range(block):
            u = rng.normal(size=(1, dim)).astype(np.float32)
            if other is not None:
                other.sum()
            t, c = time.perf_counter(), time.thread_time()
            sess.run(None, {"u": u, "k": k})
            times.append((time.perf_counter() - t) * 1000)
            cpu.append((time.thread_time() - c) * 1000)
        if served_sess is None:
            continue
        users = rng.integers(n_users, size=block) if n_users else np.full(block, -1)
        for user in users.tolist():
            feed = feeds(n_items, user_index=user, k=20)
            t = time.perf_counter()
            served_sess.run(None, feed)
            served_times.append((time.perf_counter() - t) * 1000)
    return times[50:], cpu[50:], served_times[50:]


def _kernel_after_eviction(bundle_dir: Path, n_items: int) -> float:
    """p50 ms of the kernel with the matrix evicted from the caches before each run (own process)."""
    code = (
        "import sys, statistics; from pathlib import Path\n"
        "from shelfwise_local.bench.serve import _kernel\n"
        "wall, _, _ = _kernel(Path(sys.argv[1]), int(sys.argv[2]), 150, evict=True)\n"
        "print(statistics.median(wall))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(bundle_dir), str(n_items)],
        capture_output=True,
        text=True,
        check=True,
    )
    return round(float(out.stdout.strip().splitlines()[-1]), 3)


def _events(n: int, n_items: int, n_users: int, seed: int = 2, history: int = 5) -> list[dict[str, Any]]:
    """A request mix: known users, session histories of ``history`` events, cold users, similar items."""
    rng = np.random.default_rng(seed)
    out = []
    for r in range(n):
        kind = r % 10
        if kind < 4:
            u = f"user-{int(rng.integers(0, n_users)):06d}"
            out.append(apigw_event("GET", f"/v1/users/{u}/recommendations", query={"k": "20"}))
        elif kind < 8:
            hist = [
                {"item_id": f"sku-{int(i):07d}", "event_type": t}
                for i, t in zip(
                    rng.integers(0, n_items, history),
                    rng.choice(["view", "click", "add_to_cart"], history),
                    strict=True,
                )
            ]
            out.append(
                apigw_event(
                    "POST", "/v1/recommendations", body={"session_id": f"s-{r}", "history": hist, "k": 20}
                )
            )
        elif kind < 9:
            out.append(
                apigw_event(
                    "GET", f"/v1/items/sku-{int(rng.integers(0, n_items)):07d}/similar", query={"k": "20"}
                )
            )
        else:
            out.append(apigw_event("GET", f"/v1/users/new-{r}/recommendations", query={"k": "20"}))
    return out


def _route_of(event: dict[str, Any]) -> str:
    """The kind of request of an :func:`_events` event (per-route figures)."""
    path = event["rawPath"]
    if path.endswith("/similar"):
        return "similar_items"
    if path == "/v1/recommendations":
        return "session_fold_in"
    return "cold_user_popularity" if "/users/new-" in path else "known_user"


def _package_mb() -> dict[str, float]:
    """Unzipped size of what the serving function ships: its code, shelfwise, and the inference layer deps."""
    import importlib.util

    def size(path: Path) -> int:
        if path.is_file():
            return path.stat().st_size
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)

    def pkg(name: str) -> int:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            return 0
        root = Path(spec.origin).parent
        total = size(root)
        libs = root.parent / f"{name}.libs"
        return total + (size(libs) if libs.exists() else 0)

    mb = 1024 * 1024
    layers = {
        "function": size(SERVE_APP.parent),
        "shelfwise": size(REPO / "shared" / "shelfwise"),
        "inference (onnxruntime, numpy)": pkg("onnxruntime") + pkg("numpy"),
        "base (powertools, pydantic)": pkg("aws_lambda_powertools") + pkg("pydantic") + pkg("pydantic_core"),
    }
    out = {k: round(v / mb, 1) for k, v in layers.items()}
    out["total"] = round(sum(layers.values()) / mb, 1)
    return out


_COLD = r"""
import sys, time
t0 = time.perf_counter()
sys.path[:0] = sys.argv[3].split(":")
import importlib.util, json
spec = importlib.util.spec_from_file_location("serve_app", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
sys.modules["serve_app"] = mod
spec.loader.exec_module(mod)
t1 = time.perf_counter()
class Ctx:
    function_name = "serve"; memory_limit_in_mb = 1769; aws_request_id = "cold"
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:serve"
    def get_remaining_time_in_millis(self): return 30000
first, other_route = json.loads(sys.argv[2])
resp = mod.lambda_handler(first, Ctx())
t2 = time.perf_counter()
other = mod.lambda_handler(other_route, Ctx())  # what the first request of another route adds
t3 = time.perf_counter()
def hwm_mb():  # this process's peak RSS (VmHWM: ru_maxrss would include the parent's, kept across exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
rss_first = hwm_mb()
if len(sys.argv) > 4:  # then a replay of the bench's request mix: the function's steady-state RSS
    for ev in json.load(open(sys.argv[4])):
        mod.lambda_handler(ev, Ctx())
m = next(iter(mod.recommender.state.models.values()), None)
print(json.dumps({"rss_after_first_mb": rss_first,
                  "rss_mb": hwm_mb(),"init_s": t1 - t0, "first_answer_s": t2 - t0, "first_request_s": t2 - t1,
                  "first_other_route_s": t3 - t2,
                  "bundle_fetch_s": m and m.fetch_seconds, "bundle_load_s": m and m.load_seconds,
                  "status": resp["statusCode"], "other_status": other["statusCode"]}))
"""


def lambda_paths(work: Path) -> list[Path]:
    """``sys.path`` of the deployed serving function: its code, shelfwise, its layers, the runtime's SDK.

    Links into this environment (:func:`shelfwise_local.buildcheck.layer_site`), so a ``-I -S``
    interpreter imports what Lambda would and nothing a developer happens to have installed
    (botocore picks up awscrt and pyOpenSSL when present, ~0.2 s that Lambda never pays).
    """
    from shelfwise_local.buildcheck import layer_site, runtime_sdk

    layers = [REPO / "layers" / name / "requirements.txt" for name in ("base", "inference")]
    return [
        SERVE_APP.parent,
        REPO / "shared",
        layer_site(layers, work / "lambda-layers"),
        runtime_sdk(work / "lambda-sdk"),
    ]


def _one_core() -> set[int]:
    """The last CPU this process may use: where a pinned cold start runs (Lambda at 1769 MB has one vCPU)."""
    return {max(os.sched_getaffinity(0))}


def _cold_start(
    cache: Path, paths: list[Path], cpus: set[int] | None = None, replay: Path | None = None
) -> dict[str, Any]:
    """A fresh interpreter: import the handler (init: clients, aliases, download, load), answer once.

    ``-I -S``: no site-packages, only ``paths`` (:func:`lambda_paths`), as in Lambda. ``cpus``
    pins the interpreter (its threads overlap the download with imports, not CPU work with CPU
    work, on one core); the emulator serving the bundle runs elsewhere, as S3 would.
    """
    event = apigw_event("GET", "/v1/users/user-000001/recommendations", query={"k": "20"})
    # then the first session fold-in: the cost of a route's first request (its models and
    # parameter analysis are built on first use)
    history = [{"item_id": f"sku-{i * 997:07d}", "event_type": "view"} for i in range(1, 11)]
    other = apigw_event(
        "POST", "/v1/recommendations", body={"session_id": "s-cold", "history": history, "k": 20}
    )
    t = time.perf_counter()
    out = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            _COLD,
            str(SERVE_APP),
            json.dumps([event, other]),
            ":".join(map(str, paths)),
            *([str(replay)] if replay else []),
        ],
        env={**os.environ, "MODEL_CACHE_DIR": str(cache)},
        capture_output=True,
        text=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )
    wall = time.perf_counter() - t
    if out.returncode:
        raise RuntimeError(f"cold start run failed: {out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = wall
    return result


# What the serving function cannot start without: the model runtime, Pydantic (its BaseModel) and
# Powertools' HTTP resolver (the issue's validation). Importing them, nothing else, is the floor of
# any cold start here. The AWS SDK is not among them: serving reads S3 and SSM with
# shelfwise.aws_lite; boto3's own import is reported beside it for reference.
SERVING_LIBRARIES = "numpy, onnxruntime, pydantic.main, aws_lambda_powertools.event_handler"


def _baseline_import(paths: list[Path], modules: str = "numpy, onnxruntime") -> float:
    """Seconds for a fresh ``-I -S`` interpreter on ``paths`` to import ``modules``."""
    code = (
        f"import sys, time; sys.path[:0] = {[str(p) for p in paths]!r}; t = time.perf_counter(); "
        f"import {modules}; print(time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_moto() -> tuple[subprocess.Popen[bytes], str]:
    """moto in server mode in its own process, so its work never shares this process's GIL."""
    import urllib.request

    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto server did not start")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="shelfwise bench serve", description=plain(__doc__.splitlines()[0]))
    parser.add_argument("--items", type=int, default=100_000, help="catalogue size (default 100k)")
    parser.add_argument("--dim", type=int, default=64, help="factor dimension (default 64)")
    parser.add_argument("--users", type=int, default=10_000, help="known users (default 10k)")
    parser.add_argument("--requests", type=int, default=10_000, help="requests per phase (default 10k)")
    parser.add_argument("--http-requests", type=int, default=None, help="default: requests / 5")
    parser.add_argument(
        "--cold-runs", type=int, default=3, help="cold starts measured, best kept (default 3)"
    )
    parser.add_argument("--float16", action="store_true", help="store the item matrix in half precision")
    parser.add_argument(
        "--exact-graph", action="store_true", help="export the exact graph (no int8 candidate stage)"
    )
    parser.add_argument(
        "--model",
        choices=("als", "sequential", "ranker"),
        default="als",
        help="served graph: ALS factors, the sequential model (2 blocks, 50 stored events per user), or "
        "ALS with the neural ranker re-ranking its top 100 (50 stored events per user)",
    )
    parser.add_argument(
        "--history", type=int, default=None, help="events per session request (default 5; 50 for sequential)"
    )
    args = parser.parse_args(argv)
    history = args.history or (50 if args.model == "sequential" else 5)

    import boto3

    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    t = time.perf_counter()
    bundle_dir = build_synthetic_bundle(
        work / "bundle",
        n_items=args.items,
        dim=args.dim,
        n_users=args.users,
        float16=args.float16,
        int8_candidates=not args.exact_graph,
        save_items=work / KERNEL_ITEMS,
        model_kind=args.model,
    )
    export_s = time.perf_counter() - t
    graph_record = json.loads((bundle_dir / "manifest.json").read_text())["onnx_graph"]
    bundle_mb = sum(p.stat().st_size for p in bundle_dir.iterdir()) / 2**20
    print(
        f"bundle: {args.items} x {args.dim}, {bundle_mb:.1f} MiB, built in {time.perf_counter() - t:.1f}s",
        file=sys.stderr,
    )

    moto, endpoint = _start_moto()
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "eu-west-1",
            "MODELS_BUCKET": "bench-models",
            "MODEL_NAME": "recs",
            "SHELFWISE_ENV": "bench",
            "POWERTOOLS_METRICS_NAMESPACE": "Shelfwise",
            "POWERTOOLS_TRACE_DISABLED": "1",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
        }
    )
    try:
        from shelfwise.aws import reset_clients
        from shelfwise.bundle import upload_bundle

        reset_clients()
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="bench-models", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        upload_bundle(s3, bundle_dir, "bench-models", "models/recs/v1")
        boto3.client("ssm").put_parameter(
            Name="/shelfwise/bench/models/recs/champion", Value="v1", Type="String", Overwrite=True
        )

        # 1. the bare kernel on the same item matrix (the baseline), in this process
        kernel, kernel_cpu, served = _kernel(bundle_dir, args.items, args.requests, served=True)
        kernel_evicted = _kernel_after_eviction(bundle_dir, args.items)
        print(
            f"kernel p50 {statistics.median(kernel):.3f} ms; served graph ({graph_record['graph']}) "
            f"p50 {_pct(served, 50):.3f} ms p99 {_pct(served, 99):.3f} ms (one thread, top-20)",
            file=sys.stderr,
        )
        ranker_ab = (
            _ranker_ab(bundle_dir, args.items, args.users, args.requests, history)
            if args.model == "ranker"
            else None
        )
        if ranker_ab is not None:
            print(f"ranker A/B {ranker_ab}", file=sys.stderr)

        # 4. cold starts: fresh interpreters with an empty /tmp cache (download included), then one
        # with the bundle already cached (an environment re-initialised on the same host)
        paths = lambda_paths(work)
        baseline_import = min(_baseline_import(paths) for _ in range(args.cold_runs))
        libraries_import = min(_baseline_import(paths, SERVING_LIBRARIES) for _ in range(args.cold_runs))
        boto3_import = min(_baseline_import(paths, "boto3") for _ in range(args.cold_runs))
        cold = [_cold_start(work / f"cold-cache-{i}", paths) for i in range(args.cold_runs)]
        cold_one_core = [
            _cold_start(work / f"cold-cache-1core-{i}", paths, _one_core()) for i in range(args.cold_runs)
        ]
        # an environment re-initialised on the same host (bundle cached), which then answers
        # the request mix: the function's own peak RSS, against its configured memory
        replay = work / "replay.json"
        replay.write_text(json.dumps(_events(min(args.requests, 2000), args.items, args.users, seed=3)))
        cached = _cold_start(work / "cold-cache-0", paths, replay=replay)
        print(f"cold start {[round(c['first_answer_s'], 3) for c in cold]} s", file=sys.stderr)

        # 2. the handler in-process (EMF lines go to /dev/null as Lambda's stdout would take them)
        import contextlib
        import importlib.util

        os.environ["MODEL_CACHE_DIR"] = str(work / "cold-cache-0")
        spec = importlib.util.spec_from_file_location("serve_app_bench", SERVE_APP)
        assert spec and spec.loader
        app = importlib.util.module_from_spec(spec)
        sys.modules["serve_app_bench"] = app
        spec.loader.exec_module(app)
        ctx = _Ctx()
        events = _events(args.requests, args.items, args.users, history=history)
        handler_ms: list[float] = []
        handler_cpu: list[float] = []
        route_cpu: dict[str, list[float]] = {}
        statuses: dict[int, int] = {}
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            for ev in events[:200]:
                app.lambda_handler(ev, ctx)
            t_all = time.perf_counter()
            for ev in events:
                t, c = time.perf_counter(), time.thread_time()
                resp = app.lambda_handler(ev, ctx)
                handler_ms.append((time.perf_counter() - t) * 1000)
                handler_cpu.append((time.thread_time() - c) * 1000)
                route_cpu.setdefault(_route_of(ev), []).append(handler_cpu[-1])
                statuses[resp["statusCode"]] = statuses.get(resp["statusCode"], 0) + 1
            handler_rps = len(events) / (time.perf_counter() - t_all)
            recorded = app.recommender.impressions.recorded  # served-list lines written to stdout
        print(
            f"handler p50 {statistics.median(handler_ms):.3f} ms, impressions recorded {recorded}",
            file=sys.stderr,
        )

        # 2b. exploration on vs off (5% of slots swapped from the next 30 items), alternating
        # blocks of the same requests so both see the same load
        exploration_ab = _exploration_ab(app, events, ctx)
        print(f"exploration A/B {exploration_ab}", file=sys.stderr)

        # 3. the same requests through the local runtime's HTTP API (loopback socket, payload 2.0)
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            http_ms = _http(app, events[: args.http_requests or max(args.requests // 5, 100)])
    finally:
        moto.terminate()
        moto.wait(timeout=10)
        # bundle + four cold-start caches: about 260 MB per run on a shared disk
        shutil.rmtree(work, ignore_errors=True)

    result = {
        "benchmark": "serve",
        "items": args.items,
        "dim": args.dim,
        "requests": args.requests,
        "model": args.model,
        "session_history_events": history,
        "float16": args.float16,
        "bundle_mb": round(bundle_mb, 1),
        "statuses": statuses,
        "kernel_p50_ms": _pct(kernel, 50),
        "kernel_p99_ms": _pct(kernel, 99),
        # CPU time of the calling thread (ONNX Runtime runs on it with one intra-op thread): close to
        # the wall time means the kernel computed rather than waited for a core. The matrix is read
        # once per request, so its size over the kernel's time is the memory bandwidth it got.
        "kernel_cpu_p50_ms": _pct(kernel_cpu, 50),
        "kernel_after_cache_eviction_p50_ms": kernel_evicted,
        "kernel_matrix_gb_per_s": round(
            args.items * args.dim * 4 / 1e9 / (statistics.median(kernel) / 1000), 1
        ),
        # the bundle's model.onnx alone, one thread, alternating with the kernel (the serving target's figure)
        "served_graph": graph_record["graph"],
        "served_graph_check": graph_record["candidate_check"],
        "served_graph_p50_ms": _pct(served, 50),
        "served_graph_p99_ms": _pct(served, 99),
        "served_graph_over_kernel_p50": round(statistics.median(served) / statistics.median(kernel), 2),
        # --model ranker: its graph against the plain retrieval graph, alternating, same requests
        "ranker_vs_retrieval": ranker_ab,
        "handler_p50_ms": _pct(handler_ms, 50),
        "handler_p95_ms": _pct(handler_ms, 95),
        "handler_p99_ms": _pct(handler_ms, 99),
        "handler_cpu_p50_ms": _pct(handler_cpu, 50),
        "handler_cpu_p99_ms": _pct(handler_cpu, 99),
        # CPU per request by kind of request: the model routes run the graph, the other two do not
        "handler_cpu_by_route_ms": {
            route: {"n": len(v), "p50": _pct(v, 50), "p99": _pct(v, 99)}
            for route, v in sorted(route_cpu.items())
        },
        "handler_rps": round(handler_rps, 1),
        "exploration_ab": exploration_ab,
        "handler_over_kernel_p50": round(statistics.median(handler_ms) / statistics.median(kernel), 2),
        "http_p50_ms": _pct(http_ms, 50),
        "http_p99_ms": _pct(http_ms, 99),
        "cold_start_s": round(min(c["first_answer_s"] for c in cold), 3),
        "cold_start_runs_s": [round(c["first_answer_s"], 3) for c in cold],
        # the same, pinned to one core (the "one core"; Lambda at 1769 MB has one vCPU)
        "cold_start_one_core_s": round(min(c["first_answer_s"] for c in cold_one_core), 3),
        "cold_start_one_core_runs_s": [round(c["first_answer_s"], 3) for c in cold_one_core],
        "cold_start_process_wall_s": round(min(c["process_wall_s"] for c in cold), 3),
        # how long the load waited for the bundle: the download itself starts earlier (prefetch)
        "cold_start_bundle_fetch_s": round(min(c["bundle_fetch_s"] or 0 for c in cold), 3),
        "cold_start_bundle_load_s": round(min(c["bundle_load_s"] or 0 for c in cold), 3),
        "cold_start_first_request_ms": round(min(c["first_request_s"] for c in cold) * 1000, 1),
        "cold_start_first_other_route_ms": round(min(c["first_other_route_s"] for c in cold) * 1000, 1),
        "cold_start_cached_bundle_s": round(cached["first_answer_s"], 3),
        "baseline_import_numpy_onnxruntime_s": round(baseline_import, 3),
        "cold_start_over_baseline_import": round(min(c["first_answer_s"] for c in cold) / baseline_import, 1),
        "baseline_import_serving_libraries_s": round(libraries_import, 3),
        "cold_start_over_serving_libraries": round(
            min(c["first_answer_s"] for c in cold) / libraries_import, 2
        ),
        "reference_import_boto3_s": round(boto3_import, 3),
        "package_mb": _package_mb(),
        "rss_mb": peak_rss_mb(),
        # the function's process (bundle cached, init, then the request mix): what Lambda's memory holds
        "function_rss_mb": round(cached["rss_mb"], 1),
        "function_rss_after_first_request_mb": round(cached["rss_after_first_mb"], 1),
        "function_memory_mb": _Ctx.memory_limit_in_mb,
        "recall": _recall(graph_record),
        "index_build_s": (graph_record.get("ann") or {}).get("index_build_s"),
        "export_s": round(export_s, 1),
    }
    emit(result)
    return 0


def _exploration_ab(app: Any, events: list[dict[str, Any]], ctx: Any, block: int = 250) -> dict[str, Any]:
    """Handler wall and CPU time with exploration on and off, in alternating blocks of requests."""
    import contextlib

    from shelfwise.exploration import ExplorationPolicy

    rec = app.recommender
    saved = rec.exploration
    policy = ExplorationPolicy(share=1.0, epsilon=0.05, pool=30)
    wall: dict[str, list[float]] = {"on": [], "off": []}
    cpu: dict[str, list[float]] = {"on": [], "off": []}
    try:
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            for b, start in enumerate(range(0, len(events), block)):
                for arm in ("on", "off") if b % 2 == 0 else ("off", "on"):
                    rec.exploration = policy if arm == "on" else None
                    for ev in events[start : start + block]:
                        t, c = time.perf_counter(), time.thread_time()
                        app.lambda_handler(ev, ctx)
                        wall[arm].append((time.perf_counter() - t) * 1000)
                        cpu[arm].append((time.thread_time() - c) * 1000)
    finally:
        rec.exploration = saved
    out: dict[str, Any] = {"policy": policy.params(), "requests_per_arm": len(wall["on"])}
    for arm in ("on", "off"):
        out[f"{arm}_p50_ms"] = _pct(wall[arm], 50)
        out[f"{arm}_p99_ms"] = _pct(wall[arm], 99)
        out[f"{arm}_cpu_p50_ms"] = _pct(cpu[arm], 50)
        out[f"{arm}_cpu_p99_ms"] = _pct(cpu[arm], 99)
    out["p99_delta_ms"] = round(out["on_p99_ms"] - out["off_p99_ms"], 3)
    out["cpu_p99_delta_ms"] = round(out["on_cpu_p99_ms"] - out["off_cpu_p99_ms"], 3)
    return out


def _recall(record: dict[str, Any]) -> dict[str, Any] | None:
    """Recall@20 of the exported ANN graph: the sweep's figure at the chosen probe count (validation
    users, random queries; the index's pages alone) and the graph's own check in onnxruntime."""
    info = record.get("ann")
    if not info:
        return None
    probe = info.get("probe")
    out: dict[str, Any] = {"graph": record["graph"], "probe": probe, "pages": info.get("pages")}
    if probe is not None:
        sweep = info["sweep"].get(str(info.get("alpha")), {})
        out.update(alpha=info.get("alpha"), **{f"sweep_{k}": v.get(str(probe)) for k, v in sweep.items()})
    out.update(info.get("check") or {})
    if "rejected" in info:
        out["rejected"] = info["rejected"]
    return out


def _http(app: Any, events: list[dict[str, Any]]) -> list[float]:
    """Requests through the local runtime's HTTP API (shelfwise_local.runtime.httpapi), one client."""
    import http.client
    import uuid

    from shelfwise_local.runtime.functions import Invocation
    from shelfwise_local.runtime.httpapi import LocalHttpApi, Route

    def invoke(function: str, event: dict[str, Any]) -> Invocation:
        # What API Gateway delivers once its IAM authorizer accepted the call (the local HTTP API
        # has no authorizer of its own).
        event["requestContext"]["authorizer"] = iam_authorizer(SHOP_CLIENT)
        started = time.monotonic()
        payload = app.lambda_handler(event, _Ctx())
        return Invocation(
            function, uuid.uuid4().hex, started, (time.monotonic() - started) * 1000, event, payload
        )

    routes = [
        Route("GET", "/v1/users/{user_id}/recommendations", "serve"),
        Route("POST", "/v1/recommendations", "serve"),
        Route("GET", "/v1/items/{item_id}/similar", "serve"),
    ]
    api = LocalHttpApi("bench", routes, invoke, "123456789012", time.time).start()
    # One TCP segment per response: without it Nagle + delayed ACK add ~40 ms per keep-alive request.
    api.server.RequestHandlerClass.disable_nagle_algorithm = True  # type: ignore[attr-defined]
    host, port = api.server.server_address[:2]
    conn = http.client.HTTPConnection(str(host), int(port))
    times = []
    try:
        for ev in events:
            path = ev["rawPath"] + (f"?{ev['rawQueryString']}" if ev["rawQueryString"] else "")
            t = time.perf_counter()
            conn.request(
                ev["requestContext"]["http"]["method"],
                path,
                body=ev.get("body"),
                headers={"content-type": "application/json"},
            )
            conn.getresponse().read()
            times.append((time.perf_counter() - t) * 1000)
    finally:
        conn.close()
        api.stop()
    return times


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
