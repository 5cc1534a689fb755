"""The ingest pipeline: raw object -> validated, deduplicated, enriched curated Parquet.

One code path for local files and S3 objects (the S3 adapter downloads to a temporary file and
uploads the committed outputs). Streaming throughout: record batches in, row groups out, memory
flat in the file size except the 8 bytes per distinct ``event_id`` that exact dedup keeps.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shelfwise import bots
from shelfwise.events import MIN_TS_MS, SCHEMA_VERSION
from shelfwise.ingest import readers
from shelfwise.ingest.dedup import SeenIds
from shelfwise.ingest.errors import CorruptInputError, UnknownFormatError
from shelfwise.ingest.formats import ADAPTERS
from shelfwise.ingest.hashing import Pseudonymiser, hash128_hex
from shelfwise.ingest.readers import RawChunk
from shelfwise.ingest.schema import CURATED_SCHEMA, EVENT_TYPE_VALUES, EVENT_WEIGHT_BY_INDEX, REASONS
from shelfwise.ingest.sessions import SESSION_GAP_MS, Sessioniser
from shelfwise.ingest.sinks import CollectSink, PartitionWriter, QuarantineWriter, csv_text, raw_text
from shelfwise.ingest.source import Source, open_source, prefetch
from shelfwise.ingest.summary import IngestSummary
from shelfwise.ingest.validate import latest_ts_ms, normalise_types, time_range, validate
from shelfwise.pseudonym import scrub, scrub_text

DAY_MS = 86_400_000
BOT_COLUMNS = ("event_type", "user_id", "session_id", "timestamp", "item_id")
CURATED_PREFIX = "curated/events"
SUMMARY_PREFIX = "curated/_summaries"
QUARANTINE_PREFIX = "quarantine"


@dataclass(frozen=True)
class IngestOptions:
    """Per-run configuration, passed in by the CLI or the handler (domain code reads no env)."""

    fmt: str = "auto"
    pseudonymisation_key: bytes | None = None
    session_gap_ms: int = SESSION_GAP_MS
    block_bytes: int = readers.BLOCK_BYTES
    # Events before this (epoch ms) are quarantined as out of range; default the Unix epoch.
    min_ts_ms: int = MIN_TS_MS


def object_hash(*parts: object) -> str:
    """The deterministic name of a source object's outputs, e.g. from (bucket, key, version or ETag)."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(str(part).encode("utf-8", "surrogatepass"))
        h.update(b"\x1e")
    return h.hexdigest()


