"""The catalogue feed: ``raw/catalogue/`` files -> validated rows -> curated Parquet snapshots.

A shop's product catalogue (CSV, JSON Lines or Parquet, gzip'd or not; columns ``item_id``,
``title``, ``category``, ``price``, ``in_stock`` and optionally ``brand``, ``attributes``,
``updated_at``, ``active``) is ingested like events (docs/catalogue.md):

- every row is validated and a bad one quarantined with its reason and line
  (``quarantine/catalogue/<hash>.jsonl.gz``); unknown columns are kept in ``attributes``;
- ``updated_at`` is read and held to the range as an event's timestamp is, by the events' own code
  (:func:`shelfwise.ingest.validate.timestamps_ms`, ``out_of_range``): only the impossible is refused;
- rows of one item within a file collapse to the latest ``updated_at`` (the others counted as
  ``duplicates``): valid + quarantined + duplicates = rows read;
- the accepted rows are kept as they came (``curated/catalogue/changes/...``), and merged into the
  previous snapshot, per item the row with the latest ``updated_at``, to a new full snapshot
  (``curated/catalogue/snapshots/snapshot_date=YYYY-MM-DD/<snapshot id>.parquet``); every snapshot
  is kept, ``curated/catalogue/latest.json`` names the newest (written with a conditional PUT, so
  two files ingested at once both land: the loser of the race merges again);
- serving's small snapshot (``curated/catalogue/serving/stock.npz``: item id, in stock, active,
  price; numpy only, no pyarrow at serve time) is rewritten from the new snapshot.

Catalogue files are read whole: they are one row per product (a 100k-item catalogue is tens of
MB), and validation is per row in Python, which keeps each reason exact (``updated_at`` is read
for the whole file in one pass, as the events read a batch).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shelfwise.catalogue_contract import CATALOGUE_STOCK_KEY
from shelfwise.errors import InputError
from shelfwise.events import MIN_TS_MS
from shelfwise.ingest.schema import OUT_OF_RANGE
from shelfwise.ingest.summary import IngestSummary
from shelfwise.ingest.validate import latest_ts_ms, out_of_range, time_range, timestamps_ms

CATALOGUE_PREFIX = "raw/catalogue/"
CURATED = "curated/catalogue"
LATEST_KEY = f"{CURATED}/latest.json"
SERVING_KEY = CATALOGUE_STOCK_KEY  # what serving reads (shelfwise.serving.stock)
REQUIRED = ("item_id", "title", "category", "price", "in_stock")
OPTIONAL = ("brand", "attributes", "updated_at", "active")
LIMITS = {"item_id": 256, "title": 1024, "category": 256, "brand": 256, "attributes": 16 * 1024}
RAW_LIMIT = 64 * 1024
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SNAPSHOT_SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        ("title", pa.string()),
        ("category", pa.string()),
        ("brand", pa.string()),
        ("price", pa.float64()),
        ("in_stock", pa.bool_()),
        ("active", pa.bool_()),
        ("attributes", pa.string()),
        ("updated_at", pa.timestamp("ms", tz="UTC")),
        ("source_key", pa.string()),
        ("snapshot_id", pa.string()),
        ("snapshot_at", pa.timestamp("ms", tz="UTC")),
    ]
)


class CatalogueConflictError(Exception):
    """A conditional write lost a race (someone else moved ``latest.json``)."""


class Store(Protocol):
    """Where the catalogue's curated files go: the curated and quarantine buckets, or a directory."""

    def read(self, key: str) -> tuple[bytes, str] | None: ...
    def write(self, key: str, body: bytes, *, expect: str | None = None) -> None: ...
    def write_quarantine(self, key: str, body: bytes) -> None: ...


@dataclass
class Row:
    line: int
    values: dict[str, Any]
    raw: str


# ------------------------------------------------------------------ reading


def is_catalogue_key(key: str) -> bool:
    return key.startswith(CATALOGUE_PREFIX)


def _raw_text(values: dict[str, Any]) -> str:
    text = json.dumps(values, default=str, ensure_ascii=False)
    return text


def read_rows(data: bytes) -> list[Row]:
    """The rows of a catalogue file (CSV, JSON Lines or Parquet; gzip detected by magic bytes)."""
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise InputError(f"truncated or corrupt gzip: {exc}") from exc
    if data[:4] == b"PAR1":
        try:
            table = pq.read_table(io.BytesIO(data))
        except Exception as exc:
            raise InputError(f"unreadable Parquet: {exc}") from exc
        out = []
        for i, rec in enumerate(table.to_pylist(), 1):
            out.append(Row(i, rec, _raw_text(rec)))
        return out
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"catalogue files must be UTF-8: {exc}") from exc
    stripped = text.lstrip()
    if not stripped:
        return []
    if stripped.startswith("{"):
        rows = []
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except ValueError:
                doc = None
            rows.append(Row(i, doc if isinstance(doc, dict) else {"__malformed__": True}, line))
        return rows
    return _csv_rows(text)


