"""The demo's scenario: the local runtime on the demo's clock, the simulated shop, and its traffic.

:class:`Scenario` starts template.yaml in the local runtime, simulates the shop's history, and
serves its traffic through the HTTP API one 5-minute window at a time (feedback and served-list
lines delivered, the schedules fired); the phases (:mod:`shelfwise_local.demo.phases`) build on it.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from shelfwise_local.demo.config import DEMO_SERVING_RULES, REPO, DemoConfig


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


class Scenario:
    """The runtime, the shop and its traffic of one demo run, and the steps the phases share."""

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
        # a directory of our own making keeps only the report once the run ends (the shop's
        # events and the bundles are tens of MB a run)
        self.own_out_dir = out_dir is None
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
            # No shopping missions: the taste-drift stage changes favourite categories, and with
            # missions (half of them outside the favourites) that drift moves the champion's CTR
            # too little for the alarm to see within the demo's windows.
            mission_share=0.0,
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

    # ------------------------------------------------------------------ set the scene
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

    def train(self, label: str, override: dict[str, Any] | None = None) -> dict[str, Any]:
        """Invoke the training function as its schedule does (``override``: an operator's family
        override in the invocation, docs/training.md) and deliver the canary offer it leads to."""
        t = time.perf_counter()
        event: dict[str, Any] = {"mode": "train", "time": self.now().isoformat()}
        if override is not None:
            event["override"] = override
        payload = self.rt.invoke("TrainModelFunction", event)
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
        if tr.get("override"):
            o, gate = tr["override"], reg.get("gate") or {}
            self.log(
                f"{label}: operator override: serve {o['family']} (the guard would serve "
                f"{o['guard_would_serve']}); gate comparisons waived: {'; '.join(gate.get('waived') or []) or 'none'}"
            )
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
