"""Synthetic bundles: a factor (or sequential, or ranker) model over a made-up catalogue, at any size.

Items of a category share a centroid and users lean towards one category, so lists have structure;
titles are made of a few shop words. Benchmarks and tests build their bundles here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

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
    save_exact: Path | None = None,
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
    graph_record: dict[str, Any] = {}
    if model_kind.startswith("sequential"):
        graph, graph_record = _synthetic_sequential(
            items, cats, fav, history, rng, int8_candidates, save_exact
        )
    else:
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
    if model_kind.endswith("ranker"):
        from shelfwise_local.bench.serve.ranker import RETRIEVAL_GRAPH, synthetic_ranker

        if save_items is not None:  # the plain retrieval graph beside the bundle, for the same-run A/B
            (save_items.parent / RETRIEVAL_GRAPH).write_bytes(graph.SerializeToString())
        graph = synthetic_ranker(graph, cats, fav, history, rng)
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
    items: np.ndarray,
    cats: np.ndarray,
    fav: np.ndarray,
    history: int,
    rng: np.random.Generator,
    int8_candidates: bool,
    save_exact: Path | None,
) -> tuple[Any, dict[str, Any]]:
    """A sequential graph of the serving cost of a trained one and its export record: 2 blocks,
    random weights, the item matrix as its embeddings, a small item bias, and ``history`` stored
    events per user from their favourite category. Exported like the training job's (the int8
    candidate graph when its check passes); ``save_exact``: also write the exact graph there."""
    from shelfwise import onnx_export as ox
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
        item_bias=(0.1 * rng.normal(size=n)).astype(np.float32),
        type_emb=w(osq.N_TYPE_TOKENS, d),
        pos_emb=w(50, d),
        blocks=blocks,
        ln_g=ones,
        ln_b=zeros,
        heads=1,
        user_indptr=np.arange(0, (len(fav) + 1) * history, history, dtype=np.int64),
        user_items=user_items,
        user_types=rng.integers(1, osq.N_TYPE_TOKENS, user_items.size).astype(np.int8),
    )
    meta = {"shelfwise.algorithm": "sequential"}
    if save_exact is not None:
        ox.save_model(osq.build_sequential_model(arrays, meta=meta), save_exact)
    return osq.export_sequential_model(
        arrays, int8_candidates=int8_candidates, check_ks=(20, 500), check_requests=200, meta=meta
    )
