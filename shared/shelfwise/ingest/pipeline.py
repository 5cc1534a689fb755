"""The ingest pipeline: raw object -> validated, deduplicated, enriched curated Parquet.

One code path for local files and S3 objects (the S3 adapter downloads to a temporary file and
uploads the committed outputs). Streaming throughout: record batches in, row groups out, memory
flat in the file size except the 8 bytes per distinct ``event_id`` that exact dedup keeps.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import itertools
import json
import os
import queue
import tempfile
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shelfwise.events import MAX_FUTURE_SECONDS, PARTITION_COLUMN, SCHEMA_VERSION
from shelfwise.ingest import readers
from shelfwise.ingest.errors import CorruptInputError, UnknownFormatError
from shelfwise.ingest.formats import ADAPTERS, Adapter, adapter_for, headerless_adapter, json_literals
from shelfwise.ingest.hashing import Pseudonymiser, hash64, hash128_hex
from shelfwise.ingest.readers import RawChunk
from shelfwise.ingest.schema import (
    CURATED_SCHEMA,
    DICTIONARY_COLUMNS,
    EVENT_TYPE_VALUES,
    EVENT_WEIGHT_BY_INDEX,
    REASONS,
)
from shelfwise.ingest.validate import _number, _utf8, validate

SESSION_GAP_MS = 30 * 60 * 1000
DAY_MS = 86_400_000
ROW_GROUP_ROWS = 262_144
MAX_BUFFERED_ROWS = 524_288
MAX_OPEN_WRITERS = 128
MAX_RAW_CHARS = 65_536
CURATED_PREFIX = "curated/events"
SUMMARY_PREFIX = "curated/_summaries"
QUARANTINE_PREFIX = "quarantine"


@dataclass
class IngestSummary:
    """What happened to one raw object. Invariant: valid + quarantined + duplicates = rows read."""

    source: str
    object_hash: str
    format: str | None = None
    rows_read: int = 0
    rows_valid: int = 0
    rows_quarantined: int = 0
    duplicates: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    quarantine: str | None = None
    summary: str | None = None
    event_dates: list[str] = field(default_factory=list)
    sessions_derived: int = 0
    event_ids_derived: int = 0
    seconds: float = 0.0
    skipped: bool = False
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IngestSummary:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class IngestOptions:
    """Per-run configuration, passed in by the CLI or the handler (domain code reads no env)."""

    fmt: str = "auto"
    pseudonymisation_key: bytes | None = None
    session_gap_ms: int = SESSION_GAP_MS
    block_bytes: int = readers.BLOCK_BYTES


def object_hash(*parts: object) -> str:
    """The deterministic name of a source object's outputs, e.g. from (bucket, key, version or ETag)."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(str(part).encode("utf-8", "surrogatepass"))
        h.update(b"\x1e")
    return h.hexdigest()


# ---------------------------------------------------------------- source opening
@dataclass
class Source:
    adapter: Adapter
    kind: str
    chunks: Iterator[RawChunk]
    delimiter: str = ","
    column_types: dict[str, pa.DataType] = field(default_factory=dict)


def open_source(path: Path, fmt: str = "auto", block_bytes: int = readers.BLOCK_BYTES) -> Source | None:
    """Detect the container and format of a local file and return its chunk iterator (None if empty)."""
    kind, head = readers.peek(path)
    if kind == "empty":
        return None
    if kind == "parquet":
        return Source(
            adapter_for(readers.parquet_columns(path), fmt), kind, readers.read_parquet_chunks(path)
        )
    if kind == "jsonl":
        if fmt not in ("auto", "native"):
            raise UnknownFormatError(f"JSON Lines are read as the native format, not {fmt!r}")
        return Source(ADAPTERS["native"], kind, readers.read_jsonl_chunks(path))
    nl = head.find(b"\n")
    first_line = head if nl < 0 else head[:nl]
    try:
        candidates = readers.header_fields(first_line)
    except UnicodeDecodeError as exc:
        raise UnknownFormatError("the first line (header) is not UTF-8 text") from exc
    except Exception as exc:  # csv.Error on a broken header line
        raise UnknownFormatError(f"the first line cannot be parsed as a CSV header: {exc}") from exc
    adapter: Adapter | None = None
    delimiter = ","
    has_header = True
    names: list[str] = []
    errors: list[str] = []
    for delim, fields_ in candidates.items():
        if len(fields_) < 2:
            continue
        try:
            adapter = adapter_for(fields_, fmt)
        except UnknownFormatError as exc:
            errors.append(str(exc))
            continue
        delimiter, names = delim, fields_
        break
    if adapter is None:
        headerless = headerless_adapter(candidates[","])
        if headerless is not None and fmt in ("auto", headerless.name):
            adapter, names, has_header = headerless, list(headerless.headerless_names), False
    if adapter is None:
        raise UnknownFormatError(
            errors[0] if errors else f"cannot detect a format from the header {first_line[:200]!r}"
        )
    if len(set(names)) != len(names):
        raise UnknownFormatError(f"the header repeats a column name: {names}")
    types = {n: adapter.csv_types.get(adapter.aliases.get(n, n), pa.string()) for n in names}
    chunks = readers.read_csv_chunks(
        path,
        delimiter=delimiter,
        column_names=names,
        column_types=types,
        has_header=has_header,
        block_bytes=block_bytes,
    )
    return Source(adapter, kind, chunks, delimiter, types)


