"""Writing simulated days as a shop would export them: native CSV / JSON Lines, Taobao, RetailRocket.

Formatting is columnar (pyarrow compute + a numpy ISO-8601 formatter, since Arrow's own timestamp
formatting runs at only ~0.4M values/s), one file per day or per hour, written as each day is made,
so memory stays flat in the number of events.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache, lru_cache
from itertools import product
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shelfwise.events import NATIVE_COLUMNS
from shelfwise.simulator.blocks import (
    CART,
    CODE_NAMES,
    DAY_MS,
    FAV,
    HOUR_MS,
    PURCHASE,
    SEARCH,
    VIEW,
    DayBlock,
)
from shelfwise.simulator.params import Incident, SimulatorError
from shelfwise.simulator.shop import ShopModel

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


# "00".."99" as uint16 and "0000".."9999" as uint32, built from the bytes themselves (so the same on any endianness).
_DIGITS2 = np.frombuffer(b"".join(f"{i:02d}".encode() for i in range(100)), dtype=np.uint16)
_DIGITS4 = np.frombuffer(b"".join(f"{i:04d}".encode() for i in range(10_000)), dtype=np.uint32)
MINUTE_MS = 60_000


def _civil(days: int) -> bytes:
    return datetime.fromtimestamp(days * 86400, tz=UTC).strftime("%Y-%m-%dT").encode()


@cache
def _second_words() -> np.ndarray:
    """``:SS.mmmZ`` for every millisecond of a minute, as one 8-byte word each (60,000 words)."""
    ms = np.arange(MINUTE_MS)
    b = np.empty((MINUTE_MS, 8), dtype=np.uint8)
    b[:, 0], b[:, 3], b[:, 7] = ord(":"), ord("."), ord("Z")
    b[:, 1:3] = _DIGITS2[ms // 1000].view(np.uint8).reshape(-1, 2)
    b[:, 4] = 48 + (ms // 100) % 10
    b[:, 5:7] = _DIGITS2[ms % 100].view(np.uint8).reshape(-1, 2)
    return b.view(np.uint64).ravel()


@lru_cache(maxsize=64)
def _minute_words(day: int) -> tuple[np.uint64, np.ndarray]:
    """Bytes 0-7 (``YYYY-MM-``) of a day's timestamps, and bytes 8-15 (``DDTHH:MM``) per minute."""
    civil = np.frombuffer(_civil(day), dtype=np.uint8)  # "YYYY-MM-DDT"
    m = np.arange(1440)
    b = np.empty((1440, 8), dtype=np.uint8)
    b[:, 0:3] = civil[8:11]
    b[:, 3:5] = _DIGITS2[m // 60].view(np.uint8).reshape(-1, 2)
    b[:, 5] = ord(":")
    b[:, 6:8] = _DIGITS2[m % 60].view(np.uint8).reshape(-1, 2)
    return civil[:8].view(np.uint64)[0], b.view(np.uint64).ravel()


def iso_timestamps(ts_ms: np.ndarray) -> pa.StringArray:
    """ISO-8601 UTC strings (``2026-01-05T13:04:05.123Z``) for epoch milliseconds, fast and exact.

    Each 24-byte string is three 8-byte words taken from tables: the date prefix (per day), the
    day of month with hour and minute (per minute of the day), seconds and milliseconds (per
    millisecond of the minute); so a value costs a division and two lookups, no per-byte work.
    """
    ts_ms = np.asarray(ts_ms, dtype=np.int64)
    n = len(ts_ms)
    words = np.empty((n, 3), dtype=np.uint64)
    if n:
        days = ts_ms // DAY_MS
        ms = ts_ms - days * DAY_MS
        minute = ms // MINUTE_MS
        words[:, 2] = _second_words()[ms - minute * MINUTE_MS]
        # Few distinct days per file: one table per run of equal days.
        order_ok = bool(np.all(days[1:] >= days[:-1]))
        uniq = np.unique(days) if not order_ok else days[np.r_[0, np.flatnonzero(np.diff(days)) + 1]]
        for dd in uniq.tolist():
            sel = slice(*np.searchsorted(days, [dd, dd + 1])) if order_ok else days == dd
            head, per_minute = _minute_words(dd)
            words[sel, 0] = head
            words[sel, 1] = per_minute[minute[sel]]
    offsets = np.arange(0, 24 * (n + 1), 24, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(words))


def _fixed_ints(values: np.ndarray, prefix: bytes = b"", suffix: bytes = b"") -> pa.StringArray | None:
    """``prefix + decimal + suffix`` for non-negative integers that all have as many digits, built
    in numpy four digits at a time (no per-value work in Arrow); None when the widths differ."""
    v = np.asarray(values, dtype=np.int64)
    n = len(v)
    if n == 0:
        return pa.array([], pa.string())
    lo, hi = int(v.min()), int(v.max())
    d, p = len(str(hi)), len(prefix)
    w = p + d + len(suffix)
    if lo < 0 or len(str(lo)) != d or d > 16 or w * n >= 2**31:
        return None
    groups = np.empty((n, (d + 3) // 4), dtype=np.uint32)  # "0000".."9999", right-aligned
    for j in range(groups.shape[1] - 1, 0, -1):
        v, low = np.divmod(v, 10_000)
        groups[:, j] = _DIGITS4[low]
    groups[:, 0] = _DIGITS4[v]
    buf = np.empty((n, w), dtype=np.uint8)
    buf[:, :p] = np.frombuffer(prefix, dtype=np.uint8)
    buf[:, p : p + d] = groups.view(np.uint8)[:, groups.shape[1] * 4 - d :]
    buf[:, p + d :] = np.frombuffer(suffix, dtype=np.uint8)
    offsets = np.arange(0, w * (n + 1), w, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(buf))


def _int_text(values: np.ndarray, prefix: str = "", suffix: str = "") -> pa.Array:
    """Decimal text of non-negative integers: numpy when the width is fixed, else Arrow's cast."""
    fixed = _fixed_ints(values, prefix.encode(), suffix.encode())
    if fixed is not None:
        return fixed
    return pc.binary_join_element_wise(prefix, _ints(values), suffix, "")


def _ints(values: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    return pc.cast(pa.array(values, mask=mask), pa.string())


def _dict(codes: np.ndarray, names: Sequence[str], mask: np.ndarray | None = None) -> pa.Array:
    """Strings by code from a small vocabulary (a cheap take, no Python objects per row)."""
    idx = pa.array(np.where(mask, 0, codes) if mask is not None else codes, mask=mask)
    return pc.take(pa.array(names, pa.string()), idx)


# --------------------------------------------------------------------------------------- cells
# A file is built as cells, one per column: text that Arrow has (``pa.Array``, nulls empty),
# integers of one width (``_Digits``, formatted in numpy) or codes into a small vocabulary
# (``_Coded``). Adjacent coded cells become one cell of their joined vocabulary, so that the
# per-row work in Arrow (about 25 ns a cell) is paid for fewer cells: the native format's eight
# trailing columns (query, category and six always-empty ones) are a single lookup.


@dataclass(frozen=True)
class _Coded:
    """Strings by code from a small vocabulary; code -1 (or ``codes`` None: every row) is empty."""

    codes: np.ndarray | None
    names: tuple[str, ...] = ()

    def array(self, n: int) -> pa.Array:
        if self.codes is None:
            return pa.nulls(n, pa.string())
        return _dict(self.codes, self.names, self.codes < 0)


@dataclass(frozen=True)
class _Digits:
    """Non-negative integers written as decimal text (numpy when they share a width)."""

    values: np.ndarray
    prefix: str = ""

    def array(self, n: int, suffix: str = "") -> pa.Array:
        return _int_text(self.values, self.prefix, suffix)


Cell: TypeAlias = pa.Array | _Coded | _Digits
_MAX_VOCAB = 1 << 16


@lru_cache(maxsize=32)
def _joined_vocab(names: tuple[tuple[str, ...], ...], end: str) -> pa.Array:
    """Every combination of the vocabularies (empty first in each), comma-joined, then ``end``."""
    return pa.array([",".join(parts) + end for parts in product(*[("", *v) for v in names])], pa.string())


def _merge(run: list[_Coded], n: int, end: str) -> pa.Array:
    """Adjacent coded cells as one: codes in mixed radix (the last varies fastest), one take."""
    code = np.zeros(n, dtype=np.int64)
    for c in run:
        code *= len(c.names) + 1
        if c.codes is not None:
            code += c.codes + 1
    return pc.take(_joined_vocab(tuple(c.names for c in run), end), pa.array(code))


def _lines(cells: list[Cell], n: int) -> pa.Buffer | bytes:
    """CSV lines without quoting (empty for null), one per row, each ending with a newline."""
    if n == 0:
        return b""
    groups: list[Cell | list[_Coded]] = []
    for cell in reversed(cells):  # from the right: the native format's big vocabularies sit last
        last = groups[-1] if groups else None
        if isinstance(cell, _Coded) and isinstance(last, list):
            size = math.prod(len(c.names) + 1 for c in last) * (len(cell.names) + 1)
            if size <= _MAX_VOCAB:
                last.insert(0, cell)
                continue
        groups.append([cell] if isinstance(cell, _Coded) else cell)
    groups.reverse()
    arrays = []
    for i, g in enumerate(groups):
        end = "\n" if i == len(groups) - 1 else ""
        if isinstance(g, list):
            arrays.append(_merge(g, n, end))
        elif isinstance(g, _Digits):
            arrays.append(g.array(n, end))
        else:
            arrays.append(pc.binary_join_element_wise(g, end, "", null_handling="replace") if end else g)
    return _string_data(
        pc.binary_join_element_wise(*arrays, ",", null_handling="replace", null_replacement="")
    )


def _string_data(arr: pa.Array) -> pa.Buffer | bytes:
    """The concatenated values of a string array: a zero-copy slice of its data buffer."""
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    if len(arr) == 0:
        return b""
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32, count=len(arr) + 1, offset=arr.offset * 4)
    return arr.buffers()[2].slice(int(offsets[0]), int(offsets[-1] - offsets[0]))


def _header(names: Sequence[str]) -> bytes:
    """The CSV header as Arrow's writer makes it: every name quoted."""
    return (",".join(f'"{c}"' for c in names) + "\n").encode()


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
        self._queries = tuple(c.leaf_queries.ravel().tolist())
        self._leaf_names = tuple(c.leaf_names.tolist())
        self._leaf_numbers = tuple(str(i + 1) for i in range(len(c.leaf_names)))
        self._taobao_names = tuple(TAOBAO_BEHAVIOR.get(i, "") for i in range(len(CODE_NAMES)))
        self._retailrocket_names = tuple(RETAILROCKET_EVENT.get(i, "") for i in range(len(CODE_NAMES)))
        self._qty_names: tuple[str, ...] = ()

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
            chunks, rows = self.encode_chunks(part, spec, seq0)
            seq0 += len(part)
            if spec.corrupt is not None:
                chunks = [self._garble(b"".join(chunks), spec)]
            spec.path.parent.mkdir(parents=True, exist_ok=True)
            with open(spec.path, "wb") as fh:
                for chunk in chunks:  # Arrow's buffers as they are: no copy into one bytes object
                    fh.write(chunk)
            yield spec, rows

    # ----------------------------------------------------------------------------------- formats
    def encode(self, b: DayBlock, spec: FileSpec, seq0: int = 0) -> tuple[bytes, int]:
        """The file's bytes and its number of data rows."""
        chunks, rows = self.encode_chunks(b, spec, seq0)
        return b"".join(chunks), rows

    def encode_chunks(self, b: DayBlock, spec: FileSpec, seq0: int = 0) -> tuple[list[Any], int]:
        """The file's bytes as consecutive chunks (bytes or Arrow buffers), and its number of rows."""
        if self.fmt == "native":
            cols = self.native_cells(b, seq0)
        elif self.fmt == "jsonl":
            table = self.native_table(b, seq0)
            if spec.schema_change is not None:
                table = self._change_schema(table, spec.schema_change)
            return [_json_lines(table)], table.num_rows
        else:
            keep = np.isin(b.code, list(TAOBAO_BEHAVIOR if self.fmt == "taobao" else RETAILROCKET_EVENT))
            b = b.select(keep)
            cols = self.taobao_cells(b) if self.fmt == "taobao" else self.retailrocket_cells(b)
        if spec.schema_change is not None:
            cols = self._change_cells(cols, spec.schema_change, rename=self.fmt == "native")
        return [_header(list(cols)), _lines(list(cols.values()), len(b))], len(b)

    def native_cells(self, b: DayBlock, seq0: int = 0) -> dict[str, Cell]:
        """The native columns of ``b`` (event ids numbered from ``seq0`` within the day)."""
        n = len(b)
        itemless = b.code == SEARCH
        leaf = self.model.catalogue.leaf[np.where(itemless, 0, b.item)]
        cols: dict[str, Cell] = {
            "event_id": _Digits((b.day + 1) * 10**9 + seq0 + np.arange(n, dtype=np.int64), self.tag),
            "event_type": _Coded(b.code, CODE_NAMES),
            "user_id": _ints(b.user + 1, b.user < 0),
            "session_id": _Digits(b.session),
            "item_id": _ints(b.item.astype(np.int64) + 1, itemless),
            "timestamp": iso_timestamps(b.ts),
            "price": self._prices(b),
            "quantity": _Coded(b.quantity.astype(np.int64) - 1, self._quantities(b.quantity)),
            "query": _Coded(b.query, self._queries),
            "category": _Coded(np.where(itemless, -1, leaf), self._leaf_names),
        }
        return {c: cols.get(c, _Coded(None)) for c in NATIVE_COLUMNS}

    def native_table(self, b: DayBlock, seq0: int = 0) -> pa.Table:
        """The native columns as an Arrow table of strings (nulls where a field is empty)."""
        n = len(b)
        return pa.table(
            {
                name: c if isinstance(c, pa.Array) else c.array(n)
                for name, c in self.native_cells(b, seq0).items()
            }
        )

    def _quantities(self, quantity: np.ndarray) -> tuple[str, ...]:
        """Quantity texts "1".."N", N fixed (99) unless a day holds more, so the vocabulary rarely changes."""
        top = max(99, int(quantity.max()) if len(quantity) else 0)
        if len(self._qty_names) != top:
            self._qty_names = tuple(str(i) for i in range(1, top + 1))
        return self._qty_names

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

    def taobao_cells(self, b: DayBlock) -> dict[str, Cell]:
        """Taobao UserBehavior columns of ``b`` (rows of the types Taobao has)."""
        leaf = self.model.catalogue.leaf[b.item].astype(np.int64)
        return {
            "user": _ints(b.visitor + 1),
            "item": _ints(b.item.astype(np.int64) + 1),
            "category": _Coded(leaf, self._leaf_numbers),
            "behavior": _Coded(b.code.astype(np.int64), self._taobao_names),
            "ts": _Digits(b.ts // 1000),
        }

    def retailrocket_cells(self, b: DayBlock) -> dict[str, Cell]:
        """RetailRocket columns of ``b`` (rows of the types RetailRocket has)."""
        return {
            "timestamp": _Digits(b.ts),
            "visitorid": _ints(b.visitor + 1),
            "event": _Coded(b.code.astype(np.int64), self._retailrocket_names),
            "itemid": _ints(b.item.astype(np.int64) + 1),
            "transactionid": _ints(b.session, b.code != PURCHASE),
        }

    def taobao_table(self, b: DayBlock) -> pa.Table:
        """Taobao columns as an Arrow table of strings (the types Taobao has)."""
        b = b.select(np.isin(b.code, list(TAOBAO_BEHAVIOR)))
        return pa.table({k: _array(c, len(b)) for k, c in self.taobao_cells(b).items()})

    def retailrocket_table(self, b: DayBlock) -> pa.Table:
        """RetailRocket columns as an Arrow table of strings (the types RetailRocket has)."""
        b = b.select(np.isin(b.code, list(RETAILROCKET_EVENT)))
        return pa.table({k: _array(c, len(b)) for k, c in self.retailrocket_cells(b).items()})

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

    @staticmethod
    def _change_cells(cols: dict[str, Cell], inc: Incident, rename: bool) -> dict[str, Cell]:
        """The same schema change on cells: renamed keys, constant extra columns."""
        mapping = dict(inc.opt("rename")) if rename else {}
        out = {mapping.get(k, k): c for k, c in cols.items()}
        n = _rows(next(iter(cols.values())))
        for name, value in dict(inc.opt("extra")).items():
            out[name] = _Coded(np.zeros(n, dtype=np.int64), (str(value),))
        return out

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
_NUMBERS_AS_TEXT = frozenset({"price", "unit_price", "quantity"})


def _array(cell: Cell, n: int) -> pa.Array:
    return cell if isinstance(cell, pa.Array) else cell.array(n)


def _rows(cell: Cell) -> int:
    if isinstance(cell, _Digits):
        return len(cell.values)
    if isinstance(cell, _Coded):
        assert cell.codes is not None, "the first column is never empty"
        return len(cell.codes)
    return len(cell)


def _json_lines(table: pa.Table) -> pa.Buffer | bytes:
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
    return _string_data(lines)


def describe(fmt: str) -> dict[str, Any]:
    """Column layout of a format, for the manifest."""
    cols = {"native": NATIVE_COLUMNS, "jsonl": NATIVE_COLUMNS, "taobao": TAOBAO_COLUMNS}
    return {"format": fmt, "columns": list(cols.get(fmt, RETAILROCKET_COLUMNS))}
