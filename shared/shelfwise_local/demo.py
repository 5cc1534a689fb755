"""``shelfwise demo``: the whole loop of the platform, locally, on a simulated shop.

template.yaml runs in the local runtime (embedded moto by default, or LocalStack) with one clock
that the demo drives and the simulated shop follows:

    shop exports + catalogue -> RawBucket raw/ -> ingest -> train v1 (champion)
    -> an item sells out (raw/catalogue/) -> it leaves the served lists, no retraining
    -> traffic through the HTTP API (feedback -> Firehose -> raw -> ingest; impressions as
       served-list log lines -> subscription filter -> Firehose -> raw -> ingest),
       ComputeMetrics and PromoteModel every 5 minutes
    -> "yesterday's" export + feedback -> train v2 -> canary 10% -> 50% -> 100% -> promoted
    -> broken v3 (v2 with shuffled item scores) -> canary -> alarm -> RollbackModelFunction (SNS)
    -> taste drift in the shop -> ChampionCtrDropLCB alarm

A readable timeline goes to stderr, the HTML monitoring report to a file, and one JSON line to
stdout; the exit code is 1 when an expectation fails (2 for bad arguments).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from shelfwise.cli.common import plain

REPO = Path(__file__).resolve().parents[2]
WINDOW_S = 300
# Serving explores 5% of slots (swaps from the model's next 30 items) and logs propensities, so the
# registry's gate can estimate a new version off-policy before it sees traffic (docs/offpolicy.md).
DEMO_SERVING_RULES: dict[str, Any] = {
    "exclude_out_of_stock": True,
    "exclude_purchased": True,
    "exploration": {"share": 1.0, "epsilon": 0.05, "pool": 30},
}
# The demo's champion serves a few hundred known-user lists before v3 arrives (the fast run ~500);
# the platform defaults are 1,000 lists and an effective sample size of 200.
DEMO_OPE_MIN_LISTS = 150
DEMO_OPE_MIN_ESS = 100.0
BROKEN_NOTE = "demo: v2 with its item scores shuffled (a broken export that passes the offline gate)"


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of one demo run. ``fast()`` is the e2e test's smaller run of the same loop."""

    n_users: int = 5000
    n_items: int = 1500
    history_days: int = 6
    v1_days: int = 3  # v1 learns from the first days only; v2 from all of them (+ served feedback)
    sessions_per_user_day: float = 1.0
    seed: int = 7
    k: int = 10
    # Requests per 5-minute window, the same in every phase (the shop's stable traffic).
    requests: int = 400
    # Template parameter CanaryMode. The split's control is the champion's 90% of the traffic, so
    # at this traffic it catches a broken model sooner than interleaving, whose evidence is only
    # the canary's own clicked lists (docs/demo.md); --canary-mode interleave runs the other design.
    canary_mode: str = "split"
    # Template parameter CanaryAllocation: the fixed stages, or the Thompson-sampling split.
    canary_allocation: str = "stages"
    stable_windows: int = 3
    # The serving day (None: the most recent one ending today); any weekday.
    serving_day: date | None = None
    # Champion CTR baseline (MonitoringConfig.champion_baseline_lists, default 10,000) and its
    # lookback (default 12 windows): sized to the demo's shop through MONITORING_CONFIG.
    champion_baseline_lists: int = 1000
    champion_lookback_windows: int = 6
    # Promotion evidence (MonitoringConfig.noninferiority_margin and its interleaved twin, defaults
    # 0.03 and 0.06): a canary of a couple of platform hours at this traffic can show near-equal
    # models non-inferior only within a wide margin (docs/demo.md); production canaries run for days.
    noninferiority_margin: float = 0.4
    # Share of users whose tastes change. At 30% the ItemKNN champion loses ~15% of its list CTR,
    # which the demo's traffic cannot resolve in 30 windows; 50% is a clear, detectable drift.
    drift_share: float = 0.5
    taste_drift: bool = True  # the e2e test's --fast run stops after the rollback
    max_canary_windows: int = 50
    max_broken_windows: int = 12
    # A broken model must be out within this many windows (40 minutes): at 400 requests per
    # window the 10% canary's ~40 lists per window decide in 1 to ~7 windows, by the v2 model's
    # click rate (docs/demo.md).
    detection_windows_max: int = 8
    max_drift_windows: int = 30
    # Families trained beside the defaults, e.g. "sequential" (needs `make torch`).
    extra_families: str = ""

    @classmethod
    def fast(cls) -> DemoConfig:
        return cls(stable_windows=2, champion_baseline_lists=800, taste_drift=False)


class Timeline:
    """Readable progress on stderr: platform time, wall seconds, message."""

    def __init__(self, stream: TextIO | None, clock: Any) -> None:
        self.stream, self.clock, self.t0 = stream, clock, time.perf_counter()
        self.entries: list[dict[str, Any]] = []

    def __call__(self, message: str, **data: Any) -> None:
        at = datetime.fromtimestamp(self.clock(), UTC) if self.clock else None
        wall = time.perf_counter() - self.t0
        self.entries.append({"at": at.isoformat() if at else None, "wall_s": round(wall, 1), "msg": message})
        if self.stream is not None:
            stamp = at.strftime("%a %H:%M") if at else "--"
            print(f"[{stamp} | {wall:6.1f}s] {message}", file=self.stream, flush=True)