# ---------------------------------------------------------------- dedup
class SeenIds:
    """Dedup of event ids within one object by 64-bit id hashes, in sorted runs.

    Each batch's hashes are sorted once; that gives the in-batch duplicates (the earliest row of
    an id wins) and cache-friendly binary searches into the sorted runs of earlier batches, which
    are merged like an LSM tree. Memory: 8 bytes per distinct id. A 64-bit
    collision (odds about n^2 / 2^65: 3e-8 for 1M ids in one object, 7e-7 for 5M) would drop one
    row as a duplicate.
    """

    # Runs stop merging at 2M ids (16 MB), so a merge never copies the whole set at once.
    MAX_RUN = 1 << 21

    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []

    def first_seen(self, ids: pa.Array, consider: np.ndarray | None = None) -> np.ndarray:
        """True for rows whose id has not been seen before (in this batch or earlier ones).

        With ``consider``, only those rows take part (the others are False and not remembered).
        """
        h = hash64(ids)
        if consider is not None and not consider.all():
            rows = np.flatnonzero(consider)
            keep = np.zeros(len(h), bool)
            keep[rows[self._first(h[rows])]] = True
            return keep
        return self._first(h)

    def _first(self, h: np.ndarray) -> np.ndarray:
        if len(h) == 0:
            return np.zeros(0, bool)
        order = np.argsort(h)
        hs = h[order]
        starts = np.flatnonzero(np.concatenate(([True], hs[1:] != hs[:-1])))
        uniq = hs[starts]
        first_row = np.minimum.reduceat(order, starts)  # the earliest row of each distinct id wins
        fresh = np.ones(len(uniq), bool)
        for run in self._runs:
            pos = np.searchsorted(run, uniq)
            pos[pos == len(run)] = len(run) - 1
            fresh &= run[pos] != uniq
        new = uniq[fresh]
        if len(new):
            self._runs.append(new)
            while (
                len(self._runs) > 1
                and len(self._runs[-2]) <= 2 * len(self._runs[-1])
                and len(self._runs[-2]) + len(self._runs[-1]) <= self.MAX_RUN
            ):
                last = self._runs.pop()
                merged = np.concatenate([self._runs.pop(), last])
                merged.sort(kind="stable")  # timsort: a linear merge of two sorted runs
                self._runs.append(merged)
        keep = np.zeros(len(h), bool)
        keep[first_row[fresh]] = True
        return keep


# ---------------------------------------------------------------- sessions
class Sessioniser:
    """Session ids from a 30-minute inactivity gap per user, for rows whose source has none.

    Streaming: each batch is sorted by (user, time) together with the carried state of users
    seen within the last gap (their last time and session start), so a session may span batches.
    State is pruned to users active within one gap of the newest event, which keeps it small for
    time-ordered logs. The id is ``<user_id>~<session start ms>``: deterministic per object.
    """

    def __init__(self, gap_ms: int = SESSION_GAP_MS) -> None:
        self.gap = gap_ms
        self.users = pa.array([], pa.string())
        self.last = np.zeros(0, np.int64)
        self.start = np.zeros(0, np.int64)
        self.newest = np.iinfo(np.int64).min

    def assign(self, users: pa.Array, ts: np.ndarray) -> pa.Array:
        s = len(self.users)
        combined = pa.concat_arrays([self.users, users]) if s else users
        codes = np.asarray(pc.dictionary_encode(combined).indices.to_numpy(zero_copy_only=False), np.int64)
        all_ts = np.concatenate([self.last, ts])
        src_start = np.concatenate([self.start, ts])
        not_state = np.concatenate([np.zeros(s, np.int8), np.ones(len(ts), np.int8)])
        order = np.lexsort((not_state, all_ts, codes))
        c, t = codes[order], all_ts[order]
        new = np.ones(len(order), bool)
        new[1:] = (c[1:] != c[:-1]) | (t[1:] - t[:-1] > self.gap)
        anchor = np.maximum.accumulate(np.where(new, np.arange(len(order)), 0))
        start_sorted = src_start[order][anchor]
        start = np.empty_like(start_sorted)
        start[order] = start_sorted
        starts = start[s:]
        last = np.ones(len(order), bool)
        last[:-1] = c[1:] != c[:-1]
        self.newest = max(self.newest, int(ts.max()))
        keep = last & (t >= self.newest - self.gap)
        self.users = combined.take(pa.array(order[keep]))
        self.last = t[keep]
        self.start = start_sorted[keep]
        return pc.binary_join_element_wise(users, pc.cast(pa.array(starts), pa.string()), "~")