def _csv_rows(text: str) -> list[Row]:
    lines = text.splitlines()
    try:
        dialect = csv.Sniffer().sniff(lines[0], delimiters=",;\t|")
        delimiter = dialect.delimiter
    except csv.Error:
        delimiter = ","
    csv.field_size_limit(64 * 1024 * 1024)  # a huge field is quarantined as oversize, not a crash
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header = [h.strip() for h in next(reader)]
    rows = []
    for fields in reader:
        line = reader.line_num
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue
        raw = delimiter.join(fields)
        if len(fields) != len(header):
            rows.append(Row(line, {"__malformed__": True}, raw))
        else:
            rows.append(Row(line, dict(zip(header, fields, strict=True)), raw))
    return rows


# ------------------------------------------------------------------ validation


def _text(v: Any) -> str | None:
    if v is None:
        return None
    s = str(v).strip()
    return s or None


def _price(v: Any) -> float | None:
    if isinstance(v, bool):
        raise ValueError("a boolean is not a price")
    if isinstance(v, int | float):
        f = float(v)
    else:
        s = _text(v)
        if s is None:
            raise ValueError("missing")
        f = float(s)
    if not math.isfinite(f):
        raise ValueError("not finite")
    return f


def _flag(v: Any, default: bool | None = None) -> bool:
    if isinstance(v, bool):
        return v
    if v is None or (isinstance(v, str) and not v.strip()):
        if default is None:
            raise ValueError("missing")
        return default
    if isinstance(v, int | float) and v in (0, 1):
        return bool(v)
    s = str(v).strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise ValueError(f"not a boolean: {s[:20]!r}")


def _epoch_ms(values: list[Any]) -> list[int | None]:
    """Epoch ms of each value as the events read a timestamp (None where unreadable): one pass
    over the column, value by value where its types are mixed."""
    try:
        return timestamps_ms(pa.array(values), None).to_pylist()
    except (ValueError, TypeError, NotImplementedError, OverflowError):  # pyarrow's Arrow*Error too
        if len(values) == 1:
            return [None]
        return [_epoch_ms([v])[0] for v in values]


def updated_times(values: list[Any], uploaded: datetime, min_ts_ms: int = MIN_TS_MS) -> list[datetime | str]:
    """Each row's ``updated_at`` read and held to the range exactly as an event's timestamp is
    (ISO 8601, or an epoch whose unit is decided per value; impossible before ``min_ts_ms`` or a day
    after ``uploaded``): the instant, or the reason the row is refused. Blank means ``uploaded``."""
    blank = [v is None or (isinstance(v, str) and not v.strip()) for v in values]
    read = _epoch_ms([None if b else v for v, b in zip(values, blank, strict=True)])
    ms = np.asarray([0 if r is None else r for r in read], np.int64)
    impossible = out_of_range(ms, min_ts_ms, latest_ts_ms(uploaded))
    out: list[datetime | str] = []
    for b, r, bad in zip(blank, read, impossible, strict=True):
        if b:
            out.append(uploaded)
        elif r is None:
            out.append("bad_timestamp")
        else:
            out.append(OUT_OF_RANGE if bad else _EPOCH + timedelta(milliseconds=r))
    return out


def validate(row: Row, updated: datetime | str, source_key: str) -> tuple[dict[str, Any] | None, str | None]:
    """(the curated row, None) or (None, the reason it is quarantined); ``updated``: the row's
    entry of :func:`updated_times`."""
    v = row.values
    if v.get("__malformed__"):
        return None, "malformed_row"
    item_id = _text(v.get("item_id"))
    if item_id is None:
        return None, "missing_item_id"
    for col in ("title", "category"):
        if _text(v.get(col)) is None:
            return None, f"missing_{col}"
    if v.get("price") is None or (isinstance(v.get("price"), str) and not v["price"].strip()):
        return None, "missing_price"
    try:
        price = _price(v.get("price"))
    except (TypeError, ValueError):
        return None, "wrong_type"
    try:
        in_stock = _flag(v.get("in_stock"))
        active = _flag(v.get("active"), default=True)
    except ValueError as exc:
        return None, "missing_in_stock" if str(exc) == "missing" else "wrong_type"
    if isinstance(updated, str):
        return None, updated
    if price is not None and price < 0:
        return None, "negative_price"
    attrs: dict[str, Any] = {}
    given = v.get("attributes")
    if given not in (None, ""):
        if isinstance(given, str):
            try:
                given = json.loads(given)
            except ValueError:
                return None, "wrong_type"
        if not isinstance(given, dict):
            return None, "wrong_type"
        attrs.update(given)
    for key, value in v.items():  # unknown columns are kept, not dropped silently
        if key not in REQUIRED and key not in OPTIONAL and value not in (None, ""):
            attrs.setdefault(key, value)
    out: dict[str, Any] = {
        "item_id": item_id,
        "title": _text(v.get("title")),
        "category": _text(v.get("category")),
        "brand": _text(v.get("brand")),
        "price": price,
        "in_stock": in_stock,
        "active": active,
        "attributes": json.dumps(attrs, sort_keys=True, default=str, ensure_ascii=False) if attrs else None,
        "updated_at": updated,
        "source_key": source_key,
    }
    for col, limit in LIMITS.items():
        if out[col] is not None and len(out[col]) > limit:
            return None, "oversize_field"
    return out, None


