"""Simulate a period of shop traffic to export files, with the incidents' ground truth next to them."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import pickle
import resource
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from shelfwise.simulator.blocks import DAY_MS, HOUR_MS
from shelfwise.simulator.export import Exporter, describe
from shelfwise.simulator.params import Incident, ShopParams
from shelfwise.simulator.shop import NEW_TOP_NAME, ShopModel

GROUND_TRUTH_FILE = "ground_truth.jsonl"
MANIFEST_FILE = "manifest.json"
CATALOGUE_FILE = "catalogue.parquet"


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class SimulationResult:
    """What a run wrote: events, files, seconds, and the ground truth of its incidents."""

    events: int
    files: list[str]
    seconds: float
    ground_truth: list[dict[str, Any]] = field(default_factory=list)
    events_per_file: dict[str, int] = field(default_factory=dict)
    workers: list[dict[str, Any]] = field(default_factory=list)  # per worker process: CPU, peak RSS

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "files": len(self.files),
            "seconds": round(self.seconds, 3),
            "events_per_s": round(self.events_per_s),
            "incidents": [g["incident"] for g in self.ground_truth],
        }


def ground_truth(model: ShopModel, exporter: Exporter | None = None) -> list[dict[str, Any]]:
    """One record per incident: what happened, from when to when, and who or what it touched."""
    p = model.params
    c = model.catalogue
    out: list[dict[str, Any]] = []
    for inc in p.incidents:
        t0 = model.incident_ms(inc)
        rec: dict[str, Any] = {"incident": inc.name, "at_day": inc.at, "start": iso(t0), "end": None}
        if inc.name == "taste_drift":
            users = np.flatnonzero(model.drifted)
            rec.update(
                share=float(inc.opt("share")), n_users=len(users), user_ids=[str(u + 1) for u in users]
            )
        elif inc.name == "new_category":
            items = np.flatnonzero(c.top == c.leaf_top[-1])
            rec.update(
                category=NEW_TOP_NAME,
                leaves=[str(x) for x in c.leaf_names[model.n_leaves_base :]],
                n_items=len(items),
                item_ids=[str(i + 1) for i in items],
                start=iso(model.start_ms + inc.day * DAY_MS),
                available_from=iso(t0),
            )
        elif inc.name == "price_shock":
            top = int(inc.opt("top_category"))
            rec.update(
                category=str(c.leaf_names[c.leaf_top == top][0]).split("/")[0],
                factor=float(inc.opt("factor")),
                n_items=int((c.top == top).sum()),
            )
        elif inc.name == "data_outage":
            rec.update(end=iso(t0 + int(float(inc.opt("hours")) * HOUR_MS)), hours=float(inc.opt("hours")))
        elif inc.name == "schema_change":
            rec.update(renamed=dict(inc.opt("rename")), extra_columns=sorted(dict(inc.opt("extra"))))
            if exporter is not None:
                first = next(
                    s for d in range(inc.day, p.n_days) for s in exporter.files_for(d) if s.schema_change
                )
                rec.update(start=iso(first.start_ms), first_file=first.path.name)
        elif inc.name == "bot_traffic":
            n = int(inc.opt("views"))
            end = min(
                t0 + int(n * float(inc.opt("interval_s")) * 1000), model.start_ms + (inc.day + 1) * DAY_MS
            )
            rec.update(end=iso(end), user_id=str(model.bot_user_index + 1), views=n)
        elif inc.name == "corrupted_export" and exporter is not None:
            spec = next(s for s in exporter.files_for(inc.day) if s.corrupt is not None)
            lines = exporter.garbled.get(spec.path.name, [])
            rec.update(
                start=iso(spec.start_ms),
                end=iso(spec.end_ms),
                file=spec.path.name,
                share=float(inc.opt("share")),
                garbled_lines=lines,
                n_garbled=len(lines),
                header=exporter.fmt != "jsonl",
            )
        out.append(rec)
    return out


_WORKER: dict[str, Any] = {}


def _init_worker(inbox: Any, fmt: str, out: Path, split: str) -> None:
    # The parent builds the shop while this process starts (imports take about as long), then
    # sends it pickled once: no worker waits for the other, none rebuilds the shop.
    model = pickle.loads(inbox.get())
    _WORKER.update(model=model, exporter=Exporter(model, fmt, out, split))


def _run_days(days: list[int]) -> tuple[int, list[tuple[str, int]], dict[str, list[int]], dict[str, Any]]:
    model, exporter = _WORKER["model"], _WORKER["exporter"]
    exporter.garbled = {}
    total, files = 0, []
    for d in days:
        block = model.day(d)
        for spec, rows in exporter.write_day(block):
            files.append((str(spec.path), rows))
            total += rows
    return total, files, exporter.garbled, _usage()


def _usage() -> dict[str, Any]:
    """This process's CPU seconds and peak RSS so far, for benchmarks: workers forked by the fork
    server are not the caller's children, so its ``RUSAGE_CHILDREN`` never sees them."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "pid": os.getpid(),
        "parent_pid": os.getppid(),
        "cpu_seconds": ru.ru_utime + ru.ru_stime,
        "peak_rss_mb": round(ru.ru_maxrss / 1024, 1),
    }