@dataclass
class Counts:
    """Requests served per model version in an interval of platform time."""

    by_version: dict[str, int] = field(default_factory=dict)
    errors: int = 0

    def add(self, version: str) -> None:
        self.by_version[version] = self.by_version.get(version, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.by_version.values()) + self.errors


def shuffled_scores_graph(model: Any, seed: int) -> Any:
    """The graph with its item scores permuted: the score meant for item j is given to item pi(j),
    like shuffled item embeddings, for any graph with the bundle's I/O (exact, int8-candidate,
    neighbour or popularity).

    Done at the graph's edges, so it does not depend on how the inside scores and masks: the graph
    runs on the mask seen through pi (``exclude_mask[pi]``) and its answer j is reported as pi(j).
    Excluded items therefore stay excluded, and an item is shown with another item's score.
    """
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    n_items = next(
        d.dim_value for i in graph.input if i.name == "exclude_mask" for d in i.type.tensor_type.shape.dim
    )
    producers = [n for n in graph.node if "indices" in n.output]
    if n_items <= 0 or len(producers) != 1:
        raise ValueError("expected a static exclude_mask input and one node producing indices")
    perm = np.random.default_rng(seed).permutation(n_items).astype(np.int64)
    graph.initializer.append(numpy_helper.from_array(perm, "demo_shuffle_perm"))

    def rename(nodes: Any) -> None:  # every use of the mask, in subgraphs too
        for node in nodes:
            for i, name in enumerate(node.input):
                if name == "exclude_mask":
                    node.input[i] = "demo_shuffled_mask"
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    rename(attr.g.node)

    rename(graph.node)
    producer = producers[0]
    producer.output[list(producer.output).index("indices")] = "demo_inner_indices"
    graph.node.insert(
        0, helper.make_node("Gather", ["exclude_mask", "demo_shuffle_perm"], ["demo_shuffled_mask"], axis=0)
    )
    graph.node.append(
        helper.make_node("Gather", ["demo_shuffle_perm", "demo_inner_indices"], ["indices"], axis=0)
    )
    onnx.checker.check_model(model)
    return model


def build_broken_bundle(registry: Any, good_version: str, version: str, work: Path, seed: int) -> Path:
    """v3: the good version's bundle with shuffled item scores, everything else identical."""
    import onnx

    from shelfwise.bundle import read_bundle, write_bundle

    src = registry.download(good_version, work / "good")
    bundle = read_bundle(src)
    graph = shuffled_scores_graph(onnx.load(str(bundle.model_path)), seed)
    manifest = {k: v for k, v in bundle.manifest.items() if k != "files"}
    manifest.update(version=version, notes=BROKEN_NOTE, parent_version=good_version)
    # Evaluated like the model it was exported from (the export is what broke): on the champion's
    # own window it scores what the champion scores, so the offline gate lets it through.
    ev = dict(manifest.get("evaluation") or {})
    best = (ev.get("models") or {}).get(ev.get("best"), {})
    ev["champion"] = {"version": good_version, "metrics": dict(best)}
    manifest["evaluation"] = ev
    out = work / "broken"
    similar = None
    if bundle.similar_indices is not None and bundle.similar_scores is not None:
        similar = (bundle.similar_indices, bundle.similar_scores)
    write_bundle(
        out,
        model=graph,
        items=bundle.items,
        manifest=manifest,
        users=bundle.users,
        similar=similar,
        purchased=bundle.purchased,
    )
    return out


