"""The training job: curated events -> search -> honest evaluation -> ONNX bundle -> registry.

Steps (each reported through :class:`Progress`):

1. interactions from the curated table; a global temporal split (test = last 20% of events);
2. the hyper-parameter search per family on a validation split *inside* the training window;
3. every family's winner refit on the training window and scored once on the test window,
   next to the baselines; the best family is the one best **on validation**;
4. when a champion exists, its recipe (algorithm + hyper-parameters from its manifest) is refit
   on the same training window and scored on the same test window, for the registry's gate;
5. the best family refit on all events, exported to ONNX, checked against the numpy reference,
   written as a bundle with items/users/similar tables, reference distributions and a report;
6. registered (immutable version; the gate decides whether it is offered for canary).

The same function runs in the Lambda, the Batch container and the CLI; only the adapters differ.
"""

from __future__ import annotations

import io
import json
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shelfwise import bots
from shelfwise import bundle as bundle_io
from shelfwise.errors import InputError
from shelfwise.events import SCHEMA_VERSION
from shelfwise.registry import Registration, Registry
from shelfwise.training.base import Recommender
from shelfwise.training.data import Interactions, Split, interactions_from_table, sample_users, temporal_split
from shelfwise.training.guard import NOT_CANDIDATES, FamilyOverride, fallback_on_test, guarded_choice
from shelfwise.training.itemknn import ItemKNN, clear_similarity_cache
from shelfwise.training.mf import ALS
from shelfwise.training.parity import check_parity
from shelfwise.training.popularity import Popularity
from shelfwise.training.ranker import RANKER, Ranker
from shelfwise.training.ranker_stage import RankerOutcome, evaluate_ranker, final_ranker
from shelfwise.training.reference import anonymous_actors, reference_distributions
from shelfwise.training.search import (
    ALL_FAMILIES,
    BASELINE_FAMILIES,
    COMPLEXITY,
    FAMILIES,
    evaluate_model,
    make_model,
    search,
)
from shelfwise.training.sequential import Sequential
from shelfwise.training.session_eval import evaluate_in_session, session_requests

ProgressSink = Callable[[dict[str, Any]], None]


class Progress:
    """Progress of a run: a line per step on a terminal, and every step to the given sinks.

    Sinks receive ``{"stage", "elapsed_s", ...fields}``; the Lambda handler turns them into
    EventBridge events and metrics, the CLI prints them for a person.
    """

    def __init__(self, stream: TextIO | None = sys.stderr, sinks: list[ProgressSink] | None = None) -> None:
        self.stream = stream
        self.sinks = list(sinks or [])
        self.t0 = time.perf_counter()
        self.timeline: list[dict[str, Any]] = []

    def __call__(self, stage: str, fields: dict[str, Any] | None = None) -> None:
        event = {"stage": stage, "elapsed_s": round(time.perf_counter() - self.t0, 2), **(fields or {})}
        if stage != "search":
            self.timeline.append(event)
        if self.stream is not None:
            extra = " ".join(f"{k}={_short(v)}" for k, v in (fields or {}).items())
            self.stream.write(f"[{event['elapsed_s']:7.1f}s] {stage:<10} {extra}\n")
            self.stream.flush()
        for sink in self.sinks:
            sink(event)


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ",".join(f"{k}:{_short(x)}" for k, x in v.items())
    return str(v)


# Families whose graph has a history fold-in route: the in-session view also scores them on the
# training items plus the visit's event and on the visit's event alone, the fair baselines for the
# sequential model mid-visit.
FOLD_IN_BASELINES = ("itemknn", "als")


@dataclass
class TrainConfig:
    """What to train and how; every field has a safe default."""

    model_name: str = "recs"
    k: int = 10
    split_fraction: float = 0.8
    search: str = "small"  # none | small | full
    families: tuple[str, ...] = FAMILIES
    primary_metric: str = "ndcg@10"
    threads: int = 2
    float16: bool = False
    similar_items: int = 20
    parity_users: int = 64
    max_eval_users: int = 5000  # seeded sample of test/validation users when there are more
    code_version: str = "unknown"
    seed: int = 42
    override: FamilyOverride | None = None
    in_session: bool = False  # also score every family mid-visit (``shelfwise.training.session_eval``)

    def __post_init__(self) -> None:
        # a retrieval family (the ranker is a stage over one, served when it earns it)
        servable = [f for f in ALL_FAMILIES if f not in NOT_CANDIDATES and f != RANKER]
        if self.override is not None and self.override.family not in servable:
            known = ", ".join(servable)
            raise InputError(f"cannot serve family {self.override.family!r}: choose one of {known}")
        if self.override is not None and self.override.family not in self.families:
            self.families = (*self.families, self.override.family)
        missing = [b for b in BASELINE_FAMILIES if b not in self.families]
        if missing:
            raise InputError(f"the baselines {missing} must always be trained and reported")
        if not 0 < self.k <= 1000:
            raise InputError("k must be in 1..1000")