class Pipeline:
    """Runs one source object through validation, cleaning and features into a sink."""

    def __init__(
        self,
        source: Source,
        source_key: str,
        options: IngestOptions,
        sink: PartitionWriter | CollectSink,
        quarantine: QuarantineWriter,
        max_ts_ms: int,
        summary: IngestSummary,
    ) -> None:
        self.source = source
        self.adapter = source.adapter
        self.source_key = source_key
        self.options = options
        self.sink = sink
        self.quarantine = quarantine
        self.max_ts_ms = max_ts_ms
        self.summary = summary
        self.seen = SeenIds()
        self.sessions = Sessioniser(options.session_gap_ms)
        self.pseudonymise = (
            Pseudonymiser(options.pseudonymisation_key) if options.pseudonymisation_key else None
        )
        self.reason_counts = np.zeros(len(REASONS), np.int64)
        # Behaviour rows as curated (actor, time, item), for the bot rules at the end of the object.
        self._behaviour: list[pa.RecordBatch] = []
        self.bot_flags: pa.Table | None = None

    def run(self) -> None:
        for chunk in prefetch(self.source.chunks):
            self._chunk(chunk)
        self.summary.reasons = {REASONS[i]: int(c) for i, c in enumerate(self.reason_counts) if i and c}
        self.summary.rows_quarantined = int(self.reason_counts[1:].sum())
        self._flag_bots()

    def _flag_bots(self) -> None:
        """The bot rules over the object's behaviour rows: the decision goes beside the curated rows
        (which keep every row) and the share into the summary."""
        if not self._behaviour:
            self.summary.bots = bots.BotReport().to_dict()
            return
        table = pa.Table.from_batches(self._behaviour)
        self._behaviour = []
        report = bots.detect(table)
        self.summary.bots = report.to_dict()
        if report.actors:
            self.bot_flags = bots.flags_table(report, table)

    def _chunk(self, chunk: RawChunk) -> None:
        s = self.summary
        for bad in chunk.malformed:
            self.quarantine.write(bad.line, bad.reason, bad.raw)
            self.reason_counts[REASONS.index(bad.reason)] += 1
        s.rows_read += len(chunk.malformed)
        batch = chunk.batch
        n = batch.num_rows
        if n == 0:
            return
        s.rows_read += n
        pre_codes = None
        if self.source.kind == "csv":
            batch, pre_codes = normalise_types(batch, self.source.column_types, n)
        native = self.adapter.to_native(batch)
        v = validate(
            native,
            n,
            max_ts_ms=self.max_ts_ms,
            min_ts_ms=self.options.min_ts_ms,
            epoch_unit=self.adapter.epoch_unit,
            pre_codes=pre_codes,
        )
        codes = v.codes
        bad_idx = np.flatnonzero(codes)
        if len(bad_idx) and self.pseudonymise is not None:
            # No raw text with a key: the native fields of each bad row, pseudonymised.
            self.reason_counts += np.bincount(codes[bad_idx], minlength=len(REASONS))
            take = pa.array(bad_idx)
            columns = {
                k: (a.take(take).to_pylist() if len(a) == n else [None] * len(bad_idx))
                for k, a in native.items()
            }
            for j, i in enumerate(bad_idx.tolist()):
                row = {k: vals[j] for k, vals in columns.items() if vals[j] is not None}
                self.quarantine.write_row(int(chunk.lines[i]), REASONS[codes[i]], row)
            bad_idx = bad_idx[:0]
        if len(bad_idx):
            self.reason_counts += np.bincount(codes[bad_idx], minlength=len(REASONS))
            bad_rows = chunk.batch.take(pa.array(bad_idx))
            raw = csv_text(bad_rows, self.source.delimiter) if self.source.kind == "csv" else None
            if raw is not None:
                self.quarantine.write_many(chunk.lines[bad_idx], codes[bad_idx], raw)
                bad_idx = bad_idx[:0]
            rows = bad_rows.to_pylist() if len(bad_idx) else []
            for i, row in zip(bad_idx.tolist(), rows, strict=True):
                self.quarantine.write(
                    int(chunk.lines[i]),
                    REASONS[codes[i]],
                    raw_text(row, self.source.kind, self.source.delimiter),
                )
        valid = codes == 0
        if not valid.any():
            return
        self._emit(v.columns, v.event_type_index, v.ts_ms, chunk.lines, valid)

    def _emit(
        self,
        cols: dict[str, pa.Array],
        et_index: pa.Array,
        ts: np.ndarray,
        lines: np.ndarray,
        valid: np.ndarray,
    ) -> None:
        """Ids, dedup, sessions and features for the valid rows of a batch, then to the sink.

        Ids are computed on the whole batch and the batch is filtered once (valid and first seen),
        which is cheaper than filtering every column twice.
        """
        s = self.summary
        user = cols.get("user_id")
        if user is not None and self.pseudonymise is not None:
            user = self.pseudonymise(user)
            cols["user_id"] = user
        if self.pseudonymise is not None:
            _scrub_text_columns(cols, self.pseudonymise)

        # Event ids: from the source, else derived from the event's content (so a repeated line is
        # a duplicate, and the same event in two objects gets the same id).
        event_id = cols.get("event_id")
        if event_id is None or event_id.null_count:
            missing = pc.is_null(event_id) if event_id is not None else None
            event_id, _ = self._derive_ids(cols, et_index, ts, missing)
            derived = (
                valid if missing is None else valid & np.asarray(missing.to_numpy(zero_copy_only=False), bool)
            )
            s.event_ids_derived += int(derived.sum())

        keep = self.seen.first_seen(event_id, valid)
        n = int(keep.sum())
        s.duplicates += int(valid.sum()) - n
        if n == 0:
            return
        if n < len(keep):
            mask = pa.array(keep)
            cols = {k: a.filter(mask) for k, a in cols.items()}
            event_id = event_id.filter(mask)
            et_index = et_index.filter(mask)
            ts, lines = ts[keep], lines[keep]
            user = cols.get("user_id")

        session = cols.get("session_id")
        if session is None or session.null_count:
            need = pc.is_null(session) if session is not None else pa.array(np.ones(n, bool))
            if user is not None:
                need = pc.and_(need, pc.is_valid(user))
            need_np = np.asarray(need.to_numpy(zero_copy_only=False), bool)
            if need_np.any():
                idx = np.flatnonzero(need_np)
                derived_sessions = self.sessions.assign(user.take(pa.array(idx)), ts[idx])  # type: ignore[union-attr]
                s.sessions_derived += len(idx)
                if session is None:
                    session = pa.nulls(n, pa.string())
                positions = np.full(n, -1, np.int64)
                positions[idx] = np.arange(len(idx))
                session = pc.coalesce(
                    session, pc.take(derived_sessions, pa.array(positions, mask=positions < 0))
                )

        days = ts // DAY_MS
        ts_arr = pa.array(ts, pa.int64()).cast(CURATED_SCHEMA.field("timestamp").type)
        arrays: dict[str, pa.Array] = {
            "event_id": event_id,
            "event_type": pa.DictionaryArray.from_arrays(et_index, EVENT_TYPE_VALUES),
            "session_id": session,
            "timestamp": ts_arr,
            "weight": pc.take(EVENT_WEIGHT_BY_INDEX, et_index),
            "hour": pa.array(((ts // 3_600_000) % 24).astype(np.int8)),
            "dow": pa.array(((days + 3) % 7).astype(np.int8)),
            "source_format": pa.repeat(pa.scalar(self.adapter.name), n),
            "source_key": pa.repeat(pa.scalar(self.source_key), n),
            "source_line": pa.array(lines, pa.int64()),
            "schema_version": pa.repeat(pa.scalar(SCHEMA_VERSION, pa.int16()), n),
        }
        columns = []
        for f in CURATED_SCHEMA:
            arr = arrays.get(f.name)
            if arr is None:
                arr = cols.get(f.name)
            if arr is None:
                arr = pa.nulls(n, f.type)
            elif arr.type != f.type:
                arr = arr.cast(f.type)
            columns.append(arr)
        batch = pa.RecordBatch.from_arrays(columns, schema=CURATED_SCHEMA)
        s.rows_valid += n
        behaviour = pc.is_in(pc.cast(batch.column("event_type"), pa.string()), pa.array(bots.BEHAVIOUR))
        self._behaviour.append(batch.select(BOT_COLUMNS).filter(behaviour))
        self.sink.add(batch, days)

    def _derive_ids(
        self, cols: dict[str, pa.Array], et_index: pa.Array, ts: np.ndarray, only: pa.Array | None
    ) -> tuple[pa.Array, int]:
        n = len(ts)
        parts: list[pa.Array] = [et_index, pa.array(ts)]
        # Not `properties`: it is the bulk of the bytes and two events equal in everything else are
        # the same event delivered twice.
        for name in ("user_id", "session_id", "item_id", "price", "quantity", "query", "position"):
            arr = cols.get(name)
            parts.append(arr if arr is not None else pa.nulls(n, pa.string()))
        if only is None:
            return hash128_hex(parts), n
        idx = pa.array(np.flatnonzero(np.asarray(only.to_numpy(zero_copy_only=False), bool)))
        ids = hash128_hex([p.take(idx) for p in parts])
        positions = np.full(n, -1, np.int64)
        positions[idx.to_numpy()] = np.arange(len(idx))
        derived = pc.take(ids, pa.array(positions, mask=positions < 0))
        return pc.coalesce(cols["event_id"], derived), len(idx)


def _scrub_text_columns(cols: dict[str, pa.Array], pseudonymiser: Pseudonymiser) -> None:
    """Free text (properties, query) with e-mail addresses and phone numbers pseudonymised.

    Per value in Python, but only over the rows of a batch that hold text at all, and only when
    a pseudonymisation key is configured.
    """
    props = cols.get("properties")
    if props is not None and props.null_count < len(props):

        def one(text: str) -> str:
            try:
                value = json.loads(text)
            except ValueError:
                return scrub_text(text, pseudonymiser)
            return json.dumps(scrub(value, pseudonymiser), ensure_ascii=False, separators=(",", ":"))

        cols["properties"] = pa.array([None if v is None else one(v) for v in props.to_pylist()], pa.string())
    query = cols.get("query")
    if query is not None and query.null_count < len(query):
        cols["query"] = pa.array(
            [None if v is None else scrub_text(v, pseudonymiser) for v in query.to_pylist()], pa.string()
        )


# ---------------------------------------------------------------- entry points
@dataclass
class RunResult:
    summary: IngestSummary
    curated_files: list[tuple[str, Path]]  # (relative key under curated/events/, local file)
    quarantine_file: Path | None
    bot_file: Path | None = None  # the flagged actors (bots.FLAGS_SCHEMA), when any


def run_file(
    path: Path,
    work_dir: Path,
    *,
    source_key: str,
    name: str,
    options: IngestOptions,
    reference_time: datetime,
) -> RunResult:
    """Ingest one local file into ``work_dir`` (uncommitted); the caller commits the outputs."""
    started = time.perf_counter()
    summary = IngestSummary(source=source_key, object_hash=name)
    try:
        source = open_source(path, options.fmt, options.block_bytes)
    except UnicodeDecodeError as exc:
        raise UnknownFormatError("the object is not UTF-8 text") from exc
    if source is None:
        summary.warnings.append("empty object: no rows")
        summary.seconds = round(time.perf_counter() - started, 3)
        return RunResult(summary, [], None)
    summary.format = source.adapter.name
    curated_root = work_dir / "curated"
    writer = PartitionWriter(curated_root, name)
    qpath = work_dir / "quarantine.jsonl.gz"
    max_ts_ms = latest_ts_ms(reference_time)
    summary.time_range = time_range(options.min_ts_ms, max_ts_ms)
    quarantine = QuarantineWriter(
        qpath,
        Pseudonymiser(options.pseudonymisation_key) if options.pseudonymisation_key else None,
        summary.time_range,
    )
    pipeline = Pipeline(source, source_key, options, writer, quarantine, max_ts_ms, summary)
    try:
        pipeline.run()
        files = writer.close()
    except BaseException:
        writer.abort()
        quarantine.close()
        raise
    has_q = quarantine.close()
    if summary.rows_read == 0:
        summary.warnings.append("no data rows (header only)")
    summary.event_dates = sorted({f.split("/")[0].split("=")[1] for f in files})
    _check_invariant(summary)
    bot_file = None
    if pipeline.bot_flags is not None:
        bot_file = work_dir / "bots.parquet"
        pq.write_table(pipeline.bot_flags, bot_file)
    summary.seconds = round(time.perf_counter() - started, 3)
    return RunResult(summary, [(f, curated_root / f) for f in files], qpath if has_q else None, bot_file)


def _check_invariant(s: IngestSummary) -> None:
    if s.rows_valid + s.rows_quarantined + s.duplicates != s.rows_read:
        raise AssertionError(
            f"row accounting broken: {s.rows_valid} valid + {s.rows_quarantined} quarantined + "
            f"{s.duplicates} duplicates != {s.rows_read} read"
        )


def ingest_file(
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    fmt: str = "auto",
    *,
    pseudonymisation_key: bytes | None = None,
    source_key: str | None = None,
    force: bool = False,
    block_bytes: int = readers.BLOCK_BYTES,
    min_ts_ms: int = MIN_TS_MS,
) -> IngestSummary:
    """Ingest a local file into ``out_dir`` laid out like the buckets (curated/, quarantine/).

    ``min_ts_ms``: events (or catalogue rows) before it (epoch ms) are quarantined as out of range
    (default the Unix epoch).

    The output name derives from the file's resolved path, size and mtime, so running twice on
    the same file changes nothing (the second run returns the stored summary, ``skipped``).
    Outputs are written to a temporary directory and moved into place when complete; the summary
    goes last and marks the object as done.
    """
    src = Path(path)
    if not src.is_file():
        from shelfwise.ingest.errors import SourceGoneError

        raise SourceGoneError(f"no such file: {src}")
    stat = src.stat()
    key = source_key or str(src.resolve())
    name = object_hash("file", str(src.resolve()), stat.st_size, stat.st_mtime_ns)
    out = Path(out_dir)
    summary_path = out / SUMMARY_PREFIX / f"{name}.json"
    if summary_path.exists() and not force:
        summary = IngestSummary.from_dict(json.loads(summary_path.read_text()))
        summary.skipped = True
        return summary
    if fmt == "catalogue":  # a product catalogue, not events (docs/catalogue.md)
        from shelfwise.ingest.catalogue import DirStore

        summary = ingest_catalogue_to(
            src.read_bytes(),
            DirStore(out),
            source=key,
            name=name,
            uploaded=datetime.fromtimestamp(stat.st_mtime, UTC),
            min_ts_ms=min_ts_ms,
        )
        summary_path.parent.mkdir(parents=True, exist_ok=True)
        summary.summary = str(summary_path)
        summary_path.write_text(json.dumps(summary.to_dict(), indent=1, sort_keys=True))
        return summary
    options = IngestOptions(
        fmt=fmt, pseudonymisation_key=pseudonymisation_key, block_bytes=block_bytes, min_ts_ms=min_ts_ms
    )
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".ingest-", dir=out) as tmp:
        result = run_file(
            src,
            Path(tmp),
            source_key=key,
            name=name,
            options=options,
            reference_time=datetime.fromtimestamp(stat.st_mtime, UTC),
        )
        summary = result.summary
        for rel, local in result.curated_files:
            dest = out / CURATED_PREFIX / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(local, dest)
            summary.outputs.append(str(dest))
        if result.quarantine_file is not None:
            dest = out / QUARANTINE_PREFIX / f"{name}.jsonl.gz"
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(result.quarantine_file, dest)
            summary.quarantine = str(dest)
        if result.bot_file is not None:
            dest = out / bots.FLAGS_PREFIX / f"{name}.parquet"
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(result.bot_file, dest)
            summary.bot_flags = str(dest)
        summary.summary = str(summary_path)
        summary_path.parent.mkdir(parents=True, exist_ok=True)
        tmp_summary = summary_path.with_suffix(".json.tmp")
        tmp_summary.write_text(json.dumps(summary.to_dict(), indent=1, sort_keys=True))
        os.replace(tmp_summary, summary_path)
    return summary


def _is_curated(columns: list[str]) -> bool:
    return "schema_version" in columns and "source_line" in columns and "event_id" in columns


def _curated_files(root: Path) -> list[Path]:
    return sorted(
        p
        for p in root.rglob("*.parquet")
        if not any(part.startswith((".", "_")) for part in p.relative_to(root).parts)
    )


def read_events(
    path: str | os.PathLike[str],
    fmt: str = "auto",
    *,
    pseudonymisation_key: bytes | None = None,
    reference_time: datetime | None = None,
    min_ts_ms: int = MIN_TS_MS,
) -> pa.Table:
    """The valid rows of any supported log (file or directory, raw or curated), as a curated table.

    ``min_ts_ms``: events before it (epoch ms) are dropped as out of range (default the Unix epoch).

    Raw files run through the same pipeline as the ingest (nothing is written); curated Parquet
    is read as is. Across files of a directory, repeated ``event_id``s are dropped (first kept).
    """
    root = Path(path)
    if root.is_dir():
        files = _curated_files(root)
        raw_files = [
            p
            for p in sorted(root.rglob("*"))
            if p.is_file()
            and p.suffix != ".parquet"
            and not any(x.startswith((".", "_")) for x in p.relative_to(root).parts)
        ]
        files = sorted(files + raw_files)
        if not files:
            raise UnknownFormatError(f"no event files under {root}")
    elif root.is_file():
        files = [root]
    else:
        from shelfwise.ingest.errors import SourceGoneError

        raise SourceGoneError(f"no such file or directory: {root}")
    tables = [_read_one(p, fmt, pseudonymisation_key, reference_time, min_ts_ms) for p in files]
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    if len(tables) > 1 and table.num_rows:
        table = _drop_repeated_ids(table)
    return table


def _read_one(
    path: Path, fmt: str, key: bytes | None, reference_time: datetime | None, min_ts_ms: int = MIN_TS_MS
) -> pa.Table:
    if path.suffix == ".parquet" or readers.peek(path)[0] == "parquet":
        columns = readers.parquet_columns(path)
        if _is_curated(columns):
            t = pq.read_table(str(path), partitioning=None)
            t = t.select([c for c in CURATED_SCHEMA.names if c in t.column_names])
            return _conform(t)
    source = open_source(path, fmt)
    if source is None:
        return CURATED_SCHEMA.empty_table()
    sink = CollectSink()
    summary = IngestSummary(source=str(path), object_hash="")
    ref = reference_time or datetime.fromtimestamp(path.stat().st_mtime, UTC)
    max_ts_ms = latest_ts_ms(ref)
    options = IngestOptions(fmt=fmt, pseudonymisation_key=key, min_ts_ms=min_ts_ms)
    Pipeline(source, str(path), options, sink, QuarantineWriter(None), max_ts_ms, summary).run()
    _check_invariant(summary)
    return pa.Table.from_batches(sink.batches, CURATED_SCHEMA)


def _conform(t: pa.Table) -> pa.Table:
    cols = []
    for f in CURATED_SCHEMA:
        if f.name in t.column_names:
            col = t.column(f.name)
            cols.append(col if col.type == f.type else col.cast(f.type))
        else:
            cols.append(pa.nulls(t.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=CURATED_SCHEMA)


def _drop_repeated_ids(table: pa.Table) -> pa.Table:
    keep = SeenIds().first_seen(table.column("event_id").combine_chunks())
    return table if keep.all() else table.filter(pa.array(keep))


__all__ = [
    "ADAPTERS",
    "CorruptInputError",
    "IngestOptions",
    "IngestSummary",
    "ingest_file",
    "object_hash",
    "read_events",
    "run_file",
]


def ingest_catalogue_to(
    data: bytes, store: Any, *, source: str, name: str, uploaded: datetime, min_ts_ms: int = MIN_TS_MS
) -> IngestSummary:
    """Ingest one catalogue file into ``store`` (:mod:`shelfwise.ingest.catalogue`); its summary."""
    from shelfwise.ingest.catalogue import ingest_catalogue

    return ingest_catalogue(data, store, source_key=source, name=name, uploaded=uploaded, min_ts_ms=min_ts_ms)
