"""One monitoring pass: read a window of curated events, compute every metric, publish, remember.

The fast pass (every 5 minutes) evaluates the window that just closed with label-free and
early-click signals, the click window that just matured, and pipeline health. The deep pass (hourly)
evaluates the hour whose purchase attribution window just closed. State between passes (per-window
counts since the current canary started) lives in one small JSON object in S3, so the decision
metrics are cumulative and every pass is idempotent for its windows.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shelfwise import bots
from shelfwise.monitoring import drift
from shelfwise.monitoring.comparison import (
    RatioBound,
    adjusted_rates,
    compare_preference,
    compare_rates,
    compare_user_rates,
    guarded_compare,
    guarded_preference,
    guarded_user_compare,
    user_sums,
)
from shelfwise.monitoring.config import MonitoringConfig
from shelfwise.monitoring.data import EventSource
from shelfwise.monitoring.exploration import exploration_metrics
from shelfwise.monitoring.publish import MetricDatum
from shelfwise.monitoring.quality import (
    InterleavingCounts,
    VariantQuality,
    _list_users,
    compute_interleaving,
    compute_quality,
    mature_families,
    rate_metrics,
    shopper_counts,
)
from shelfwise.monitoring.state import (
    Deployment,
    ManifestSource,
    MemoryStateStore,
    PassResult,
    StateStore,
    _between,
    _ilv_entry,
    _ilv_sum,
    _key,
    _sum,
    canary_first_window,
    floor_time,
    stage_impressions,
    sync_state,
)

BEHAVIOUR_TYPES = ("view", "click", "add_to_cart", "purchase")
POPULARITY_BUCKETS = 10


class MonitoringJob:
    """Computes the metrics of one pass from an event source and the deployed models' manifests."""

    def __init__(
        self,
        source: EventSource,
        manifests: ManifestSource,
        state: StateStore,
        config: MonitoringConfig | None = None,
        input_baseline: StateStore | None = None,
        champion_baseline: StateStore | None = None,
        shoppers: StateStore | None = None,
    ) -> None:
        self.source, self.manifests, self.state_store = source, manifests, state
        self.cfg = config or MonitoringConfig()
        self.baseline_store = input_baseline or MemoryStateStore()
        self.champion_store = champion_baseline or MemoryStateStore()
        # The split canary's per-shopper counts (matured windows) and pre-canary covariates.
        self.shopper_store = shoppers or MemoryStateStore()

    # ------------------------------------------------------------------ fast pass
    def fast_pass(self, now: datetime, deployment: Deployment) -> PassResult:
        """Label-free + early-click signals of the window that just closed, and the matured click window."""
        cfg, w = self.cfg, self.cfg.window
        end = floor_time(now, cfg.window_seconds)
        start = end - w
        m_end = floor_time(now - timedelta(seconds=cfg.attribution.click), cfg.window_seconds)
        m_start = m_end - w
        lookback = end - timedelta(seconds=cfg.input_lookback_seconds)
        events = self.source.read(min(start, m_start, lookback), now)
        result = PassResult(kind="fast", window_start=start)
        state = sync_state(self.state_store.load(), deployment, now)
        # Bot-like actors over the whole read (about an hour), and those the ingest flagged: their
        # events leave every metric below.
        flags = getattr(self.source, "bot_flags", None)
        found = bots.with_flagged(bots.detect(events, cfg.bots), flags() if flags else {}, events)
        in_window = _between(events, start, end)
        n_behaviour = bots.behaviour_events(in_window)
        if n_behaviour >= cfg.min_events_for_bot_share:
            n_bot = in_window.num_rows - bots.exclude(in_window, found).num_rows
            result.data.append(self._d("BotShare", min(1.0, n_bot / n_behaviour), start))
        events = bots.exclude(events, found)

        # Label-free: what was served in [start, end) and what users did.
        early = compute_quality(events, start, end, cfg.attribution, as_of=now)
        entry = state["windows"].setdefault(start.isoformat(), {})
        entry["impressions"] = {_key(q.variant, q.model_version): q.impressions for q in early.values()}
        # Early counts are frozen at the window's first evaluation: both variants then share the same
        # censoring, which is what makes the early-click ratio fair.
        entry.setdefault(
            "early",
            {_key(q.variant, q.model_version): [q.lists, q.early_clicked_lists] for q in early.values()},
        )
        for q in early.values():
            if q.variant in ("champion", "challenger", "fallback"):
                result.data.append(self._d("Impressions", q.impressions, start, q.variant, "Count"))
                result.data.append(self._d("Recommendations", q.lists, start, q.variant, "Count"))
        early_ilv = compute_interleaving(events, start, end, cfg.attribution, as_of=now)
        if early_ilv.lists:
            result.data.append(self._d("Recommendations", early_ilv.lists, start, "interleaved", "Count"))
            ch = deployment.challenger
            if ch:
                key = _key("challenger", ch)
                entry["impressions"][key] = entry["impressions"].get(key, 0) + early_ilv.impressions.get(
                    ch, 0
                )
            entry.setdefault("ilv_early", _ilv_entry(early_ilv, early=True))
        served = self._served(events, start, end)
        result.data += self._label_free(served, events, start, end, deployment, state)

        # Matured click window.
        matured = compute_quality(events, m_start, m_end, cfg.attribution, as_of=now)
        mentry = state["windows"].setdefault(m_start.isoformat(), {})
        mentry["click"] = {
            _key(q.variant, q.model_version): [q.lists, q.clicked_lists] for q in matured.values()
        }
        matured_ilv = compute_interleaving(events, m_start, m_end, cfg.attribution, as_of=now)
        if matured_ilv.lists:
            mentry["ilv_click"] = _ilv_entry(matured_ilv)
        fams = mature_families(m_end, now, cfg.attribution)
        for q in matured.values():
            if q.variant in ("champion", "challenger", "fallback"):
                for name, value in rate_metrics(
                    q, tuple(f for f in fams if f == "click"), cfg.min_lists_for_rates
                ).items():
                    result.data.append(self._d(name, value, m_start, q.variant))

        # Exploration as a monitored variant: its click cost in the matured window.
        result.data += exploration_metrics(
            events, m_start, m_end, cfg.attribution.click, cfg.min_lists_for_rates
        )
        champ = self._champion_drift(early, start, deployment, start)
        if champ is not None:
            result.data.append(champ)
        # Windows of this canary whose click window is still open: their clicks so far. Censored
        # alike for both variants (routing does not depend on time), so they sharpen the CTR ratio
        # long before the windows mature instead of waiting 30 minutes for each.
        first = canary_first_window(state, cfg.window_seconds)
        pending: dict[tuple[str, str], VariantQuality] = {}
        pending_ilv = InterleavingCounts()
        pending_users: dict[tuple[str, str], tuple[list[str], list[int], list[int]]] = {}
        shoppers = self._shoppers(state, deployment, events, m_start, m_end, now)
        if deployment.challenger and first is not None and max(m_end, first) < end:
            pending = compute_quality(events, max(m_end, first), end, cfg.attribution, as_of=now)
            pending_ilv = compute_interleaving(events, max(m_end, first), end, cfg.attribution, as_of=now)
            if not pending_ilv.lists:
                pending_users = shopper_counts(events, max(m_end, first), end, cfg.attribution, as_of=now)
        # Cumulative decision metrics, stamped at the evaluation window so alarms see them now.
        result.data += self._comparisons(
            state, deployment, start, pending, pending_ilv, shoppers, pending_users
        )
        state["evidence"] = self.evidence(state, deployment, now, shoppers)
        self.shopper_store.save(shoppers)
        self._prune(state, now)
        self.state_store.save(state)
        newest = pc.max(events["timestamp"]).as_py() if events.num_rows else None
        result.summary = {
            "window_start": start.isoformat(),
            "matured_window_start": m_start.isoformat(),
            "newest_event": newest.isoformat() if newest else None,
            "events": events.num_rows,
            "bots": found.to_dict(),
            "variants": {f"{q.variant}/{q.model_version}": q.to_dict() for q in early.values()},
            "matured": {f"{q.variant}/{q.model_version}": q.to_dict() for q in matured.values()},
            "stage_impressions": stage_impressions(state, window_seconds=cfg.window_seconds),
            "evidence": state["evidence"],
            "metrics": len(result.data),
        }
        return result

    def _shoppers(
        self,
        state: Mapping[str, Any],
        deployment: Deployment,
        events: pa.Table,
        m_start: datetime,
        m_end: datetime,
        now: datetime,
    ) -> dict[str, Any]:
        """The split canary's per-shopper memory: matured windows' counts and pre-canary covariates.

        ``arms[variant|version][shopper] = [lists, clicked lists]`` over the canary's matured
        windows (each window added once); ``covariate[shopper]`` = the shopper's clicked lists minus
        the pre-period CTR times their lists, over ``covariate_lookback_hours`` before the canary's
        first window (one read when the canary is first seen). Reset with the canary.
        """
        cfg = self.cfg
        store = self.shopper_store.load()
        key = [deployment.champion, deployment.challenger, state.get("canary_started_at")]
        if store.get("key") != key:
            store = {"key": key, "arms": {}, "windows": [], "covariate": None}
        first = canary_first_window(state, cfg.window_seconds)
        if first is None or not deployment.challenger:
            return store
        if store["covariate"] is None:
            store["covariate"] = {}
            if cfg.covariate_lookback_hours > 0:
                lo = first - timedelta(hours=cfg.covariate_lookback_hours)
                pre = self.source.read(lo, first)
                if pre.num_rows:
                    pre = bots.exclude(pre, bots.detect(pre, cfg.bots))
                    merged: dict[str, list[int]] = {}
                    for users, n, y in shopper_counts(pre, lo, first, cfg.attribution, first).values():
                        for u, a, b in zip(users, n, y, strict=True):
                            cur = merged.setdefault(u, [0, 0])
                            cur[0], cur[1] = cur[0] + a, cur[1] + b
                    total = sum(v[0] for v in merged.values())
                    rate = sum(v[1] for v in merged.values()) / total if total else 0.0
                    store["covariate"] = {u: round(v[1] - rate * v[0], 4) for u, v in merged.items()}
                    store["covariate_lists"] = total
        wkey = m_start.isoformat()
        if m_start >= first and wkey not in store["windows"] and m_end <= now:
            for (variant, version), (users, n, y) in shopper_counts(
                events, m_start, m_end, cfg.attribution, now
            ).items():
                arm = store["arms"].setdefault(_key(variant, version), {})
                for u, a, b in zip(users, n, y, strict=True):
                    cur = arm.get(u)
                    arm[u] = [cur[0] + a, cur[1] + b] if cur else [a, b]
            store["windows"].append(wkey)
        return store

    @staticmethod
    def _arm_sums(
        shoppers: Mapping[str, Any], key: str, pending: tuple[list[str], list[int], list[int]] | None = None
    ) -> list[float] | None:
        """``comparison.user_sums`` of one arm: the stored matured counts plus ``pending`` windows'."""
        counts = {u: list(v) for u, v in shoppers.get("arms", {}).get(key, {}).items()}
        if pending is not None:
            for u, a, b in zip(*pending, strict=True):
                cur = counts.setdefault(u, [0, 0])
                cur[0], cur[1] = cur[0] + a, cur[1] + b
        if not counts:
            return None
        cov = shoppers.get("covariate") or {}
        n = np.fromiter((v[0] for v in counts.values()), np.float64, len(counts))
        y = np.fromiter((v[1] for v in counts.values()), np.float64, len(counts))
        x = np.fromiter((float(cov.get(u, 0.0)) for u in counts), np.float64, len(counts))
        return user_sums(n, y, x)

    def _d(
        self, name: str, value: float, ts: datetime, variant: str | None = None, unit: str = "None"
    ) -> MetricDatum:
        return MetricDatum(name, float(value), ts, {"Variant": variant} if variant else {}, unit)

    def _served(self, events: pa.Table, start: datetime, end: datetime) -> pa.Table:
        ts = events["timestamp"]
        lo = pa.scalar(start, pa.timestamp("ms", tz="UTC"))
        hi = pa.scalar(end, pa.timestamp("ms", tz="UTC"))
        mask = pc.and_(
            pc.equal(events["event_type"], "impression"), pc.and_(pc.greater_equal(ts, lo), pc.less(ts, hi))
        )
        cols = ["recommendation_id", "item_id", "score", "variant", "model_version"]
        return events.filter(mask).select(cols + [c for c in ("properties",) if c in events.column_names])

    def _label_free(
        self,
        served: pa.Table,
        events: pa.Table,
        start: datetime,
        end: datetime,
        deployment: Deployment,
        state: Mapping[str, Any],
    ) -> list[MetricDatum]:
        cfg, out = self.cfg, []
        ts = events["timestamp"]
        lo = pa.scalar(start, pa.timestamp("ms", tz="UTC"))
        hi = pa.scalar(end, pa.timestamp("ms", tz="UTC"))
        behaviour = events.filter(
            pc.and_(
                pc.is_in(events["event_type"], pa.array(BEHAVIOUR_TYPES)),
                pc.and_(pc.greater_equal(ts, lo), pc.less(ts, hi)),
            )
        )
        ranks = drift.popularity_rank(behaviour["item_id"])
        # The popularity shift ranks items over the last hour's behaviour: a window's own behaviour
        # touches too few items to place most of a personalised list.
        recent = events.filter(
            pc.and_(
                pc.is_in(events["event_type"], pa.array(BEHAVIOUR_TYPES)),
                pc.and_(
                    pc.greater_equal(
                        ts, pa.scalar(end - timedelta(seconds=cfg.input_lookback_seconds), lo.type)
                    ),
                    pc.less(ts, hi),
                ),
            )
        )
        hour_ranks = drift.popularity_rank(recent["item_id"])
        buckets: dict[str, np.ndarray] = {}
        percentiles: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        total_lists = len(pc.unique(served["recommendation_id"])) if served.num_rows else 0
        for variant in ("champion", "challenger", "fallback"):
            rows = served.filter(pc.equal(served["variant"], variant))
            if rows.num_rows == 0:
                continue
            if total_lists:
                lists = len(pc.unique(rows["recommendation_id"]))
                out.append(self._d("ServedShare", lists / total_lists, start, variant))
            if rows.num_rows >= cfg.min_scores_for_drift:
                counts = pc.value_counts(rows["item_id"]).field("counts").to_numpy(zero_copy_only=False)
                out.append(self._d("Gini", drift.gini(counts), start, variant))
                out.append(self._d("DistinctItems", float(len(counts)), start, variant, "Count"))
            if rows.num_rows >= (
                cfg.min_challenger_impressions_for_shift
                if variant == "challenger"
                else cfg.min_scores_for_drift
            ):
                buckets[variant] = drift.popularity_buckets(rows["item_id"], ranks, POPULARITY_BUCKETS)
            if variant != "fallback":
                units = _list_users(rows).to_numpy(zero_copy_only=False)
                percentiles[variant] = (drift.popularity_percentiles(rows["item_id"], hour_ranks), units)
            version = deployment.version_of(variant)
            manifest = self.manifests.manifest(version) if version else None
            if manifest:
                ref = drift.DriftReference.from_manifest(manifest)
                # Only this version's rows: right after a switch the window holds both versions.
                mine = rows.filter(pc.equal(rows["model_version"], version))
                scores = pc.drop_null(mine["score"]).to_numpy(zero_copy_only=False)
                if ref.score_histogram is not None:
                    v = drift.score_psi(
                        scores, ref.score_histogram, cfg.min_scores_for_drift, cfg.histogram_epsilon
                    )
                    if v is not None:
                        out.append(self._d("ScorePSI", v, start, variant))
                        out.append(
                            self._d(
                                "ScoreJS",
                                drift.js_divergence(
                                    ref.score_histogram.counts,
                                    drift.bin_counts(scores, ref.score_histogram.edges),
                                ),
                                start,
                                variant,
                            )
                        )
                if variant == "champion":
                    catalogue = (manifest.get("catalogue") or {}).get("items") or manifest.get("n_items")
                    if (
                        isinstance(catalogue, int)
                        and catalogue > 0
                        and rows.num_rows >= cfg.min_scores_for_drift
                    ):
                        distinct = len(pc.unique(rows["item_id"]))
                        out.append(
                            self._d("Coverage", drift.coverage(distinct, catalogue) or 0.0, start, variant)
                        )
        if total_lists:
            fallback = served.filter(pc.equal(served["variant"], "fallback"))
            share = (len(pc.unique(fallback["recommendation_id"])) if fallback.num_rows else 0) / total_lists
            out.append(self._d("FallbackShare", share, start))
        if "challenger" in buckets and "champion" in buckets:
            out.append(
                self._d(
                    "PopularityShiftVsChampion",
                    drift.js_divergence(buckets["challenger"], buckets["champion"]),
                    start,
                    "challenger",
                )
            )
        shift = self._popularity_shift(percentiles, start, state)
        if shift is not None:
            out.append(self._d("PopularityShiftLCB", shift.lower, start, "challenger"))
        v = self._input_drift(events, start, end, deployment)
        if v is not None:
            out.append(self._d("InputCategoryPSI", v, start))
        return out

    def _popularity_shift(
        self,
        percentiles: Mapping[str, tuple[np.ndarray, np.ndarray]],
        start: datetime,
        state: Mapping[str, Any],
    ) -> drift.ShiftBound | None:
        """The window's popularity-shift bound, at the canary's alpha spent over its windows.

        Each window is its own test; window k of the canary (k = 1 for its first) gets
        ``alpha / (k (k + 1))``, which sums to ``alpha`` over any number of windows (Bonferroni), so
        the first window decides on the least data and a healthy canary trips it with probability
        at most ``alpha`` however long it runs.
        """
        first = canary_first_window(state, self.cfg.window_seconds)
        if first is None or "challenger" not in percentiles or "champion" not in percentiles:
            return None
        k = max(1, int((start - first).total_seconds() // self.cfg.window_seconds) + 1)
        return drift.popularity_shift_bound(
            *percentiles["challenger"],
            *percentiles["champion"],
            alpha=self.cfg.popularity_shift_alpha / (k * (k + 1)),
            min_units=self.cfg.min_shoppers_for_shift,
        )

    def _champion_drift(
        self,
        window: dict[tuple[str, str], VariantQuality],
        w_start: datetime,
        deployment: Deployment,
        ts: datetime,
    ) -> MetricDatum | None:
        """The champion's early-click CTR over the last windows against its own baseline.

        Taste drift changes *who likes what*, not necessarily the aggregate category mix (the shop
        simulator redraws 30% of users' tastes from the same distribution), so it shows up as the
        champion slowly losing clicks. Baseline: the first ``champion_baseline_lists`` lists after
        it became champion (frozen); current: the last ``champion_lookback_windows`` windows; the
        comparison is the same anytime-valid drop bound as the canary's. Both sides count *early*
        clicks (within ``early_click`` of the impression, frozen at the window's first evaluation),
        so they share the same censoring and the alarm need not wait 30 minutes for every window's
        click attribution to close.
        """
        cfg = self.cfg
        if not deployment.champion:
            return None
        store = self.champion_store.load()
        if store.get("champion") != deployment.champion or "frozen" not in store:
            store = {"champion": deployment.champion, "base": [0, 0], "frozen": False, "recent": {}}
        q = window.get(("champion", deployment.champion))
        key = w_start.isoformat()
        out = None
        if q is not None and q.lists:
            # Frozen at the window's first evaluation, like the canary's early counts.
            counts = store["recent"].get(key) or [q.lists, q.early_clicked_lists]
            if not store["frozen"]:
                if key not in store["recent"]:
                    store["base"] = [store["base"][0] + counts[0], store["base"][1] + counts[1]]
                store["recent"][key] = counts
                store["frozen"] = store["base"][0] >= cfg.champion_baseline_lists
                if store["frozen"]:
                    store["recent"] = {}
            else:
                store["recent"][key] = counts
        if store["frozen"]:
            keep = sorted(store["recent"])[-cfg.champion_lookback_windows :]
            store["recent"] = {k: store["recent"][k] for k in keep}
            n = sum(v[0] for v in store["recent"].values())
            x = sum(v[1] for v in store["recent"].values())
            bound = None
            if len(store["recent"]) >= cfg.champion_lookback_windows:
                bound = guarded_compare(
                    x,
                    n,
                    store["base"][1],
                    store["base"][0],
                    alpha=cfg.drift_alpha,
                    tau=cfg.tau,
                    min_lists=cfg.min_lists_for_comparison,
                    min_champion_successes=cfg.min_clicks_for_comparison,
                    margin=cfg.drift_margin,
                )
            if bound is not None:
                out = self._d("ChampionCtrDropLCB", max(-1.0, bound.drop_lcb), ts, "champion")
        self.champion_store.save(store)
        return out

    def _input_drift(
        self, events: pa.Table, start: datetime, end: datetime, deployment: Deployment
    ) -> float | None:
        """PSI of the users' top-category mix over the last hour against a frozen production baseline.

        The bundle's ``reference.category_mix`` describes what the model *recommended* at training
        time, not what users do, so it cannot tell taste drift from a recommender's bias. The
        baseline is instead the behaviour mix of the first ``input_baseline_events`` events seen
        after the current champion took over (it resets on promotion: a new champion was trained on
        the new normal). Top-level categories keep the bins few, so sampling noise stays far below
        the threshold.
        """
        cfg = self.cfg
        base = self.baseline_store.load()
        if base.get("champion") != deployment.champion or "frozen" not in base:
            base = {"champion": deployment.champion, "counts": {}, "windows": [], "frozen": False}
        ts = events["timestamp"]
        kinds = pc.is_in(events["event_type"], pa.array(BEHAVIOUR_TYPES))

        def mix(lo: datetime) -> dict[str, float]:
            mask = pc.and_(
                kinds,
                pc.and_(
                    pc.greater_equal(ts, pa.scalar(lo, pa.timestamp("ms", tz="UTC"))),
                    pc.less(ts, pa.scalar(end, pa.timestamp("ms", tz="UTC"))),
                ),
            )
            cats = pc.drop_null(events.filter(mask)["category"])
            out: dict[str, float] = {}
            if len(cats):
                vc = pc.value_counts(cats)
                for cat, n in zip(
                    vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True
                ):
                    top = str(cat).split("/", 1)[0]
                    out[top] = out.get(top, 0.0) + float(n)
            return out

        value = None
        if not base["frozen"]:
            key = start.isoformat()
            if key not in base["windows"]:
                for cat, n in mix(start).items():
                    base["counts"][cat] = base["counts"].get(cat, 0.0) + n
                base["windows"].append(key)
            base["frozen"] = sum(base["counts"].values()) >= cfg.input_baseline_events
        else:
            current = mix(end - timedelta(seconds=cfg.input_lookback_seconds))
            if sum(current.values()) >= cfg.min_events_for_input_drift:
                ref = dict(base["counts"])
                cats = sorted(ref)
                other = sum(n for c, n in current.items() if c not in ref)
                value = drift.psi(
                    [ref[c] for c in cats] + [0.0],
                    [current.get(c, 0.0) for c in cats] + [other],
                    cfg.histogram_epsilon,
                )
        self.baseline_store.save(base)
        return value

    def _comparisons(
        self,
        state: dict[str, Any],
        deployment: Deployment,
        ts: datetime,
        pending: Mapping[tuple[str, str], VariantQuality] | None = None,
        pending_ilv: InterleavingCounts | None = None,
        shoppers: Mapping[str, Any] | None = None,
        pending_users: Mapping[tuple[str, str], tuple[list[str], list[int], list[int]]] | None = None,
    ) -> list[MetricDatum]:
        """The challenger-vs-champion bounds over every window since the canary started.

        ``CtrDropLCB``: matured windows with their full click attribution plus the ``pending``
        (not yet matured) windows with the clicks seen so far; ``EarlyCtrDropLCB``: every window's
        clicks within ``early_click`` of the impression. Only windows from the canary's first one
        on count, for both variants, so both share the same mix of censoring. When the canary is
        interleaved, both come from the interleaved lists' wins (``compare_preference``) instead of
        the split's list CTRs: same names, so the same alarms decide.
        """
        if not (deployment.challenger and deployment.champion):
            return []
        cfg, out = self.cfg, []
        first = canary_first_window(state, cfg.window_seconds)
        since = first.isoformat() if first is not None else None
        pend = pending or {}
        ch, cb = _key("challenger", deployment.challenger), _key("champion", deployment.champion)
        ilv_lists = _ilv_sum(state, "ilv_early", deployment, since)[2]
        if ilv_lists:
            out.append(self._d("InterleavedLists", ilv_lists, ts, "challenger", "Count"))
        for kind, metric, alpha, tau, margin in (
            ("click", "Ctr", cfg.alpha, cfg.tau, cfg.quality_margin),
            ("early", "EarlyCtr", cfg.early_alpha, cfg.early_tau, cfg.early_margin),
        ):
            bound: RatioBound | None
            if ilv_lists:
                w_c, w_b, _ = _ilv_sum(state, f"ilv_{kind}", deployment, since)
                if kind == "click" and pending_ilv is not None:
                    w_c += pending_ilv.wins.get(deployment.challenger, 0)
                    w_b += pending_ilv.wins.get(deployment.champion, 0)
                bound = guarded_preference(
                    w_c,
                    w_b,
                    alpha=alpha,
                    tau=cfg.interleaved_tau if kind == "click" else tau,
                    min_decisive=cfg.min_decisive_lists if kind == "click" else cfg.min_early_decisive_lists,
                    margin=margin,
                )
            else:
                n_c, x_c = _sum(state, kind, ch, since)
                n_b, x_b = _sum(state, kind, cb, since)
                if kind == "click":
                    for (variant, version), q in pend.items():
                        if (variant, version) == ("challenger", deployment.challenger):
                            n_c, x_c = n_c + q.lists, x_c + q.clicked_lists
                        elif (variant, version) == ("champion", deployment.champion):
                            n_b, x_b = n_b + q.lists, x_b + q.clicked_lists
                bound = None
                sums_c = sums_b = None
                if kind == "click" and shoppers is not None:
                    pu = pending_users or {}
                    sums_c = self._arm_sums(shoppers, ch, pu.get(("challenger", deployment.challenger)))
                    sums_b = self._arm_sums(shoppers, cb, pu.get(("champion", deployment.champion)))
                if sums_c is not None and sums_b is not None:
                    # Shoppers as the unit, with their pre-canary covariate (docs/monitoring.md).
                    bound = guarded_user_compare(
                        sums_c,
                        sums_b,
                        alpha=alpha,
                        tau=tau,
                        min_lists=cfg.min_lists_for_comparison,
                        min_champion_successes=cfg.min_clicks_for_comparison,
                        margin=margin,
                        adjust=bool(shoppers.get("covariate")) if shoppers is not None else False,
                    )
                elif not (kind == "click" and shoppers is not None):
                    bound = guarded_compare(
                        x_c,
                        n_c,
                        x_b,
                        n_b,
                        alpha=alpha,
                        tau=tau,
                        min_lists=cfg.min_lists_for_comparison
                        if kind == "click"
                        else cfg.min_lists_for_early_comparison,
                        min_champion_successes=cfg.min_clicks_for_comparison,
                        margin=margin,
                    )
            if bound is not None:
                out.append(self._d(f"{metric}DropLCB", max(-1.0, bound.drop_lcb), ts, "challenger"))
                out.append(self._d(f"{metric}Ratio", bound.ratio, ts, "challenger"))
        return out

    def evidence(
        self,
        state: Mapping[str, Any],
        deployment: Deployment,
        now: datetime,
        shoppers: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """What promotion decides on: the challenger's click ratio on *matured* windows since the
        canary started, with its one-sided anytime-valid lower bound (non-inferiority) and sizes.

        ``design`` is ``interleaved`` (wins in interleaved lists) or ``split`` (list CTRs); the
        estimate is None while either side has no data (the promoter then holds).
        """
        cfg = self.cfg
        ev: dict[str, Any] = {
            "as_of": now.isoformat(),
            "challenger": deployment.challenger,
            "champion": deployment.champion,
            "confidence": 1.0 - cfg.noninferiority_alpha,
            "promotion_confidence": 1.0 - cfg.promotion_alpha,
            "estimate": None,
            "lower": None,
            "upper": None,
            "promotion_lower": None,
        }
        if not (deployment.challenger and deployment.champion):
            return {**ev, "design": None, "mature_windows": 0}
        first = canary_first_window(state, cfg.window_seconds)
        since = first.isoformat() if first is not None else None
        windows = [
            k
            for k, v in state.get("windows", {}).items()
            if (since is None or k >= since) and ("click" in v or "ilv_click" in v)
        ]
        ev["mature_windows"] = len(windows)
        w_c, w_b, lists = _ilv_sum(state, "ilv_click", deployment, since)
        bound: RatioBound | None = None
        strict: RatioBound | None = None
        if _ilv_sum(state, "ilv_early", deployment, since)[2]:
            margin = cfg.interleaved_noninferiority_margin
            ev.update(
                design="interleaved", lists=lists, wins_challenger=w_c, wins_champion=w_b, margin=margin
            )
            if w_c + w_b > 0:
                bound = compare_preference(w_c, w_b, cfg.noninferiority_alpha, cfg.interleaved_tau, margin)
                strict = compare_preference(w_c, w_b, cfg.promotion_alpha, cfg.interleaved_tau, margin)
        else:
            n_c, x_c = _sum(state, "click", _key("challenger", deployment.challenger), since)
            n_b, x_b = _sum(state, "click", _key("champion", deployment.champion), since)
            ev.update(
                design="split",
                margin=cfg.noninferiority_margin,
                lists_challenger=n_c,
                lists_champion=n_b,
                clicked_challenger=x_c,
                clicked_champion=x_b,
            )
            sums_c = sums_b = None
            if shoppers is not None:
                sums_c = self._arm_sums(shoppers, _key("challenger", deployment.challenger))
                sums_b = self._arm_sums(shoppers, _key("champion", deployment.champion))
            if sums_c is not None and sums_b is not None:
                adjust = bool(shoppers.get("covariate")) if shoppers is not None else False
                bound = compare_user_rates(
                    sums_c, sums_b, cfg.noninferiority_alpha, cfg.tau, cfg.noninferiority_margin, adjust
                )
                strict = compare_user_rates(
                    sums_c, sums_b, cfg.promotion_alpha, cfg.tau, cfg.noninferiority_margin, adjust
                )
                rc, rb = adjusted_rates(sums_c, sums_b)
                ev.update(
                    unit="shopper",
                    covariate=adjust,
                    shoppers_challenger=rc.users,
                    shoppers_champion=rb.users,
                    variance_reduction=round(1 - rb.variance / rb.variance_unadjusted, 3)
                    if adjust and rb.variance_unadjusted > 0
                    else 0.0,
                )
            elif n_c and n_b:
                bound = compare_rates(
                    x_c, n_c, x_b, n_b, cfg.noninferiority_alpha, cfg.tau, cfg.noninferiority_margin
                )
                strict = compare_rates(
                    x_c, n_c, x_b, n_b, cfg.promotion_alpha, cfg.tau, cfg.noninferiority_margin
                )
        if bound is not None and strict is not None:
            ev.update(
                estimate=round(bound.ratio, 4),
                lower=round(bound.lower, 4),
                promotion_lower=round(strict.lower, 4),
                upper=round(min(bound.upper, 1e6), 4),
                n_challenger=bound.n_challenger,
                n_champion=bound.n_champion,
            )
        return ev

    def _prune(self, state: dict[str, Any], now: datetime) -> None:
        """Keep two days of per-window counts: enough for any canary, bounded state size."""
        cutoff = (now - timedelta(days=2)).isoformat()
        state["windows"] = {k: v for k, v in state["windows"].items() if k >= cutoff}

    # ------------------------------------------------------------------ deep pass
    def deep_pass(self, now: datetime) -> PassResult:
        """Hourly: carts, conversion and revenue of the hour whose purchase window just closed."""
        cfg = self.cfg
        h_end = floor_time(now - timedelta(seconds=cfg.attribution.purchase), 3600)
        h_start = h_end - timedelta(hours=1)
        events = self.source.read(h_start, min(now, h_end + timedelta(seconds=cfg.attribution.purchase)))
        result = PassResult(kind="deep", window_start=h_start)
        quality = compute_quality(events, h_start, h_end, cfg.attribution, as_of=now)
        fams = tuple(f for f in mature_families(h_end, now, cfg.attribution) if f != "click")
        merged: dict[str, VariantQuality] = {}
        for q in quality.values():
            if q.variant not in ("champion", "challenger", "fallback"):
                continue
            m = merged.setdefault(q.variant, VariantQuality(q.variant, "*"))
            for f in ("impressions", "lists", "carted_lists", "purchased_lists", "revenue"):
                setattr(m, f, getattr(m, f) + getattr(q, f))
        for q in merged.values():
            for name, value in rate_metrics(q, fams, cfg.min_lists_for_rates).items():
                result.data.append(self._d(name, value, h_start, q.variant))
        result.summary = {
            "window_start": h_start.isoformat(),
            "events": events.num_rows,
            "variants": {k: v.to_dict() for k, v in merged.items()},
            "metrics": len(result.data),
        }
        return result