@dataclass
class EvaluationResult:
    """The offline protocol's outcome on one log."""

    protocol: dict[str, Any]
    models: dict[str, dict[str, Any]]  # family -> test metrics
    validation: dict[str, dict[str, Any]]  # family -> {"params", "metrics"}
    best: str
    best_params: dict[str, Any]
    trials: int
    split: Split = field(repr=False)
    selection: dict[str, Any] = field(default_factory=dict)
    curves: dict[str, dict[str, Any]] = field(default_factory=dict)
    ranker: RankerOutcome | None = field(default=None, repr=False)
    in_session: dict[str, dict[str, Any]] = field(default_factory=dict)  # family -> metrics mid-visit

    @property
    def served_with_ranker(self) -> bool:
        return self.ranker is not None and self.ranker.chosen

    def to_json(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "models": self.models,
            "best": self.best,
            "ranker": self.served_with_ranker,
            "selection": self.selection,
            **({"in_session": self.in_session} if self.in_session else {}),
        }


@dataclass
class TrainResult:
    version: str
    bundle_dir: Path
    manifest: dict[str, Any]
    registration: Registration | None


def evaluate_log(
    data: Interactions, config: TrainConfig, progress: Progress, table: pa.Table | None = None
) -> EvaluationResult:
    """Search on validation, score each family's winner once on test, pick the best on validation.

    With the ranker among ``config.families``, it is trained on the chosen family's candidates (or
    on ``table``'s served lists, where it holds them) and served only on a significant gain
    (``shelfwise.training.ranker_stage``)."""
    retrieval_families = tuple(f for f in config.families if f != RANKER)
    split = sample_users(temporal_split(data, config.split_fraction), config.max_eval_users, config.seed)
    validation = sample_users(
        temporal_split(split.train, config.split_fraction), config.max_eval_users, config.seed
    )
    if len(split.users) == 0 or len(validation.users) == 0:
        raise InputError("not enough overlap in time: no user has events on both sides of the cut")
    progress(
        "split",
        {
            "cut": split.info["cut"],
            "validation_cut": validation.info["cut"],
            "test_users": len(split.users),
            "validation_users": len(validation.users),
        },
    )
    metric = config.primary_metric
    found = search(
        validation,
        retrieval_families,
        config.search,
        config.k,
        metric,
        threads=config.threads,
        progress=progress,
    )
    best, selection = guarded_choice(retrieval_families, found.per_user, COMPLEXITY, seed=config.seed)
    progress("select", {"family": best, "steps": len(selection["steps"])})
    models: dict[str, dict[str, Any]] = {}
    in_session: dict[str, dict[str, Any]] = {}
    requests = session_requests(data, split, seed=config.seed) if config.in_session else None
    fitted_best: Recommender | None = None
    for family in retrieval_families:
        model = make_model(family, found.best_params[family], threads=config.threads)
        model.progress = progress  # type: ignore[attr-defined]
        model.fit(split.train)
        models[family] = evaluate_model(model, split, config.k, threads=config.threads)
        progress("test", {"family": family, metric: models[family][metric]})
        if requests is not None and len(requests):
            in_session[family] = evaluate_in_session(model, requests, split, config.k)
            progress("test", {"family": family, f"in_session_{metric}": in_session[family][metric]})
            for route in ("visit", "session") if family in FOLD_IN_BASELINES else ():
                name = f"{family}+{route}"
                in_session[name] = evaluate_in_session(model, requests, split, config.k, route=route)
                progress("test", {"family": name, f"in_session_{metric}": in_session[name][metric]})
        if family == best:
            fitted_best = model
    ranker = None
    if RANKER in config.families and fitted_best is not None:
        ranker = evaluate_ranker(
            best,
            found.best_params[best],
            validation,
            split,
            fitted_best,
            k=config.k,
            metric=metric,
            seed=config.seed,
            threads=config.threads,
            table=table,
            progress=progress,
        )
        models[RANKER] = ranker.test_metrics
        selection["ranker"] = ranker.record
    served, why = fallback_on_test(RANKER if ranker and ranker.chosen else best, models, metric)
    if ranker is not None and ranker.chosen and served != RANKER:
        ranker.chosen = False
    elif ranker is not None and ranker.chosen:
        served = best
    selection["test_fallback"] = why
    selection["served"] = f"{served}+{RANKER}" if ranker is not None and ranker.chosen else served
    if why:
        progress("select", {"family": served, "test_fallback": why})
    if config.override is not None:
        selection["override"] = {**config.override.to_json(), "guard_would_serve": selection["served"]}
        if config.override.family != served:
            # the named family alone: a ranker is trained on the guard's family's candidates
            if ranker is not None:
                ranker.chosen = False
            selection["served"] = served = config.override.family
            progress("select", {"family": served, "operator_override": selection["override"]})
    best = served
    protocol = {
        **split.info,
        "k": config.k,
        "primary_metric": metric,
        "validation_cut": validation.info["cut"],
        "validation_users": len(validation.users),
        "search": config.search,
        "selection": "hyper-parameters per family chosen on the validation window; the family by the "
        "guarded rule (a more complex family only on a significant validation gain; popularity when the "
        "choice scores below it on the test window)",
        "targets_rule": "items touched after the cut and never before it, within the training catalogue",
        "ranking": "full training catalogue, the user's training items excluded",
        "cold_user_rule": "fewer than 5 distinct training items",
    }
    if requests is not None:
        protocol["in_session"] = (
            f"{len(requests)} test users, each one's first event after the cut as the request's event, "
            "answered as served (the graph's semantics); targets: their other new items; not used in selection; "
            "'<family>+visit': the same family through its fold-in route on the training items and the "
            "request's event (what it would answer if its graph read a known user's visit); "
            "'<family>+session': through that route on the request's event alone (an anonymous visit)"
        )
    if ranker is not None:
        protocol["ranker"] = (
            "re-ranks the chosen family's top candidates; trained on validation users' lists "
            f"({ranker.record['training_data']}), served only when a paired bootstrap over held-out "
            "validation users shows a significant gain over the family alone"
        )
    validation_out = {
        f: {"params": found.best_params[f], "metrics": found.best_metrics[f]} for f in retrieval_families
    }
    return EvaluationResult(
        protocol,
        models,
        validation_out,
        best,
        found.best_params[best],
        len(found.trials),
        split,
        selection,
        {**found.curves, **({RANKER: ranker.curves} if ranker is not None else {})},
        ranker,
        in_session,
    )