# ---------------------------------------------------------------- sinks
class PartitionWriter:
    """Curated rows to ``event_date=YYYY-MM-DD/<hash>.parquet`` under a directory, in row groups.

    Rows are buffered per date until a row group is full (memory is capped across dates), and the
    Parquet encoding runs on one background thread (pyarrow releases the GIL), so it overlaps
    with parsing and validation of the next block; at most a few row groups are in flight.
    """

    MAX_PENDING = 2

    def __init__(self, root: Path, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet-writer")
        self._pending: deque[Future[None]] = deque()
        self.root = root
        self.name = name
        self._buffers: dict[int, list[pa.RecordBatch]] = {}
        self._counts: dict[int, int] = {}
        self._writers: OrderedDict[int, pq.ParquetWriter] = OrderedDict()
        self._parts: dict[int, int] = {}
        self.files: dict[str, int] = {}
        self._buffered = 0

    def add(self, batch: pa.RecordBatch, days: np.ndarray) -> None:
        if batch.num_rows == 0:
            return
        if days[0] == days[-1] and np.all(days == days[0]):
            present = {int(days[0])}
            self._buffer(int(days[0]), batch)
        else:
            if np.all(days[1:] >= days[:-1]):
                sorted_days = days
            else:
                order = np.argsort(days, kind="stable")
                sorted_days = days[order]
                batch = batch.take(pa.array(order))
            cuts = np.flatnonzero(np.diff(sorted_days)) + 1
            bounds = [0, *cuts.tolist(), len(sorted_days)]
            present = {int(sorted_days[a]) for a in bounds[:-1]}
            for a, b in itertools.pairwise(bounds):
                self._buffer(int(sorted_days[a]), batch.slice(a, b - a))
        # Logs are mostly in time order: a date absent from this batch is most likely complete,
        # so write it out now (one row group per date, and memory holds only the current dates).
        for day in [d for d in self._counts if d not in present]:
            self._flush(day)

    def _buffer(self, day: int, batch: pa.RecordBatch) -> None:
        self._buffers.setdefault(day, []).append(batch)
        self._counts[day] = self._counts.get(day, 0) + batch.num_rows
        self._buffered += batch.num_rows
        if self._counts[day] >= ROW_GROUP_ROWS:
            self._flush(day)
        elif self._buffered > MAX_BUFFERED_ROWS:
            self._flush(max(self._counts, key=self._counts.__getitem__))

    def _flush(self, day: int) -> None:
        batches = self._buffers.pop(day, [])
        rows = self._counts.pop(day, 0)
        self._buffered -= rows
        if not rows:
            return
        writer = self._writer(day)
        table = pa.Table.from_batches(batches, CURATED_SCHEMA)
        self._submit(lambda: writer.write_table(table, row_group_size=ROW_GROUP_ROWS))

    def _submit(self, work: Callable[[], None]) -> None:
        while len(self._pending) >= self.MAX_PENDING:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(work))

    def _drain(self) -> None:
        while self._pending:
            self._pending.popleft().result()

    def _writer(self, day: int) -> pq.ParquetWriter:
        writer = self._writers.get(day)
        if writer is not None:
            self._writers.move_to_end(day)
            return writer
        if len(self._writers) >= MAX_OPEN_WRITERS:
            _, oldest = self._writers.popitem(last=False)
            self._submit(oldest.close)
        part = self._parts.get(day, -1) + 1
        self._parts[day] = part
        date = (datetime(1970, 1, 1, tzinfo=UTC).date().fromordinal(719163 + day)).isoformat()
        rel = f"{PARTITION_COLUMN}={date}/{self.name}{'' if part == 0 else f'-{part}'}.parquet"
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = pq.ParquetWriter(
            str(path),
            CURATED_SCHEMA,
            compression="zstd",
            use_dictionary=DICTIONARY_COLUMNS,
            write_statistics=["timestamp", "event_type", "user_id", "item_id"],
        )
        self._writers[day] = writer
        self.files[rel] = 0
        return writer

    def close(self) -> list[str]:
        for day in list(self._buffers):
            self._flush(day)
        for writer in self._writers.values():
            self._submit(writer.close)
        self._writers.clear()
        self._drain()
        self._pool.shutdown()
        return sorted(self.files)

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._drain()
        self._pool.shutdown()
        for writer in self._writers.values():
            with contextlib.suppress(Exception):
                writer.close()
        self._writers.clear()