class Demo:
    """One run of the whole loop. ``run()`` returns the result dict (the final JSON line)."""

    def __init__(
        self,
        cfg: DemoConfig,
        *,
        backend: str = "moto",
        out_dir: Path | None = None,
        report_path: Path | None = None,
        stream: TextIO | None = sys.stderr,
    ) -> None:
        self.cfg = cfg
        self.backend = backend
        self.out_dir = Path(out_dir or tempfile.mkdtemp(prefix="shelfwise-demo-"))
        self.report_path = report_path or self.out_dir / "report.html"
        self.stream = stream
        self.rt: Any = None
        self.log = Timeline(stream, None)
        self.result: dict[str, Any] = {}
        self.stages: dict[str, bool] = {}
        # (platform time, each served item's version) per request
        self.counts: list[tuple[float, list[str]]] = []
        self.requests = 0
        self.errors = 0
        self.stable: list[tuple[float, float]] = []
        self._seen_rollbacks: set[str] = set()  # platform-time intervals that must stay quiet

    # ------------------------------------------------------------------ set-up
    def _shop_params(self, incidents: tuple[Any, ...] = ()) -> Any:
        from shelfwise.simulator import ShopParams

        c = self.cfg
        # The serving days follow the history; the shop starts so that day `history_days` is today
        # (recent timestamps suit every emulator's metric store), whatever the weekday.
        serving_day = c.serving_day or datetime.now(UTC).date()
        start = serving_day - timedelta(days=c.history_days)
        return ShopParams(
            n_users=c.n_users,
            n_items=c.n_items,
            n_days=c.history_days + 8,
            start=date(start.year, start.month, start.day),
            sessions_per_user_day=c.sessions_per_user_day,
            incidents=incidents,
        )

    def _start_runtime(self, t0: float) -> None:
        from shelfwise_local.runtime import Clock, LocalRuntime
        from shelfwise_local.runtime.httpapi import LOCAL_API_PARAMETERS

        overrides = {
            "champion_baseline_lists": self.cfg.champion_baseline_lists,
            "champion_lookback_windows": self.cfg.champion_lookback_windows,
            "noninferiority_margin": self.cfg.noninferiority_margin,
            "interleaved_noninferiority_margin": self.cfg.noninferiority_margin,
        }
        self.rt = LocalRuntime(
            REPO / "template.yaml",
            backend=self.backend,
            clock=Clock(start=t0),
            stack_name=f"demo{uuid.uuid4().hex[:6]}",
            # Serving caches the registry aliases for AliasCacheSeconds of wall time (30 s in the
            # template); one wall second is about a platform minute here, so 1 s keeps "an alias
            # change is live within a minute or so" true on the demo's compressed clock.
            # The local HTTP API has no IAM/JWT authorizers: the demo runs the API explicitly open.
            parameters={
                "AliasCacheSeconds": "1",
                "StockCacheSeconds": "1",
                "CanaryMode": self.cfg.canary_mode,
                "CanaryAllocation": self.cfg.canary_allocation,
                **LOCAL_API_PARAMETERS,
                "ServingRules": json.dumps(DEMO_SERVING_RULES),
            },
            quiet=True,
            defer_metrics=True,
        ).start()
        self.rt.host.find("ComputeMetricsFunction").environment["MONITORING_CONFIG"] = json.dumps(overrides)
        self.log.clock = self.rt.clock.now
        self.overrides: dict[str, Any] = {
            "MONITORING_CONFIG": overrides,
            "AliasCacheSeconds": 1,
            "StockCacheSeconds": 1,
        }
        self.parameters = {"CanaryMode": self.cfg.canary_mode, "CanaryAllocation": self.cfg.canary_allocation}
        fn = self.rt.host.find("PromoteModelFunction").environment
        self.env, self.model_name = fn["SHELFWISE_ENV"], fn["MODEL_NAME"]
        if self.cfg.extra_families:
            # e.g. the sequential model: trained with the others, served only if the guard picks it
            self.rt.host.find("TrainModelFunction").environment["TRAINING_FAMILIES"] = self.cfg.extra_families
            self.overrides["TRAINING_FAMILIES"] = self.cfg.extra_families

    def _registry(self) -> Any:
        from shelfwise.registry import Registry

        return Registry(
            self.rt.s3,
            self.rt.client("ssm"),
            self.rt.client("events"),
            self.rt.physical_name("ModelsBucket"),
            self.env,
            self.model_name,
            actor="demo",
            clock=self.now,
        )

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.rt.clock.now(), UTC)

    def aliases(self) -> Any:
        return self._registry().aliases()

    # ------------------------------------------------------------------ traffic
    def _contexts(self) -> Iterator[Any]:
        day = self.cfg.history_days
        while True:
            yield from self.shop.traffic(day)
            day += 1
            if day >= self.shop.params.n_days:
                day = self.cfg.history_days

    def _serve_module(self) -> Any:
        return sys.modules.get(f"_shelfwise_fn_{self.rt.host.namespace}_ServeRecommendationsFunction.app")

    def _sync_serving(self) -> Any:
        """Let serving see the registry's current aliases before the next minute of traffic.

        Serving re-reads aliases when its cache (AliasCacheSeconds, *wall* time) expires and swaps
        in the background. Platform time runs ~60x faster here, so on a loaded machine a change
        could reach serving minutes of platform time late and the results would depend on wall
        speed; a synchronous sync once per platform minute keeps the run deterministic and still
        models a 1-minute cache.
        """
        aliases = self.aliases()
        module = self._serve_module()
        if module is not None and module.recommender.health()["aliases"] != aliases.to_json():
            module.recommender.sync()
        return aliases

    def window(self, n: int, stop: Callable[[Any], bool] | None = None) -> Counts:
        """Serve ``n`` requests over the next 5-minute window (five 1-minute steps), post the
        feedback, and advance to the next window: impressions are delivered, the schedules fire.

        ``stop(aliases)``, checked before each minute, ends the traffic of this window early (the
        clock still runs to its end): e.g. once the broken model is out, the rest of its last window
        has nothing left to show.
        """
        counts = Counts()
        feedback: list[dict[str, Any]] = []
        per_step = [n // 5 + (1 if i < n % 5 else 0) for i in range(5)]
        stopped = False
        for step, m in enumerate(per_step):
            aliases = self._sync_serving()
            stopped = stopped or (stop is not None and stop(aliases))
            if stopped:
                m = 0
            base_ms = int(self.rt.clock.now() * 1000)
            for i in range(m):
                ctx = dataclasses.replace(next(self.traffic), ts_ms=base_ms + int(i * 55_000 / max(m, 1)))
                try:
                    served = self.http(ctx, self.cfg.k)
                except Exception:  # an HTTP error is what a shop front end would see; counted
                    counts.errors += 1
                    continue
                self.personal_ids.update(x for x in (ctx.user_id, ctx.session_id) if x)
                version = str(served.get("model_version") or served.get("variant") or "none")
                counts.add(f"{served.get('variant')}:{version[-8:]}")
                # Per item: the version that contributed it (interleaved lists mix two).
                n_items = len(served.get("items") or [])
                sources = served.get("sources") or [version] * n_items
                self.counts.append((self.rt.clock.now(), sources))
                feedback.extend(self.shop.respond(served, ctx))
            if step < 4:
                self.rt.advance(60)
        for i in range(0, len(feedback), 500):
            self.http.post_events(feedback[i : i + 500])
        # Its first pump hands the served-list log lines of this window to the impressions stream
        # (the subscription filter), before any schedule fires.
        self.rt.advance(60)
        self.requests += counts.total
        self.errors += counts.errors
        return counts

    # ------------------------------------------------------------------ phases
    def setup(self) -> None:
        from shelfwise.simulator import HttpRecommender, Shop
        from shelfwise.simulator.generate import simulate_to_files

        c = self.cfg
        params = self._shop_params()
        sim = simulate_to_files(params, seed=c.seed, out_dir=self.out_dir / "shop")
        day0 = datetime(params.start.year, params.start.month, params.start.day, tzinfo=UTC).timestamp()
        # The platform's clock starts on the first serving day at 08:00:30 (windows are hh:mm:00 +
        # 5 min; the 5-minute schedules fire 30 s after each window closes).
        self.t0 = day0 + c.history_days * 86400 + 8 * 3600 + 30
        self._start_runtime(self.t0)
        self.log(f"runtime up on {self.rt.emulator.kind} ({self.rt.stack_name}); API {self.rt.api_url}")
        self.shop = Shop(params, seed=c.seed)
        self.traffic = self._contexts()
        # Every user and session id sent to the API, so tests can check no handler logged one.
        self.personal_ids: set[str] = set()
        self.http = HttpRecommender(self.rt.api_url, timeout=60)
        self.files = sorted((self.out_dir / "shop" / "events").iterdir())
        self.log(
            f"shop: {c.n_users} users, {c.n_items} items; {sim.summary()['events']} events simulated "
            f"({len(self.files)} daily exports)"
        )

    def upload(self, files: list[Path]) -> None:
        self.rt.pump()
        for f in files:
            self.rt.put_object("RawBucket", f"raw/native/{f.name}", f.read_bytes(), pump=False)
        self.rt.pump()
        bad = [i for i in self.rt.invocations_of("IngestEventsFunction") if not i.ok]
        if bad:
            raise RuntimeError(f"ingest failed: {bad[-1].error}")

    def train(self, label: str) -> dict[str, Any]:
        t = time.perf_counter()
        payload = self.rt.invoke("TrainModelFunction", {"mode": "train", "time": self.now().isoformat()})
        tr = payload.get("training") or {}
        reg = tr.get("registration") or {}
        # The registry's ModelRegistered event reaches promote_model (the template's rule), which
        # offers the version for canary: deliver it, and show what it decided.
        self.rt.pump()
        offers = [
            i.payload
            for i in self.rt.invocations_of("PromoteModelFunction")
            if isinstance(i.event, dict)
            and i.event.get("detail-type") == "ModelRegistered"
            and (i.event.get("detail") or {}).get("version") == tr.get("version")
            and i.ok
        ]
        if offers:
            payload["canary"] = offers[-1]
        self.log(
            f"{label}: trained {tr.get('version')} ({tr.get('algorithm')}) in {time.perf_counter() - t:.0f}s; "
            f"gate {'passed' if (reg.get('gate') or {}).get('passed') else 'FAILED'}"
            + (
                f" ({'; '.join((reg.get('gate') or {}).get('reasons') or [])})"
                if reg and not reg["gate"]["passed"]
                else ""
            )
            + (f"; canary: {payload['canary']['reason']}" if payload.get("canary") else "")
        )
        return payload

    def run_v1(self) -> None:
        hist = self.files[: self.cfg.v1_days]
        self.upload(hist)
        self.log(f"ingested {len(hist)} exports through RawBucket -> SQS -> IngestEventsFunction")
        catalogue = self.out_dir / "shop" / "catalogue" / "catalogue.csv"
        self.upload_catalogue(catalogue.read_bytes(), "catalogue.csv")
        self.log(
            "ingested the shop's catalogue through raw/catalogue/ (titles, prices, stock for the bundles)"
        )
        p = self.train("v1")
        self.v1 = p["training"]["version"]
        ok = self.aliases().champion == self.v1
        self.stages["v1_champion"] = ok
        self.log(f"v1 {self.v1} is champion: {ok}")

    def upload_catalogue(self, body: bytes, name: str) -> None:
        """A catalogue file (the shop's export, or a stock change) through raw/catalogue/."""
        self.rt.put_object("RawBucket", f"raw/catalogue/{name}", body)
        bad = [i for i in self.rt.invocations_of("IngestEventsFunction") if not i.ok]
        if bad:
            raise RuntimeError(f"catalogue ingest failed: {bad[-1].error}")

    def _sync_stock(self) -> None:
        """Let serving re-read the catalogue's stock snapshot now (its cache is StockCacheSeconds of
        *wall* time; as for aliases, a synchronous read keeps the run deterministic)."""
        module = self._serve_module()
        if module is not None and module.recommender.stock is not None:
            module.recommender.stock.sync()

    def _user_list(self, user: str) -> list[str]:
        import urllib.request

        url = f"{self.rt.api_url}/v1/users/{user}/recommendations?k={self.cfg.k}"
        with urllib.request.urlopen(url, timeout=60) as resp:
            return [str(i["item_id"]) for i in json.loads(resp.read())["items"]]

    def run_stock(self) -> None:
        """An item sells out: a stock change goes through raw/catalogue/ and the item leaves the
        served lists at serving's next stock refresh, with no retraining; then it is restocked."""
        from shelfwise.simulator.catalogue_feed import catalogue_csv

        catalogue = self.shop.catalogue
        user = next(ctx.user_id for ctx in self._contexts() if ctx.user_id)
        before = self._user_list(user)
        if not before:
            self.stages["stock_out_left_lists"] = False
            return
        top = before[0]
        index = int(np.flatnonzero(catalogue.item_id == top)[0])
        self.upload_catalogue(catalogue_csv(catalogue, self.now(), [index], [False]), "stock-out.csv")
        self._sync_stock()
        after = self._user_list(user)
        left = top not in after
        self.stages["stock_out_left_lists"] = left
        self.log(
            f"item {top} sold out (raw/catalogue/stock-out.csv): user {user}'s list {before[:3]}... "
            f"-> {after[:3]}...; left the list without retraining: {left}"
        )
        # a later state of the item (the clock is not moved: windows stay aligned with the schedules)
        later = self.now() + timedelta(seconds=1)
        self.upload_catalogue(catalogue_csv(catalogue, later, [index], [True]), "restock.csv")
        self._sync_stock()
        back = top in self._user_list(user)
        self.log(f"item {top} restocked: back in the list: {back}")

    def run_stable(self, windows: int, n: int, label: str) -> None:
        # Stable from the first monitoring pass on: before it, data-freshness has no datapoint and
        # (TreatMissingData breaching, on purpose: a silent monitor is an incident) alarms.
        start = max(self.rt.clock.now(), self.t0 + WINDOW_S)
        for _ in range(windows):
            self.window(n)
        self.stable.append((start, self.rt.clock.now()))
        self.log(f"{label}: {windows} windows x {n} requests, champion {self.aliases().champion}")

    def run_v2(self) -> None:
        c = self.cfg
        later = self.files[c.v1_days : c.history_days]
        self.upload(later)
        self.log(
            f"{len(later)} more daily exports arrived (v2 learns from more data); curated also holds the served feedback"
        )
        p = self.train("v2")
        self.v2 = p["training"]["version"]
        a = self.aliases()
        started = a.challenger == self.v2 and a.canary_weight > 0
        self.stages["v2_canary_started"] = started
        if not started:
            return
        start = self.rt.clock.now()
        weight, promoted = a.canary_weight, False
        for _ in range(c.max_canary_windows):
            a = self.aliases()
            if a.champion == self.v2:
                promoted = True
                break
            if a.challenger != self.v2 or a.canary_weight == 0:
                self.log(f"v2 canary stopped: {a}")
                break
            if a.canary_weight != weight:
                self.log(f"v2 canary advanced {weight:.0%} -> {a.canary_weight:.0%}")
                weight = a.canary_weight
            self._window_line(self.window(c.requests))
        self.stable.append((start, self.rt.clock.now()))  # a good canary must raise no alarm
        self.stages["v2_promoted"] = promoted
        self.log(f"v2 {self.v2} promoted to champion: {promoted} (previous: {self.aliases().previous})")
        self.promoted_at = self.rt.clock.now()

    def _window_line(self, got: Counts) -> None:
        alarms = sorted(
            a.name.removeprefix(self.rt.stack_name + "-")
            for a in [*self.rt.evaluator.alarms.values(), *self.rt.evaluator.composites.values()]
            if a.state == "ALARM"
        )
        served = ", ".join(f"{v}: {n}" for v, n in sorted(got.by_version.items()))
        steps = self.rt.invocations_of("PromoteModelFunction")
        step = steps[-1].payload if steps and isinstance(steps[-1].payload, dict) else {}
        self.log(
            f"  window: {got.total} requests ({served})"
            + (f"; in ALARM: {', '.join(alarms)}" if alarms else "")
            + (f"; promotion: {step['action']}: {step['reason']}" if step.get("reason") else "")
        )
        for rec in self._registry().history():
            if rec.get("action") == "ModelRolledBack" and rec["time"] not in self._seen_rollbacks:
                self._seen_rollbacks.add(rec["time"])
                self.log(f"  rollback of {rec.get('version')}: {json.dumps(rec.get('detail'))[:300]}")

    def run_broken(self) -> None:
        from shelfwise.rollout import Rollout

        c = self.cfg
        registry = self._registry()
        version = f"{self.v2}-broken"
        bundle = build_broken_bundle(registry, self.v2, version, self.out_dir / "v3", c.seed)
        reg = registry.register(bundle, version, off_policy=self._off_policy_check(registry))
        ope = reg.gate.off_policy or {}
        self.result["v3_off_policy"] = ope
        self.stages["v3_refused_offline"] = bool(ope.get("applied")) and not ope.get("passed")
        self.v3 = version
        if self.stages["v3_refused_offline"]:
            self.result["v3_offline_exposure"] = 0.0
            self.log(
                f"v3 {version} (shuffled item scores) refused by the gate's off-policy half before any traffic "
                f"(0% exposure): {'; '.join(ope.get('reasons') or [])[:300]}"
            )
            # To show the alarms still act without this gate: the same bundle registered again as
            # another version with the metric gate only, and offered like any version.
            version = f"{version}-nogate"
            again = registry.register(bundle, version)
            offer = Rollout(registry).offer(version, gate_passed=again.offered_for_canary, now=self.now())
            self.v3 = version
            started = offer.action == "start"
            self.log(
                f"the same broken bundle registered as {version} without the off-policy gate: {offer.reason}"
            )
        else:
            self.log(f"off-policy gate on v3: {json.dumps(ope)[:400]}")
            offer = Rollout(registry).offer(version, gate_passed=reg.offered_for_canary, now=self.now())
            started = offer.action == "start"
            self.log(
                f"v3 {version} (shuffled item scores) registered, offline gate passed: {reg.gate.passed}; {offer.reason}"
            )
        self.stages["v3_canary_started"] = started
        if not started:
            return
        start = self.rt.clock.now()
        self.broken_start = start
        rolled_back_at = None
        for w in range(c.max_broken_windows):
            self._window_line(self.window(c.requests, stop=lambda a: a.challenger != version))
            a = self.aliases()
            if a.challenger != version:
                rolled_back_at = self._rollback_time(version)
                self.log(f"v3 taken out of traffic after {w + 1} windows (challenger: {a.challenger})")
                break
        rolled = rolled_back_at is not None and self.aliases().champion == self.v2
        self.stages["v3_rolled_back"] = rolled
        if rolled:
            assert rolled_back_at is not None
            served = [v for t, items in self.counts if start <= t < rolled_back_at for v in items]
            # Evaluation windows = monitoring passes between the canary start and the rollback.
            # (distinct scheduled instants: an async retry of a failed pass is the same window)
            self.result["detection_windows"] = len(
                {
                    i.started
                    for i in self.rt.invocations_of("ComputeMetricsFunction")
                    # strictly after: the pass at the canary's own instant ran before it started
                    if start < i.started <= rolled_back_at
                }
            )
            failed = [i for i in self.rt.invocations_of("ComputeMetricsFunction") if not i.ok]
            if failed:
                self.log(f"monitoring pass failures: {len(failed)}; last: {str(failed[-1].error)[:300]}")
            self.result["exposed_share"] = round(served.count(version) / max(len(served), 1), 4)
            self.result["broken_items"] = len(served)
            self.log(
                f"rollback at {datetime.fromtimestamp(rolled_back_at, UTC):%H:%M:%S}: "
                f"{self.result['detection_windows']} evaluation windows after canary start; the broken model placed "
                f"{served.count(version)} of {len(served)} items shown ({self.result['exposed_share']:.1%})"
            )
        self.broken_end = self.rt.clock.now()

    def _off_policy_check(self, registry: Any) -> Any:
        """The gate's off-policy half on what the champion served so far (curated impressions)."""
        from shelfwise.monitoring.data import COLUMNS, S3EventSource
        from shelfwise.offpolicy import OpeConfig
        from shelfwise.offpolicy_gate import off_policy_check
        from shelfwise.offpolicy_log import bundle_scorer, logged_lists
        from shelfwise.serving.model import LoadedModel

        source = S3EventSource(self.rt.s3, self.rt.physical_name("CuratedBucket"), (*COLUMNS, "properties"))
        now = datetime.fromtimestamp(self.rt.clock.now(), UTC)
        events = source.read(now - timedelta(days=2), now)
        data = logged_lists(events)
        champion_lists = data.subset(data.model_versions == self.v2)
        champion_dir = registry.download(self.v2, self.out_dir / "ope-champion")
        champion = bundle_scorer(LoadedModel.from_directory(champion_dir, self.v2))
        self.log(f"off-policy gate: {champion_lists.lists.n} lists served by {self.v2} in the curated log")
        return off_policy_check(
            champion_lists,
            champion,
            registry.gate_tolerance,
            OpeConfig(min_lists=DEMO_OPE_MIN_LISTS, min_ess=DEMO_OPE_MIN_ESS),
        )

    def _rollback_time(self, version: str) -> float | None:
        for rec in self._registry().history():
            if rec.get("action") == "ModelRolledBack" and rec.get("version") == version:
                return datetime.fromisoformat(rec["time"]).timestamp()
        return None

    def _baseline_frozen(self) -> bool:
        key = f"monitoring/state/{self.model_name}-champion-baseline.json"
        try:
            body = self.rt.s3.get_object(Bucket=self.rt.physical_name("MonitoringBucket"), Key=key)["Body"]
        except Exception:
            return False
        state = json.loads(body.read())
        return bool(state.get("frozen")) and state.get("champion") == self.v2

    def run_drift(self) -> None:
        from shelfwise.simulator import Incident

        c = self.cfg
        # Quiet traffic until the champion's CTR baseline is complete, then the incident.
        start = self.rt.clock.now()
        for _ in range(c.max_drift_windows):
            if self._baseline_frozen():
                break
            self._window_line(self.window(c.requests))
        self.stable.append((start, self.rt.clock.now()))
        if not self._baseline_frozen():
            self.stages["taste_drift_detected"] = False
            self.log("champion CTR baseline never completed; taste drift not run")
            return
        drift_at = self.rt.clock.now()
        day0 = self.shop.model.start_ms / 1000
        incident = Incident("taste_drift", (drift_at - day0) / 86400, {"share": c.drift_share})
        from shelfwise.simulator import Shop

        self.shop = Shop(self._shop_params((incident,)), seed=c.seed)
        self.log(f"taste drift: {c.drift_share:.0%} of users get new favourite categories")
        alarm = self.rt.physical_name("ChampionCtrDriftAlarm")
        detected = None
        for _ in range(c.max_drift_windows):
            self._window_line(self.window(c.requests))
            hit = [h for h in self.rt.alarm_history(alarm) if h["NewState"] == "ALARM"]
            if hit:
                detected = datetime.fromisoformat(hit[0]["Timestamp"]).timestamp()
                break
        self.stages["taste_drift_detected"] = detected is not None
        self.result["taste_drift_detected"] = detected is not None
        self.result["taste_drift_detection_minutes"] = (
            round((detected - drift_at) / 60, 1) if detected is not None else None
        )
        self.log(
            f"{alarm}: "
            + (
                f"ALARM {self.result['taste_drift_detection_minutes']} min after the drift"
                if detected
                else "never fired"
            )
        )
        self.drift_at = drift_at

    # ------------------------------------------------------------------ results
    def startup_alarms(self) -> list[dict[str, Any]]:
        """ALARM transitions before the first monitoring pass (the stack was just created)."""
        return [
            {"alarm": h["AlarmName"], "at": h["Timestamp"]}
            for h in self.rt.alarm_history()
            if h["NewState"] == "ALARM"
            and datetime.fromisoformat(h["Timestamp"]).timestamp() < self.t0 + WINDOW_S
        ]

    def false_alarms(self) -> list[dict[str, Any]]:
        """ALARM transitions inside the stable periods (before/without a bad model or incident)."""
        out = []
        for h in self.rt.alarm_history():
            if h["NewState"] != "ALARM":
                continue
            t = datetime.fromisoformat(h["Timestamp"]).timestamp()
            if any(a <= t <= b for a, b in self.stable):
                out.append({"alarm": h["AlarmName"], "at": h["Timestamp"]})
        return out

    def write_report(self) -> None:
        from shelfwise.monitoring.publish import read_history
        from shelfwise.monitoring.report import render_report
        from shelfwise.rollout import read_decisions

        s3 = self.rt.s3
        mon = self.rt.physical_name("MonitoringBucket")
        html = render_report(
            read_history(s3, mon),
            audit=self._registry().history(),
            decisions=read_decisions(s3, mon),
            alarm_changes=self.rt.alarm_history(),
            title="Shelfwise demo: the whole loop",
        )
        self.report_path.write_text(html)
        self.log(f"HTML report: {self.report_path}")
        # What promotion decided on, and how far the champion's served scores sat from the reference.
        promotes = [
            d for d in read_decisions(s3, mon) if d.get("action") in ("promote", "advance", "allocate")
        ]
        self.result["promotion_evidence"] = [
            {
                "action": d["action"],
                "at": d["at"],
                "evidence": (d.get("detail") or {}).get("evidence"),
                **({"bandit": d["detail"]["bandit"]} if "bandit" in (d.get("detail") or {}) else {}),
                "weight": (d.get("after") or {}).get("canary_weight"),
            }
            for d in promotes
        ]
        psi = sorted(
            r["value"]
            for r in read_history(s3, mon)
            if r["name"] == "ScorePSI" and (r.get("dimensions") or {}).get("Variant") == "champion"
        )
        if psi:
            self.result["champion_score_psi"] = {
                "windows": len(psi),
                "p50": round(float(np.quantile(psi, 0.5)), 4),
                "p95": round(float(np.quantile(psi, 0.95)), 4),
            }

    def _expected(self, stage: str) -> bool:
        return stage != "taste_drift_detected" or self.cfg.taste_drift

    def run(self) -> dict[str, Any]:
        t = time.perf_counter()
        false: list[dict[str, Any]] = []
        startup: list[dict[str, Any]] = []
        try:
            self.setup()
            self.run_v1()
            if self.stages["v1_champion"]:
                self.run_stock()
                self.run_stable(self.cfg.stable_windows, self.cfg.requests, "stable traffic on v1")
                self.run_v2()
            if self.stages.get("v2_promoted"):
                self.run_broken()
            if self.stages.get("v3_rolled_back") and self.cfg.taste_drift:
                self.run_drift()
            false = self.false_alarms()
            startup = self.startup_alarms()
            for f in startup:
                self.log(f"start-up alarm (informational, before the first monitoring pass): {f['alarm']}")
            for f in false:
                self.log(f"false alarm: {f['alarm']} at {f['at']}")
            self.write_report()
        finally:
            if self.rt is not None:
                self.rt.close()
        # Where the wall time went: seconds inside each function (the rest is the runtime, the
        # emulator, HTTP and the shop), for whoever tunes the demo next.
        function_s: dict[str, float] = {}
        for inv in self.rt.invocations if self.rt is not None else []:
            function_s[inv.function] = function_s.get(inv.function, 0.0) + inv.duration_ms / 1000
        expected = (
            "v1_champion",
            "stock_out_left_lists",
            "v2_canary_started",
            "v2_promoted",
            "v3_refused_offline",
            "v3_canary_started",
            "v3_rolled_back",
            "taste_drift_detected",
        )
        self.result = {
            "stages_ok": all(self.stages.get(s, False) for s in expected if self._expected(s)),
            "stages": {s: self.stages.get(s, False) for s in expected if self._expected(s)},
            "good_model_promoted": self.stages.get("v2_promoted", False),
            "broken_model_rolled_back": self.stages.get("v3_rolled_back", False),
            "detection_windows": self.result.get("detection_windows"),
            "exposed_share": self.result.get("exposed_share"),
            # the gate's off-policy half on the broken model, before any traffic
            "broken_model_refused_offline": self.stages.get("v3_refused_offline", False),
            "broken_model_offline_exposure": self.result.get("v3_offline_exposure"),
            "broken_model_off_policy": self.result.get("v3_off_policy"),
            "false_alarms": len(false),
            "false_alarm_list": false,
            "startup_alarms": startup,
            "taste_drift_detected": self.result.get("taste_drift_detected", False),
            "promotion_evidence": self.result.get("promotion_evidence"),
            "champion_score_psi": self.result.get("champion_score_psi"),
            "taste_drift_detection_minutes": self.result.get("taste_drift_detection_minutes"),
            "requests": self.requests,
            "http_errors": self.errors,
            "platform_hours": round((self.rt.clock.now() - self.t0) / 3600, 2) if self.rt else None,
            "report": str(self.report_path),
            "overrides": getattr(self, "overrides", {}),
            "parameters": getattr(self, "parameters", {}),
            "requests_per_window": self.cfg.requests,
            "backend": self.backend,
            "wall_s": round(time.perf_counter() - t, 1),
            "function_s": {k: round(v, 1) for k, v in sorted(function_s.items())},
        }
        return self.result


def expectations_met(result: dict[str, Any], cfg: DemoConfig) -> list[str]:
    """What failed, in words (empty when the run met every expectation)."""
    failed = [f"stage {s} failed" for s, ok in result["stages"].items() if not ok]
    if result["detection_windows"] is not None and result["detection_windows"] > cfg.detection_windows_max:
        failed.append(
            f"broken model rolled back after {result['detection_windows']} windows (> {cfg.detection_windows_max})"
        )
    # The canary's 10% (half of it when interleaved: the challenger places half the items), plus 3
    # points of hash-routing noise.
    share = 0.1 * (0.5 if cfg.canary_mode == "interleave" else 1.0)
    if result["exposed_share"] is not None and result["exposed_share"] > share + 0.03:
        failed.append(
            f"broken model placed {result['exposed_share']:.1%} of the items shown (> {share + 0.03:.0%})"
        )
    if result["false_alarms"]:
        failed.append(f"{result['false_alarms']} false alarms in stable periods")
    return failed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="shelfwise demo", description=plain(__doc__.splitlines()[0]))
    p.add_argument("--fast", action="store_true", help="the smaller run the e2e test uses")
    p.add_argument(
        "--backend",
        default=os.environ.get("SHELFWISE_BACKEND", "moto"),
        help="moto (embedded, default), localstack (SHELFWISE_LOCALSTACK_ENDPOINT) or an endpoint URL",
    )
    p.add_argument("--out", type=Path, help="working directory (default: a new temporary directory)")
    p.add_argument("--report", type=Path, help="HTML report path (default: OUT/report.html)")
    p.add_argument("--seed", type=int, help="simulator seed")
    p.add_argument("--serving-day", type=date.fromisoformat, help="the shop's serving day (default today)")
    p.add_argument("--canary-mode", choices=("split", "interleave"), help="template parameter CanaryMode")
    p.add_argument(
        "--canary-allocation", choices=("stages", "thompson"), help="template parameter CanaryAllocation"
    )
    p.add_argument("--quiet", action="store_true", help="no timeline on stderr")
    p.add_argument(
        "--families",
        default="",
        help="families trained beside the defaults, e.g. 'sequential' (the challenger if the guard picks it)",
    )
    args = p.parse_args(argv)
    cfg = DemoConfig.fast() if args.fast else DemoConfig()
    if args.families:
        cfg = dataclasses.replace(cfg, extra_families=args.families)
    if args.seed is not None:
        cfg = dataclasses.replace(cfg, seed=args.seed)
    if args.serving_day is not None:
        cfg = dataclasses.replace(cfg, serving_day=args.serving_day)
    if args.canary_mode is not None:
        cfg = dataclasses.replace(cfg, canary_mode=args.canary_mode)
    if args.canary_allocation is not None:
        cfg = dataclasses.replace(cfg, canary_allocation=args.canary_allocation)
    demo = Demo(
        cfg,
        backend=args.backend,
        out_dir=args.out,
        report_path=args.report,
        stream=None if args.quiet else sys.stderr,
    )
    result = demo.run()
    failed = expectations_met(result, cfg)
    result["failed"] = failed
    for f in failed:
        print(f"EXPECTATION FAILED: {f}", file=sys.stderr)
    print(json.dumps(result), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
