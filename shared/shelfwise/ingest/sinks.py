"""Where the pipeline's rows go: curated Parquet partitioned by event date (``PartitionWriter``),
memory (``CollectSink``, for ``read_events``), and the quarantine of bad rows with their raw text.
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import json
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shelfwise.events import PARTITION_COLUMN
from shelfwise.ingest.formats import json_literals
from shelfwise.ingest.schema import CURATED_SCHEMA, DICTIONARY_COLUMNS, OUT_OF_RANGE, REASON_CODE, REASONS
from shelfwise.pseudonym import Pseudonymiser, scrub

ROW_GROUP_ROWS = 262_144
MAX_BUFFERED_ROWS = 524_288
MAX_OPEN_WRITERS = 128
MAX_RAW_CHARS = 65_536


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
    """Bad rows as gzip JSON Lines: ``{"line", "reason", "raw"}`` (raw cut at 64 KiB).

    With a pseudonymiser (a key is configured) no raw text is written, because a bad row's user
    id cannot be told apart in it: a row the adapter could split is kept as ``row`` (its native
    fields, the user id pseudonymised, e-mail addresses and phone numbers in any text replaced by
    their pseudonyms, :meth:`write_row`); a line that could not be parsed keeps only a keyed
    digest and its length (``raw_digest``, ``raw_length``), enough to recognise it again.

    A ``timestamp_out_of_range`` record also states the range it missed (``time_range``:
    ``valid_from``, the floor, and ``valid_until``), so it reads without the deployment's settings.
    """

    def __init__(
        self,
        path: Path | None,
        pseudonymiser: Pseudonymiser | None = None,
        time_range: dict[str, str] | None = None,
    ) -> None:
        self.path = path
        self.pseudonymiser = pseudonymiser
        self.time_range = time_range or {}
        # The same fields as JSON text, for the records write_many renders with pyarrow kernels.
        self._range_json = "".join(f", {json.dumps(k)}: {json.dumps(v)}" for k, v in self.time_range.items())
        self._file: gzip.GzipFile | None = None
        self.rows = 0

    def write(self, line: int | None, reason: str, raw: str) -> None:
        self.rows += 1
        if self.path is None:
            return
        record: dict[str, Any] = {"line": line, "reason": reason}
        if reason == OUT_OF_RANGE:
            record.update(self.time_range)
        if self.pseudonymiser is not None:
            record["raw_digest"] = self.pseudonymiser.one(raw)
            record["raw_length"] = len(raw)
        else:
            record["raw"] = raw[:MAX_RAW_CHARS]
            if len(raw) > MAX_RAW_CHARS:
                record["raw_truncated_from"] = len(raw)
        self._open().write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))

    def write_row(self, line: int | None, reason: str, row: dict[str, Any]) -> None:
        """One bad row as its native fields, pseudonymised (only with a pseudonymiser)."""
        assert self.pseudonymiser is not None
        self.rows += 1
        if self.path is None:
            return
        clean: dict[str, Any] = {}
        for k, v in row.items():
            if isinstance(v, bytes):
                v = v.decode("utf-8", "replace")
            if isinstance(v, str) and len(v) > MAX_RAW_CHARS:
                v = v[:MAX_RAW_CHARS]
            clean[k] = v
        if isinstance(clean.get("user_id"), str) and clean["user_id"]:
            clean["user_id"] = self.pseudonymiser.one(clean["user_id"])
        record: dict[str, Any] = {"line": line, "reason": reason}
        if reason == OUT_OF_RANGE:
            record.update(self.time_range)
        record["row"] = scrub(clean, self.pseudonymiser)
        self._open().write((json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8"))

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
        ranges = pc.if_else(
            pc.equal(pa.array(codes), REASON_CODE[OUT_OF_RANGE]),
            pa.scalar(self._range_json, pa.string()),
            pa.scalar("", pa.string()),
        )
        text = pc.binary_join_element_wise(
            '{"line": ',
            pc.cast(pa.array(lines), pa.string()),
            ', "reason": "',
            reasons,
            '"',
            ranges,
            ', "raw": ',
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


def raw_text(values: dict[str, Any], kind: str, delimiter: str) -> str:
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


def csv_text(batch: pa.RecordBatch, delimiter: str) -> pa.Array | None:
    """CSV rows re-joined as text (None if a column holds raw bytes: those go the slow way)."""
    cols = []
    for arr in batch.columns:
        if pa.types.is_binary(arr.type):
            return None
        cols.append(arr if pa.types.is_string(arr.type) else pc.cast(arr, pa.string()))
    if len(cols) == 1:
        return cols[0].fill_null("")
    return pc.binary_join_element_wise(*cols, delimiter, null_handling="replace", null_replacement="")