def _worker_context() -> Any:
    """Workers come from a fork server that has imported this module once (forked from a clean,
    single-threaded process, never from the caller, which may hold threads: pyarrow, servers); so
    starting them costs milliseconds instead of an interpreter start and imports each. Spawned
    where there is no fork server."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])  # no effect once the server runs (it already has them)
    return ctx


def _write_catalogue(model: ShopModel, out: Path) -> None:
    import pyarrow.parquet as pq

    from shelfwise.simulator.catalogue_feed import catalogue_csv

    pq.write_table(model.catalogue.to_table(), out / CATALOGUE_FILE)
    # The same catalogue as the shop would export it (docs/catalogue.md), for raw/catalogue/.
    start = model.params.start
    at = datetime(start.year, start.month, start.day, tzinfo=UTC)
    (out / "catalogue").mkdir(exist_ok=True)
    (out / "catalogue" / "catalogue.csv").write_bytes(catalogue_csv(model.catalogue, at))


def simulate_to_files(
    params: ShopParams,
    seed: int,
    out_dir: str | Path,
    fmt: str = "native",
    split: str = "day",
    workers: int = 1,
    write_catalogue: bool = True,
) -> SimulationResult:
    """Simulate ``params.n_days`` days into ``out_dir/events/``; write the ground truth and a manifest.

    Days are independent chunks, so ``workers`` > 1 starts processes that each write whole days
    (one day per task, so they stay busy together); the files are byte-identical whatever the
    number of workers.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    days = list(range(params.n_days))
    if workers > 1 and params.n_days > 1:
        ctx = _worker_context()
        inbox = ctx.Queue()
        inbox.cancel_join_thread()  # if a worker dies before reading, exit rather than hang
        init = (inbox, fmt, out, split)
        with ctx.Pool(min(workers, params.n_days), initializer=_init_worker, initargs=init) as pool:
            model = ShopModel(params, seed)  # meanwhile, the workers import their modules
            blob = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
            for _ in range(min(workers, params.n_days)):
                inbox.put(blob)
            # One day per task, the latest (largest: users keep arriving) first, so the workers
            # finish together whatever the number of days.
            pending = pool.map_async(_run_days, [[d] for d in reversed(days)], chunksize=1)
            if write_catalogue:  # meanwhile, in the otherwise idle parent
                _write_catalogue(model, out)
            results = pending.get()
        exporter = Exporter(model, fmt, out, split)
    else:
        model = ShopModel(params, seed)
        exporter = Exporter(model, fmt, out, split)
        _WORKER.update(model=model, exporter=exporter)
        try:
            results = [_run_days(days)]
        finally:
            _WORKER.clear()
        if write_catalogue:
            _write_catalogue(model, out)
    garbled: dict[str, list[int]] = {}
    files: list[tuple[str, int]] = []
    total = 0
    usage: dict[int, dict[str, Any]] = {}
    for n, f, g, u in results:
        total += n
        files.extend(f)
        garbled.update(g)
        if u["pid"] != os.getpid() and u["cpu_seconds"] >= usage.get(u["pid"], u)["cpu_seconds"]:
            usage[u["pid"]] = u  # a worker's latest (cumulative) figures
    files.sort()
    exporter.garbled = garbled
    truth = ground_truth(model, exporter)
    with open(out / GROUND_TRUTH_FILE, "w") as fh:
        for rec in truth:
            fh.write(json.dumps(rec, sort_keys=True) + "\n")
    manifest = {
        "seed": seed,
        "params": {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in asdict(params).items()},
        "split": split,
        **describe(fmt),
        "files": {Path(f).name: n for f, n in files},
        "events": total,
    }
    manifest["params"]["incidents"] = [
        {"name": i.name, "at": i.at, "options": i.options} for i in params.incidents
    ]
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1, sort_keys=True, default=str) + "\n")
    return SimulationResult(
        events=total,
        files=[f for f, _ in files],
        seconds=time.perf_counter() - t0,
        ground_truth=truth,
        events_per_file={Path(f).name: n for f, n in files},
        workers=list(usage.values()),
    )


def incidents_from_specs(specs: list[str]) -> tuple[Incident, ...]:
    return tuple(Incident.parse(s) for s in specs)