def champion_comparison(
    registry: Registry | None, split: Split, config: TrainConfig, progress: Progress
) -> dict[str, Any] | None:
    """The current champion's recipe refit on the same training window and scored on the same test."""
    if registry is None:
        return None
    champion = registry.aliases().champion
    if champion is None:
        return None
    manifest = registry.manifest(champion)
    family, params = manifest.get("algorithm"), manifest.get("hyperparameters")
    if family not in ALL_FAMILIES or not isinstance(params, dict):
        progress("champion", {"version": champion, "skipped": f"unknown recipe {family!r}"})
        return None
    model = make_model(str(family), params, threads=config.threads).fit(split.train)
    metrics = evaluate_model(model, split, config.k, threads=config.threads)
    progress("champion", {"version": champion, config.primary_metric: metrics[config.primary_metric]})
    return {
        "version": champion,
        "algorithm": family,
        "hyperparameters": params,
        "metrics": metrics,
        "method": "champion recipe refit on the same training window, scored on the same test window"
        + ("; its neural ranker is not refit (the retrieval family alone)" if _used_ranker(manifest) else ""),
    }


def _used_ranker(manifest: dict[str, Any]) -> bool:
    ranker = manifest.get("ranker")
    return isinstance(ranker, dict) and bool(ranker.get("used"))