# ------------------------------------------------------------------ snapshots


def snapshot_table(rows: list[dict[str, Any]], snapshot_id: str, at: datetime) -> pa.Table:
    rows = sorted(rows, key=lambda r: r["item_id"])
    cols = {name: [r.get(name) for r in rows] for name in SNAPSHOT_SCHEMA.names}
    cols["snapshot_id"] = [snapshot_id] * len(rows)
    cols["snapshot_at"] = [at] * len(rows)
    return pa.table(cols, schema=SNAPSHOT_SCHEMA)


def merge(previous: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per item the row with the latest ``updated_at``; a tie goes to the newer file."""
    by_id = {r["item_id"]: r for r in previous}
    for r in new:
        old = by_id.get(r["item_id"])
        if old is None or r["updated_at"] >= old["updated_at"]:
            by_id[r["item_id"]] = r
    return list(by_id.values())


def serving_snapshot(table: pa.Table, snapshot_id: str) -> bytes:
    """``stock.npz`` for serving: sorted UTF-8 item ids, in stock, active, price (numpy only)."""
    from shelfwise.bundle import encode_text, savez_aligned

    ids = np.asarray(table["item_id"].to_pylist(), dtype=str)
    order = np.argsort(ids, kind="stable")
    price = np.asarray([np.nan if p is None else p for p in table["price"].to_pylist()], dtype=np.float32)
    buf = io.BytesIO()
    savez_aligned(
        buf,
        {
            "item_id": encode_text(ids[order]),
            "in_stock": np.asarray(table["in_stock"].to_pylist(), dtype=bool)[order],
            "active": np.asarray(table["active"].to_pylist(), dtype=bool)[order],
            "price": price[order],
            "snapshot_id": np.asarray([snapshot_id]).astype("S"),
        },
    )
    return buf.getvalue()


def _parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def _rows_of(body: bytes) -> list[dict[str, Any]]:
    return pq.read_table(io.BytesIO(body)).select(SNAPSHOT_SCHEMA.names[:10]).to_pylist()


def ingest_catalogue(
    data: bytes,
    store: Store,
    *,
    source_key: str,
    name: str,
    uploaded: datetime,
    min_ts_ms: int = MIN_TS_MS,
    attempts: int = 5,
) -> IngestSummary:
    """Validate one catalogue file and publish the next snapshot (see the module docstring);
    ``updated_at`` before ``min_ts_ms`` (epoch ms, default the Unix epoch) is out of range."""
    t0 = time.perf_counter()
    result = IngestSummary(source=source_key, object_hash=name, format="catalogue")
    result.time_range = time_range(min_ts_ms, latest_ts_ms(uploaded))
    rows = read_rows(data)
    if not rows:
        result.warnings.append("empty catalogue file: nothing to ingest")
    result.rows_read = len(rows)
    accepted: dict[str, tuple[dict[str, Any], int]] = {}
    quarantined: list[dict[str, Any]] = []
    times = updated_times([row.values.get("updated_at") for row in rows], uploaded, min_ts_ms)
    for row, updated in zip(rows, times, strict=True):
        good, reason = validate(row, updated, source_key)
        if good is None:
            result.reasons[reason or "?"] = result.reasons.get(reason or "?", 0) + 1
            raw = row.raw
            record: dict[str, Any] = {"line": row.line, "reason": reason}
            if reason == OUT_OF_RANGE:
                record.update(result.time_range)
            record["raw"] = raw[:RAW_LIMIT]
            if len(raw) > RAW_LIMIT:
                record["raw_truncated_from"] = len(raw)
            quarantined.append(record)
            continue
        prior = accepted.get(good["item_id"])
        if prior is not None:
            result.duplicates += 1
            if good["updated_at"] < prior[0]["updated_at"]:
                continue
        accepted[good["item_id"]] = (good, row.line)
    result.rows_quarantined = len(quarantined)
    result.rows_valid = len(accepted)
    assert result.rows_valid + result.rows_quarantined + result.duplicates == result.rows_read
    if quarantined:
        key = f"quarantine/catalogue/{name}.jsonl.gz"
        body = "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in quarantined).encode()
        store.write_quarantine(key, gzip.compress(body, mtime=0))
        result.quarantine = key
    result.reasons = dict(sorted(result.reasons.items()))
    if not accepted:
        result.seconds = round(time.perf_counter() - t0, 3)
        return result
    new_rows = [r for r, _ in accepted.values()]
    now = datetime.now(UTC)
    changes_key = f"{CURATED}/changes/ingest_date={now:%Y-%m-%d}/{name}.parquet"
    store.write(changes_key, _parquet(snapshot_table(new_rows, f"changes-{name}", now)))
    result.outputs.append(changes_key)
    for _ in range(attempts):
        latest = store.read(LATEST_KEY)
        previous: list[dict[str, Any]] = []
        etag = None
        if latest is not None:
            pointer, etag = json.loads(latest[0]), latest[1]
            snap = store.read(pointer["key"])
            if snap is None:
                raise InputError(f"latest.json names {pointer['key']}, which does not exist")
            previous = _rows_of(snap[0])
        merged = merge(previous, new_rows)
        at = datetime.now(UTC)
        snapshot_id = f"{at:%Y%m%dT%H%M%S%fZ}-{name[:8]}"
        table = snapshot_table(merged, snapshot_id, at)
        snap_key = f"{CURATED}/snapshots/snapshot_date={at:%Y-%m-%d}/{snapshot_id}.parquet"
        store.write(snap_key, _parquet(table))
        pointer_body = json.dumps(
            {"snapshot_id": snapshot_id, "key": snap_key, "items": table.num_rows, "at": at.isoformat()}
        ).encode()
        try:
            store.write(LATEST_KEY, pointer_body, expect=etag or "absent")
        except CatalogueConflictError:
            time.sleep(0.05)
            continue
        store.write(SERVING_KEY, serving_snapshot(table, snapshot_id))
        result.outputs += [snap_key, LATEST_KEY, SERVING_KEY]
        result.seconds = round(time.perf_counter() - t0, 3)
        return result
    raise CatalogueConflictError(f"latest.json kept moving; gave up after {attempts} attempts")


# ------------------------------------------------------------------ stores


class S3Store:
    """The curated and quarantine buckets; ``latest.json`` moves with a conditional PUT."""

    def __init__(self, s3: Any, curated_bucket: str, quarantine_bucket: str) -> None:
        self.s3, self.curated, self.quarantine = s3, curated_bucket, quarantine_bucket

    def read(self, key: str) -> tuple[bytes, str] | None:
        try:
            resp = self.s3.get_object(Bucket=self.curated, Key=key)
        except self.s3.exceptions.NoSuchKey:
            return None
        return resp["Body"].read(), str(resp.get("ETag", ""))

    def write(self, key: str, body: bytes, *, expect: str | None = None) -> None:
        kwargs: dict[str, Any] = {}
        if expect == "absent":
            kwargs["IfNoneMatch"] = "*"
        elif expect is not None:
            kwargs["IfMatch"] = expect
        try:
            self.s3.put_object(Bucket=self.curated, Key=key, Body=body, **kwargs)
        except self.s3.exceptions.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in {"PreconditionFailed", "412", "ConditionalRequestConflict"}:
                raise CatalogueConflictError(key) from exc
            raise

    def write_quarantine(self, key: str, body: bytes) -> None:
        self.s3.put_object(Bucket=self.quarantine, Key=key, Body=body)


class DirStore:
    """A bucket-shaped local directory (``shelfwise ingest`` and tests); the ETag is a content hash."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def read(self, key: str) -> tuple[bytes, str] | None:
        path = self.root / key
        if not path.exists():
            return None
        body = path.read_bytes()
        return body, _etag(body)

    def write(self, key: str, body: bytes, *, expect: str | None = None) -> None:
        path = self.root / key
        current = self.read(key)
        if expect == "absent" and current is not None:
            raise CatalogueConflictError(key)
        if expect not in (None, "absent") and (current is None or current[1] != expect):
            raise CatalogueConflictError(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(body)
        tmp.replace(path)

    def write_quarantine(self, key: str, body: bytes) -> None:
        self.write(key, body)


def _etag(body: bytes) -> str:
    import hashlib

    return '"' + hashlib.md5(body, usedforsecurity=False).hexdigest() + '"'
