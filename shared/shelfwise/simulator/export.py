"""Writing simulated days as a shop would export them: native CSV / JSON Lines, Taobao, RetailRocket.

Formatting is columnar (pyarrow compute + a numpy ISO-8601 formatter, since Arrow's own timestamp
formatting runs at only ~0.4M values/s), one file per day or per hour, written as each day is made,
so memory stays flat in the number of events.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from shelfwise.events import NATIVE_COLUMNS
from shelfwise.simulator.params import Incident, SimulatorError
from shelfwise.simulator.shop import (
    CART,
    CODE_NAMES,
    DAY_MS,
    FAV,
    HOUR_MS,
    PURCHASE,
    SEARCH,
    VIEW,
    DayBlock,
    ShopModel,
)

FORMATS = ("native", "jsonl", "taobao", "retailrocket")
SPLITS = ("day", "hour")
TAOBAO_COLUMNS = ("user", "item", "category", "behavior", "ts")
RETAILROCKET_COLUMNS = ("timestamp", "visitorid", "event", "itemid", "transactionid")
# Native event types as each foreign format names them; types a format lacks are not exported.
TAOBAO_BEHAVIOR = {VIEW: "pv", CART: "cart", FAV: "fav", PURCHASE: "buy"}
RETAILROCKET_EVENT = {VIEW: "view", CART: "addtocart", PURCHASE: "transaction"}
FILE_PREFIX = {
    "native": "events",
    "jsonl": "events",
    "taobao": "taobao_userbehavior",
    "retailrocket": "retailrocket_events",
}
_GARBLE_CHARS = np.frombuffer(b"#%&*^~?!$@;:|<>[]{}=+ZXQJKW0123456789", dtype=np.uint8)


# Lookup tables: "00".."99" as uint16 and "000Z".."999Z" as uint32 (little or big endian alike,
# since they are built from the bytes themselves).
_DIGITS2 = np.frombuffer(b"".join(f"{i:02d}".encode() for i in range(100)), dtype=np.uint16)
_MILLIS_Z = np.frombuffer(b"".join(f"{i:03d}Z".encode() for i in range(1000)), dtype=np.uint32)


def _civil(days: int) -> bytes:
    return datetime.fromtimestamp(days * 86400, tz=UTC).strftime("%Y-%m-%dT").encode()


def iso_timestamps(ts_ms: np.ndarray) -> pa.StringArray:
    """ISO-8601 UTC strings (``2026-01-05T13:04:05.123Z``) for epoch milliseconds, fast and exact."""
    ts_ms = np.asarray(ts_ms, dtype=np.int64)
    n = len(ts_ms)
    buf = np.empty((n, 24), dtype=np.uint8)
    if n:
        days = ts_ms // DAY_MS
        ms = ts_ms - days * DAY_MS
        # Few distinct days per file: fill the date part per run of equal days.
        order_ok = bool(np.all(days[1:] >= days[:-1]))
        uniq = np.unique(days) if not order_ok else days[np.r_[0, np.flatnonzero(np.diff(days)) + 1]]
        for dd in uniq:
            sel = slice(*np.searchsorted(days, [dd, dd + 1])) if order_ok else days == dd
            buf[sel, :11] = np.frombuffer(_civil(int(dd)), dtype=np.uint8)
        sec = (ms // 1000).astype(np.int32)
        buf[:, 11:13] = _DIGITS2[sec // 3600].view(np.uint8).reshape(n, 2)
        buf[:, 13] = 58
        buf[:, 14:16] = _DIGITS2[(sec // 60) % 60].view(np.uint8).reshape(n, 2)
        buf[:, 16] = 58
        buf[:, 17:19] = _DIGITS2[sec % 60].view(np.uint8).reshape(n, 2)
        buf[:, 19] = 46
        buf[:, 20:24] = _MILLIS_Z[(ms % 1000).astype(np.int32)].view(np.uint8).reshape(n, 4)
    offsets = np.arange(0, 24 * (n + 1), 24, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(buf))


def _ints(values: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    return pc.cast(pa.array(values, mask=mask), pa.string())


def _dict(codes: np.ndarray, names: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    """Strings by code from a small vocabulary (a cheap take, no Python objects per row)."""
    idx = pa.array(np.where(mask, 0, codes) if mask is not None else codes, mask=mask)
    return pc.take(pa.array(names, pa.string()), idx)


@dataclass
class FileSpec:
    """One export file: its name, time range and what happens to it (incidents)."""

    path: Path
    start_ms: int
    end_ms: int
    schema_change: Incident | None = None
    corrupt: Incident | None = None


class Exporter:
    """Turns DayBlocks into files of one format; records which lines it garbled."""

    def __init__(self, model: ShopModel, fmt: str, out_dir: Path, split: str = "day") -> None:
        if fmt not in FORMATS:
            raise SimulatorError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
        if split not in SPLITS:
            raise SimulatorError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
        self.model = model
        self.fmt = fmt
        self.split = split
        self.out_dir = Path(out_dir)
        self.tag = f"{model.seed:x}-"
        self._price_text: pa.Array | None = None
        self.garbled: dict[str, list[int]] = {}
        c = model.catalogue
        self._queries = c.leaf_queries.ravel()
        self._leaf_names = c.leaf_names
        self._item_ids = c.item_id
        self._names = np.array(CODE_NAMES)

    # ------------------------------------------------------------------------------------- files
    def files_for(self, day: int) -> list[FileSpec]:
        p = self.model.params
        day_ms = self.model.start_ms + day * DAY_MS
        ext = "jsonl" if self.fmt == "jsonl" else "csv"
        stem = f"{FILE_PREFIX[self.fmt]}-{p.day_date(day).isoformat()}"
        if self.split == "day":
            ranges = [(stem, day_ms, day_ms + DAY_MS)]
        else:
            ranges = [
                (f"{stem}T{h:02d}", day_ms + h * HOUR_MS, day_ms + (h + 1) * HOUR_MS) for h in range(24)
            ]
        specs = []
        for name, t0, t1 in ranges:
            spec = FileSpec(self.out_dir / "events" / f"{name}.{ext}", t0, t1)
            for inc in p.incidents:
                at = self.model.incident_ms(inc)
                if inc.name == "schema_change" and t1 > at:
                    spec.schema_change = inc
                if inc.name == "corrupted_export" and t0 <= at < t1:
                    spec.corrupt = inc
            specs.append(spec)
        return specs

    def write_day(self, block: DayBlock) -> Iterator[tuple[FileSpec, int]]:
        """Write the day's files; yields (file, rows written, header excluded)."""
        specs = self.files_for(block.day)
        bounds = np.searchsorted(block.ts, [s.start_ms for s in specs] + [specs[-1].end_ms])
        seq0 = 0
        for i, spec in enumerate(specs):
            part = block.select(slice(bounds[i], bounds[i + 1]))  # type: ignore[arg-type]
            data, rows = self.encode(part, spec, seq0)
            seq0 += len(part)
            if spec.corrupt is not None:
                data = self._garble(data, spec)
            spec.path.parent.mkdir(parents=True, exist_ok=True)
            with open(spec.path, "wb") as fh:
                fh.write(data)
            yield spec, rows

    # ----------------------------------------------------------------------------------- formats
    def encode(self, b: DayBlock, spec: FileSpec, seq0: int = 0) -> tuple[bytes, int]:
        """The file's bytes and its number of data rows."""
        if self.fmt in ("native", "jsonl"):
            table = self.native_table(b, seq0)
            if spec.schema_change is not None:
                table = self._change_schema(table, spec.schema_change)
            if self.fmt == "jsonl":
                return _json_lines(table), table.num_rows
            return _csv(table), table.num_rows
        table = self.taobao_table(b) if self.fmt == "taobao" else self.retailrocket_table(b)
        if spec.schema_change is not None:
            table = self._change_schema(table, spec.schema_change, rename=False)
        return _csv(table), table.num_rows

    def native_table(self, b: DayBlock, seq0: int = 0) -> pa.Table:
        n = len(b)
        itemless = b.code == SEARCH
        anon = b.user < 0
        has_qty = b.quantity > 0
        leaf = self.model.catalogue.leaf[np.where(itemless, 0, b.item)]
        cols: dict[str, pa.Array] = {
            "event_id": pc.binary_join_element_wise(
                self.tag, _ints((b.day + 1) * 10**9 + seq0 + np.arange(n, dtype=np.int64)), ""
            ),
            "event_type": _dict(b.code, self._names),
            "user_id": _ints(b.user + 1, anon),
            "session_id": _ints(b.session),
            "item_id": _ints(b.item.astype(np.int64) + 1, itemless),
            "timestamp": iso_timestamps(b.ts),
            "price": self._prices(b),
            "quantity": pa.array(b.quantity, mask=~has_qty),
            "query": _dict(b.query, self._queries, b.query < 0),
            "category": _dict(leaf, self._leaf_names, itemless),
        }
        nulls = pa.nulls(n, pa.string())
        return pa.table({c: cols.get(c, nulls) for c in NATIVE_COLUMNS})

    def _prices(self, b: DayBlock) -> pa.Array:
        """Prices as text, taken from per-item strings formatted once (base and shocked price)."""
        c = self.model.catalogue
        n_items = len(c.price)
        if self._price_text is None:
            inc = self.model.params.incident("price_shock")
            factor = float(inc.opt("factor")) if inc is not None else 1.0
            cents = np.concatenate([np.rint(c.price * 100), np.rint(c.price * factor * 100)]).astype(np.int64)
            self._price_text = pa.array([f"{x // 100}.{x % 100:02d}" for x in cents.tolist()], pa.string())
        none = np.isnan(b.price)
        item = np.where(none, 0, b.item)
        shocked = ~none & (np.abs(b.price - c.price[item]) > 1e-9)
        return pc.take(self._price_text, pa.array(item + n_items * shocked, mask=none))

    def taobao_table(self, b: DayBlock) -> pa.Table:
        keep = np.isin(b.code, list(TAOBAO_BEHAVIOR))
        b = b.select(keep)
        names = np.array([TAOBAO_BEHAVIOR.get(i, "") for i in range(len(CODE_NAMES))])
        leaf = self.model.catalogue.leaf[b.item].astype(np.int64)
        return pa.table(
            {
                "user": _ints(b.visitor + 1),
                "item": _ints(b.item.astype(np.int64) + 1),
                "category": _ints(leaf + 1),
                "behavior": _dict(b.code, names),
                "ts": _ints(b.ts // 1000),
            }
        )

    def retailrocket_table(self, b: DayBlock) -> pa.Table:
        keep = np.isin(b.code, list(RETAILROCKET_EVENT))
        b = b.select(keep)
        names = np.array([RETAILROCKET_EVENT.get(i, "") for i in range(len(CODE_NAMES))])
        buy = b.code == PURCHASE
        return pa.table(
            {
                "timestamp": _ints(b.ts),
                "visitorid": _ints(b.visitor + 1),
                "event": _dict(b.code, names),
                "itemid": _ints(b.item.astype(np.int64) + 1),
                "transactionid": _ints(b.session, ~buy),
            }
        )

    # --------------------------------------------------------------------------------- incidents
    @staticmethod
    def _change_schema(table: pa.Table, inc: Incident, rename: bool = True) -> pa.Table:
        """The export's schema changes: a column renamed (native only) and an extra column appended."""
        if rename:
            mapping = dict(inc.opt("rename"))
            table = table.rename_columns([mapping.get(c, c) for c in table.column_names])
        for name, value in dict(inc.opt("extra")).items():
            table = table.append_column(name, pa.array(np.full(table.num_rows, str(value))))
        return table

    def _garble(self, data: bytes, spec: FileSpec) -> bytes:
        """Garble a share of the data lines (never the header): scrambled fields or cut short."""
        inc = spec.corrupt
        assert inc is not None
        lines = data.split(b"\n")
        has_header = self.fmt != "jsonl"
        first = 1 if has_header else 0
        n_data = len(lines) - first - (1 if lines[-1] == b"" else 0)
        if n_data <= 0:
            return data
        rng = np.random.default_rng(np.random.SeedSequence([self.model.seed, 5, spec.start_ms]))
        k = max(1, round(n_data * float(inc.opt("share"))))
        picked = np.sort(rng.choice(n_data, min(k, n_data), replace=False)) + first
        for li in picked:
            raw = np.frombuffer(lines[li], dtype=np.uint8).copy()
            if rng.random() < 0.3:
                # Cut short inside the first fields: too few columns / broken JSON.
                cut = int(rng.integers(3, max(4, min(len(raw) // 3, 30))))
                raw = raw[:cut]
            keep = (raw == ord(",")) if self.fmt != "jsonl" else np.zeros(len(raw), bool)
            junk = _GARBLE_CHARS[rng.integers(0, len(_GARBLE_CHARS), len(raw))]
            raw = np.where(keep, raw, junk).astype(np.uint8)
            lines[li] = raw.tobytes()
        # 1-based physical line numbers, header included (the row number is line - 1 with a header).
        self.garbled[spec.path.name] = [int(i) + 1 for i in picked]
        return b"\n".join(lines)


# Columns that hold numbers already formatted as text (written unquoted in JSON).
_NUMBERS_AS_TEXT = frozenset({"price", "unit_price"})


def _csv(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pacsv.write_csv(table, buf, pacsv.WriteOptions(quoting_style="none", batch_size=65536))
    return buf.getvalue()


def _json_lines(table: pa.Table) -> bytes:
    """JSON Lines, nulls omitted, built column-wise (values here never need escaping)."""
    if table.num_rows == 0:
        return b""
    frags = []
    for name, col in zip(table.column_names, table.columns, strict=True):
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        if pa.types.is_null(col.type) or col.null_count == len(col):
            continue
        if pa.types.is_string(col.type) and name not in _NUMBERS_AS_TEXT:
            frag = pc.binary_join_element_wise(f'"{name}":"', col, '"', "")
        else:
            frag = pc.binary_join_element_wise(f'"{name}":', pc.cast(col, pa.string()), "")
        frags.append(frag)
    body = pc.binary_join_element_wise(*frags, ",", null_handling="skip")
    lines = pc.binary_join_element_wise("{", body, "}\n", "")
    arr = lines.combine_chunks() if isinstance(lines, pa.ChunkedArray) else lines
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32, count=len(arr) + 1, offset=arr.offset * 4)
    return arr.buffers()[2].to_pybytes()[offsets[0] : offsets[-1]]


def describe(fmt: str) -> dict[str, Any]:
    """Column layout of a format, for the manifest."""
    cols = {"native": NATIVE_COLUMNS, "jsonl": NATIVE_COLUMNS, "taobao": TAOBAO_COLUMNS}
    return {"format": fmt, "columns": list(cols.get(fmt, RETAILROCKET_COLUMNS))}