def float16_check(model: ALS, data: Interactions, config: TrainConfig) -> dict[str, Any]:
    """Use a float16 item matrix only if it leaves every sampled user's top-k unchanged (ties aside)."""
    from shelfwise import onnx_export as ox

    arrays = model.export_arrays()
    rng = np.random.default_rng(config.seed)
    users = rng.choice(data.n_users, size=min(500, data.n_users), replace=False)
    none_i, none_w = np.zeros(0, np.int64), np.zeros(0, np.float32)
    mask = np.zeros(data.n_items, dtype=bool)
    kk = min(config.k, data.n_items)
    changed = 0
    for u in users:
        full_s, full_i = ox.factor_reference(arrays, int(u), none_i, none_w, mask, kk)
        half_s, half_i = ox.factor_reference(arrays, int(u), none_i, none_w, mask, kk, float16=True)
        differ = full_i != half_i
        if differ.any() and not np.allclose(full_s[differ], half_s[differ], rtol=1e-3, atol=1e-4):
            changed += 1
    return {"used": changed == 0, "users_checked": len(users), "users_with_changed_topk": changed}


def make_version(now: datetime, data_hash: str) -> str:
    """Sortable, unique-per-data version id: ``v20261128T161500Z-<hash8>``."""
    return f"v{now.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}-{data_hash[:8]}"