class CollectSink:
    """Keeps curated batches in memory (``read_events``)."""

    def __init__(self) -> None:
        self.batches: list[pa.RecordBatch] = []

    def add(self, batch: pa.RecordBatch, days: np.ndarray) -> None:
        if batch.num_rows:
            self.batches.append(batch)


class QuarantineWriter:
    """Bad rows as gzip JSON Lines: ``{"line", "reason", "raw"}`` (raw cut at 64 KiB)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._file: gzip.GzipFile | None = None
        self.rows = 0

    def write(self, line: int | None, reason: str, raw: str) -> None:
        self.rows += 1
        if self.path is None:
            return
        record: dict[str, Any] = {"line": line, "reason": reason, "raw": raw[:MAX_RAW_CHARS]}
        if len(raw) > MAX_RAW_CHARS:
            record["raw_truncated_from"] = len(raw)
        self._open().write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))

    def write_many(self, lines: np.ndarray, codes: np.ndarray, raw: pa.Array) -> None:
        """Many bad rows at once, rendered to JSON with pyarrow kernels (no per-row Python)."""
        if raw.null_count:
            raw = raw.fill_null("")
        long_rows = np.flatnonzero(
            np.asarray(pc.utf8_length(raw).to_numpy(zero_copy_only=False)) > MAX_RAW_CHARS
        )
        if len(long_rows):  # rare: cut one by one, and say how long they were
            values = raw.to_pylist()
            for i in long_rows.tolist():
                self.write(int(lines[i]), REASONS[codes[i]], values[i])
            keep = np.ones(len(raw), bool)
            keep[long_rows] = False
            lines, codes, raw = lines[keep], codes[keep], raw.filter(pa.array(keep))
        if len(raw) == 0:
            return
        self.rows += len(raw)
        if self.path is None:
            return
        reasons = pc.take(pa.array(REASONS, pa.string()), pa.array(codes))
        text = pc.binary_join_element_wise(
            '{"line": ',
            pc.cast(pa.array(lines), pa.string()),
            ', "reason": "',
            reasons,
            '", "raw": ',
            json_literals(raw),
            "}\n",
            "",
        )
        blob = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, len(text)], pa.int32()), text), "")
        self._open().write(blob[0].as_py().encode("utf-8"))

    def _open(self) -> gzip.GzipFile:
        if self._file is None:
            assert self.path is not None
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = gzip.GzipFile(str(self.path), "wb", mtime=0)
        return self._file

    def close(self) -> bool:
        if self._file is not None:
            self._file.close()
            return True
        return False


# ---------------------------------------------------------------- the run
_DONE = object()


def prefetch(chunks: Iterator[RawChunk], depth: int = 2) -> Iterator[RawChunk]:
    """Read and parse the next blocks on a background thread while this one is processed."""
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in chunks:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            q.put(exc)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None and stop.is_set():
                close()

    thread = threading.Thread(target=produce, name="ingest-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def _raw_text(values: dict[str, Any], kind: str, delimiter: str) -> str:
    def text(v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, bytes):
            return v.decode("utf-8", "backslashreplace")
        return str(v)

    if kind == "csv":
        return delimiter.join(text(v) for v in values.values())
    return json.dumps(
        {k: text(v) if isinstance(v, bytes) else v for k, v in values.items()},
        default=str,
        ensure_ascii=False,
    )


def _csv_text(batch: pa.RecordBatch, delimiter: str) -> pa.Array | None:
    """CSV rows re-joined as text (None if a column holds raw bytes: those go the slow way)."""
    cols = []
    for arr in batch.columns:
        if pa.types.is_binary(arr.type):
            return None
        cols.append(arr if pa.types.is_string(arr.type) else pc.cast(arr, pa.string()))
    if len(cols) == 1:
        return cols[0].fill_null("")
    return pc.binary_join_element_wise(*cols, delimiter, null_handling="replace", null_replacement="")


def _normalise_types(
    batch: pa.RecordBatch, types: dict[str, pa.DataType], n: int
) -> tuple[pa.RecordBatch, np.ndarray | None]:
    """Bring a block that fell back to raw bytes to the types of the fast path, flagging bad values."""
    if all(f.type == types.get(f.name, f.type) for f in batch.schema):
        return batch, None
    from shelfwise.ingest.schema import REASON_CODE

    codes = np.zeros(n, np.int8)
    arrays = []
    for f, arr in zip(batch.schema, batch.columns, strict=True):
        target = types.get(f.name, pa.string())
        if pa.types.is_binary(arr.type):
            arr, bad = _utf8(arr)
            if bad is not None:
                codes[(codes == 0) & bad] = REASON_CODE["invalid_utf8"]
        if target != pa.string() and arr.type == pa.string():
            pattern = (
                r"^\s*[+-]?\d+\s*$"
                if pa.types.is_integer(target)
                else r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"
            )
            arr, bad = _number(arr, target, pattern)
            if bad is not None:
                m = np.asarray(bad.fill_null(False).to_numpy(zero_copy_only=False), bool)
                codes[(codes == 0) & m] = REASON_CODE["wrong_type"]
        arrays.append(arr)
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names), codes


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

    def run(self) -> None:
        for chunk in prefetch(self.source.chunks):
            self._chunk(chunk)
        self.summary.reasons = {REASONS[i]: int(c) for i, c in enumerate(self.reason_counts) if i and c}
        self.summary.rows_quarantined = int(self.reason_counts[1:].sum())

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
            batch, pre_codes = _normalise_types(batch, self.source.column_types, n)
        native = self.adapter.to_native(batch)
        v = validate(
            native, n, max_ts_ms=self.max_ts_ms, epoch_unit=self.adapter.epoch_unit, pre_codes=pre_codes
        )
        codes = v.codes
        bad_idx = np.flatnonzero(codes)
        if len(bad_idx):
            self.reason_counts += np.bincount(codes[bad_idx], minlength=len(REASONS))
            bad_rows = chunk.batch.take(pa.array(bad_idx))
            raw = _csv_text(bad_rows, self.source.delimiter) if self.source.kind == "csv" else None
            if raw is not None:
                self.quarantine.write_many(chunk.lines[bad_idx], codes[bad_idx], raw)
                bad_idx = bad_idx[:0]
            rows = bad_rows.to_pylist() if len(bad_idx) else []
            for i, row in zip(bad_idx.tolist(), rows, strict=True):
                self.quarantine.write(
                    int(chunk.lines[i]),
                    REASONS[codes[i]],
                    _raw_text(row, self.source.kind, self.source.delimiter),
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


# ---------------------------------------------------------------- entry points
@dataclass
class RunResult:
    summary: IngestSummary
    curated_files: list[tuple[str, Path]]  # (relative key under curated/events/, local file)
    quarantine_file: Path | None


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
    quarantine = QuarantineWriter(qpath)
    max_ts_ms = int(reference_time.timestamp() * 1000) + MAX_FUTURE_SECONDS * 1000
    try:
        Pipeline(source, source_key, options, writer, quarantine, max_ts_ms, summary).run()
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
    summary.seconds = round(time.perf_counter() - started, 3)
    return RunResult(summary, [(f, curated_root / f) for f in files], qpath if has_q else None)


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
) -> IngestSummary:
    """Ingest a local file into ``out_dir`` laid out like the buckets (curated/, quarantine/).

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
    options = IngestOptions(fmt=fmt, pseudonymisation_key=pseudonymisation_key, block_bytes=block_bytes)
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
) -> pa.Table:
    """The valid rows of any supported log (file or directory, raw or curated), as a curated table.

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
    tables = [_read_one(p, fmt, pseudonymisation_key, reference_time) for p in files]
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    if len(tables) > 1 and table.num_rows:
        table = _drop_repeated_ids(table)
    return table


def _read_one(path: Path, fmt: str, key: bytes | None, reference_time: datetime | None) -> pa.Table:
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
    max_ts_ms = int(ref.timestamp() * 1000) + MAX_FUTURE_SECONDS * 1000
    options = IngestOptions(fmt=fmt, pseudonymisation_key=key)
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