def run_training(
    table: pa.Table,
    out_dir: str | Path,
    config: TrainConfig,
    *,
    registry: Registry | None = None,
    version: str | None = None,
    progress: Progress | None = None,
    now: datetime | None = None,
    catalogue: pa.Table | None = None,
    off_policy: Callable[[Path], Any] | None = None,
    flagged_bots: Mapping[str, str] | None = None,
) -> TrainResult:
    """The whole job on an in-memory curated table; returns the bundle and the registration.

    ``catalogue`` (a catalogue snapshot, :func:`load_catalogue`) gives the bundle's titles,
    categories, prices and stock; events' own fields only where it lacks an item.
    ``off_policy``: the registry gate's off-policy half (``shelfwise.offpolicy_gate``).
    ``flagged_bots``: the actors the ingest flagged as bot-like (:func:`load_bot_flags`), left out
    like those the rules find over the whole training window.
    """
    progress = progress or Progress()
    started = now or datetime.now(UTC)
    # Bot-like actors (shelfwise.bots: rate, regularity, repetition) are not shoppers to learn from.
    found = bots.with_flagged(bots.detect(table), flagged_bots or {}, table)
    table = bots.exclude(table, found)
    progress("bots", found.to_dict())
    data = interactions_from_table(table)
    data_hash = data.data_hash()
    progress("load", {"events": data.n_events, "users": data.n_users, "items": data.n_items})
    ev = evaluate_log(data, config, progress, table)
    champion = champion_comparison(registry, ev.split, config, progress)
    clear_similarity_cache()  # the windows' tables are done with; the final fit is on all data

    final = make_model(ev.best, ev.best_params, threads=config.threads)
    final.progress = progress  # type: ignore[attr-defined]
    if hasattr(final, "track_loss"):
        final.track_loss = True
    final.fit(data)
    progress("fit", {"family": ev.best, "params": ev.best_params})
    served_model: Recommender = final
    if ev.served_with_ranker and ev.ranker is not None:
        served_model = final_ranker(
            ev.ranker, ev.split, final, data, metric=config.primary_metric, table=table, progress=progress
        )
        progress("fit", {"family": RANKER, "retrieval": ev.best, "epochs": served_model.params["epochs"]})
    half = float16_check(final, data, config) if (config.float16 and isinstance(final, ALS)) else None
    # factor and sequential models: int8 candidate graph only if it answers like the exact one
    onnx_graph = None
    if isinstance(final, ALS):
        from shelfwise import onnx_ann

        graph_model, onnx_graph = onnx_ann.export_factor_model(
            final.export_arrays(),
            check_ks=(config.k, 500),
            seed=config.seed,
            float16=bool(half and half["used"]),
            meta={"shelfwise.algorithm": final.algorithm},
        )
    elif isinstance(final, Sequential):
        from shelfwise import onnx_sequential

        graph_model, onnx_graph = onnx_sequential.export_sequential_model(
            final.export_arrays(),
            check_ks=(config.k, 500),
            seed=config.seed,
            meta={"shelfwise.algorithm": final.algorithm},
        )
    else:
        graph_model = final.to_onnx()
    if isinstance(served_model, Ranker):  # the retrieval graph's top-C re-ranked inside one graph
        graph_model = served_model.to_onnx(graph_model)
    graph = graph_model.SerializeToString()  # once: the parity session and the bundle file
    parity = check_parity(served_model, graph, data, config.k, config.parity_users, config.seed)
    approximate = bool(onnx_graph and onnx_graph.get("graph") == "ann-pages")
    if approximate and not parity["ok"]:
        # the page index answers like the exact scoring only up to its recall, which the exporter
        # measured and gated (onnx_graph.ann.check: recall, no excluded item, no short list)
        parity = {**parity, "ok": True, "gated_by": "onnx_graph.ann.check"}
    progress("parity", {k: parity[k] for k in ("requests", "max_abs_score_diff", "topk_mismatches")})
    if not parity["ok"]:
        raise InputError(f"exported graph does not match the reference scoring: {parity}")

    recent = Popularity(30).fit(data).scores
    # a neighbour table is 8 bytes x similar_items per item (160 MB at 1M items): catalogues
    # large enough for the page index answer similar items from the model instead
    similar_model = (
        None
        if approximate
        else final
        if isinstance(final, ItemKNN)
        else ItemKNN(50, "session", threads=config.threads).fit(data)
    )
    version = version or make_version(started, data_hash)
    meta = item_metadata(data.item_ids, data.item_info, catalogue)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {
        "model_name": config.model_name,
        "version": version,
        "algorithm": ev.best,
        "hyperparameters": ev.best_params,
        "training_window": {
            "start": _iso_ms(int(data.ts[0])),
            "end": _iso_ms(int(data.ts[-1])),
            "events": data.n_events,
            "users": data.n_users,
            "items": data.n_items,
        },
        "data_hash": data_hash,
        "excluded_bots": found.to_dict(),
        "evaluation": {
            "protocol": ev.protocol,
            "primary_metric": config.primary_metric,
            "models": ev.models,
            "validation": ev.validation,
            "best": ev.best,
            "selection": ev.selection,
            "curves": ev.curves,
            "trials": ev.trials,
            "champion": champion,
        },
        "reference": reference_distributions(
            served_model, data, config.k, config.seed, anonymous_actors(table, data), ~meta["in_stock"]
        ),
        "parity": parity,
        "float16": half,
        "onnx_graph": onnx_graph,
        "model_details": final.describe(),
        "ranker": (
            {
                "used": True,
                **served_model.describe(),
                "params": served_model.params,
                "selection": ev.selection.get("ranker"),
            }
            if isinstance(served_model, Ranker)
            else None
            if ev.ranker is None
            else {"used": False, "selection": ev.selection.get("ranker")}
        ),
        "schema_version": SCHEMA_VERSION,
        "code_version": config.code_version,
        "created_at": started.isoformat(timespec="seconds"),
        "k": config.k,
    }
    from shelfwise.report_html import render_report

    (out / "report.html").write_text(render_report(manifest))
    bought = data.purchases_by_user()
    manifest["catalogue"] = meta.pop("_source")
    from shelfwise.training.content import CONTENT_FILE, content_arrays

    content = content_arrays(data.item_ids, meta["title"], meta["category"], catalogue)
    if content is not None:  # new items, scored by content at serve time (checksummed like the rest)
        bundle_io.savez_aligned(out / CONTENT_FILE, content)
        manifest["catalogue"]["new_items"] = len(content["new_item_id"])
    written = bundle_io.write_bundle(
        out,
        model=graph,
        items={"item_id": data.item_ids, **meta, "popularity": recent},
        manifest=manifest,
        users=data.user_ids,
        similar=None if similar_model is None else similar_model.similar(config.similar_items),
        purchased=bought,
    )
    if registry is None:  # else Registry.register verifies the same way before uploading
        bundle_io.verify_bundle(out)
    progress("bundle", {"dir": str(out), "version": version, "files": len(written["files"])})
    registration = None
    if registry is not None:
        override = config.override
        registration = registry.register(
            out,
            version,
            off_policy=off_policy,
            gate_override=override.to_json() if override is not None and override.past_gate else None,
        )
        progress(
            "register",
            {
                "version": version,
                "offered_for_canary": registration.offered_for_canary,
                "became_champion": registration.became_champion,
                "gate": "; ".join(registration.gate.reasons) or "passed",
            },
        )
    return TrainResult(version, out, written, registration)


def item_metadata(
    item_ids: np.ndarray, from_events: dict[str, np.ndarray], catalogue: pa.Table | None
) -> dict[str, Any]:
    """Title, category, price and stock per item: the catalogue's where it lists the item, else the
    events' (stock then unknown: in stock). ``_source`` says how many came from each."""
    n = len(item_ids)
    out: dict[str, Any] = {
        "category": np.asarray(from_events["category"], dtype=object).copy(),
        "title": np.asarray(from_events["title"], dtype=object).copy(),
        "price": np.asarray(from_events["price"], dtype=np.float32).copy(),
        "in_stock": np.ones(n, dtype=bool),
    }
    listed = 0
    if catalogue is not None and catalogue.num_rows:
        cat_ids = np.asarray(catalogue["item_id"].to_pylist(), dtype=str)
        order = np.argsort(cat_ids)
        sorted_ids = cat_ids[order]
        pos = np.minimum(np.searchsorted(sorted_ids, item_ids.astype(str)), len(sorted_ids) - 1)
        hit = sorted_ids[pos] == item_ids.astype(str)
        rows = order[pos[hit]]
        listed = int(hit.sum())

        def column(name: str) -> list[Any]:
            return (
                catalogue[name].to_pylist() if name in catalogue.column_names else [None] * catalogue.num_rows
            )

        titles, cats, prices = column("title"), column("category"), column("price")
        stock, active = column("in_stock"), column("active")
        where = np.flatnonzero(hit)
        for i, r in zip(where.tolist(), rows.tolist(), strict=True):
            out["title"][i] = titles[r] or out["title"][i]
            out["category"][i] = cats[r] or out["category"][i]
            if prices[r] is not None:
                out["price"][i] = prices[r]
            out["in_stock"][i] = bool(stock[r] if stock[r] is not None else True) and active[r] is not False
    out["category"] = out["category"].astype(str)
    out["title"] = out["title"].astype(str)
    out["_source"] = {"items": n, "from_catalogue": listed, "from_events": n - listed}
    return out


def load_catalogue(s3: Any, bucket: str) -> pa.Table | None:
    """The latest catalogue snapshot in the curated bucket (None before any catalogue was ingested)."""
    from shelfwise.ingest.catalogue import LATEST_KEY

    try:
        pointer = json.loads(s3.get_object(Bucket=bucket, Key=LATEST_KEY)["Body"].read())
    except s3.exceptions.NoSuchKey:
        return None
    body = s3.get_object(Bucket=bucket, Key=pointer["key"])["Body"].read()
    return pq.read_table(io.BytesIO(body))


def load_bot_flags(s3: Any, bucket: str) -> dict[str, str]:
    """The ingest's bot-like actors (actor -> rule) from ``curated/_bots/`` (``shelfwise.bots``)."""
    paginator = s3.get_paginator("list_objects_v2")
    tables = []
    for page in paginator.paginate(Bucket=bucket, Prefix=bots.FLAGS_PREFIX + "/"):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith(".parquet"):
                body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                tables.append(pq.read_table(io.BytesIO(body)))
    return bots.read_flags(tables)


def load_curated(s3: Any, bucket: str, prefix: str = "curated/events/", since: str | None = None) -> pa.Table:
    """Every curated Parquet object under ``prefix`` (optionally partitions ``event_date >= since``)."""
    paginator = s3.get_paginator("list_objects_v2")
    tables = []
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            if not key.endswith(".parquet"):
                continue
            if since and "event_date=" in key and key.split("event_date=")[1][:10] < since:
                continue
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            tables.append(pq.read_table(io.BytesIO(body)))
    if not tables:
        raise InputError(f"no curated Parquet under s3://{bucket}/{prefix}")
    return pa.concat_tables(tables, promote_options="permissive")


def _iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")


def summary(result: TrainResult) -> dict[str, Any]:
    """The JSON a CLI or handler prints/returns about a run."""
    ev = result.manifest["evaluation"]
    out = {
        "version": result.version,
        "bundle_dir": str(result.bundle_dir),
        "algorithm": result.manifest["algorithm"],
        "hyperparameters": result.manifest["hyperparameters"],
        "best": ev["best"],
        "models": {
            name: {m: v for m, v in metrics.items() if m != "segments"}
            for name, metrics in ev["models"].items()
        },
    }
    if (ev.get("selection") or {}).get("override"):
        out["override"] = ev["selection"]["override"]
    if result.registration is not None:
        out["registration"] = result.registration.to_json()
    return json.loads(json.dumps(out, default=str))
