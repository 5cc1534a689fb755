"""Source formats: detection from the header (never a guess) and adapters to the native columns.

An adapter declares the columns it needs, the fast CSV types of its columns, and maps a record
batch of source columns to native columns (``shelfwise.events.NATIVE_COLUMNS``), vectorised with
pyarrow compute. Values it cannot map are passed through so validation files them under a reason
(an unknown behaviour code becomes ``unknown_event_type``, not a silent drop).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from shelfwise.events import DERIVED_COLUMNS, NATIVE_COLUMNS, PARTITION_COLUMN
from shelfwise.ingest.errors import UnknownFormatError

Columns = dict[str, pa.Array]


def json_literals(arr: pa.Array) -> pa.Array:
    """Each value as a JSON literal (strings quoted and escaped, numbers as text, null as ``null``)."""
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_boolean(arr.type):
        text = pc.cast(arr, pa.string())
        if pa.types.is_floating(arr.type):
            finite = pc.fill_null(pc.is_finite(arr), True)
            text = pc.if_else(finite, text, pa.scalar(None, pa.string()))
        if pa.types.is_boolean(arr.type):
            pass
        return pc.fill_null(text, "null")
    if not pa.types.is_string(arr.type):
        arr = pc.cast(arr, pa.string())
    escaped = pc.replace_substring(pc.replace_substring(arr, "\\", "\\\\"), '"', '\\"')
    quoted = pc.binary_join_element_wise('"', escaped, '"', "")
    controls = pc.fill_null(pc.match_substring_regex(arr, r"[\x00-\x1f]"), False)
    if pc.any(controls).as_py():
        # Rare: control characters need \uXXXX escapes, which no pyarrow kernel writes.
        values = arr.to_pylist()
        mask = controls.to_pylist()
        slow = [json.dumps(v, ensure_ascii=False) if m else None for v, m in zip(values, mask, strict=True)]
        quoted = pc.if_else(controls, pa.array(slow, pa.string()), quoted)
    return pc.fill_null(quoted, "null")


def json_object(pairs: Iterable[tuple[str, pa.Array]], n: int, skip_null: bool = True) -> pa.Array | None:
    """A JSON object per row from named columns; keys with null values are left out.

    Rows where every value is null get null (not ``{}``) so curated ``properties`` stays sparse.
    """
    parts: list[pa.Array] = []
    any_valid: pa.Array | None = None
    for key, arr in pairs:
        # Each present key renders as `"key":value,`; absent keys as "" (pyarrow 26's
        # null_handling="skip" in binary_join_element_wise returns wrong lengths, so no skip).
        literal = pc.binary_join_element_wise(json.dumps(key) + ":", json_literals(arr), ",", "")
        valid = pc.is_valid(arr)
        if skip_null:
            literal = pc.if_else(valid, literal, "")
        parts.append(literal)
        any_valid = valid if any_valid is None else pc.or_(any_valid, valid)
    if not parts or any_valid is None:
        return None
    body = parts[0] if len(parts) == 1 else pc.binary_join_element_wise(*parts, "")
    obj = pc.binary_join_element_wise("{", pc.utf8_slice_codeunits(body, 0, -1), "}", "")
    return pc.if_else(any_valid, obj, pa.scalar(None, pa.string()))


def merge_properties(existing: pa.Array | None, extra: pa.Array | None) -> pa.Array | None:
    """Merge a JSON-object column of extra keys into an existing ``properties`` column (vectorised)."""
    if extra is None:
        return existing
    if existing is None:
        return extra
    existing = existing.cast(pa.string()) if existing.type != pa.string() else existing
    is_obj = pc.fill_null(pc.starts_with(pc.utf8_trim_whitespace(existing), "{"), False)
    inner_existing = pc.utf8_slice_codeunits(pc.utf8_trim_whitespace(existing), 1)  # drops "{"
    inner_extra = pc.utf8_slice_codeunits(extra, 0, -1)  # drops "}"
    empty_existing = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(inner_existing), "}"), False)
    merged = pc.if_else(
        empty_existing,
        extra,
        pc.binary_join_element_wise(inner_extra, ",", inner_existing, ""),
    )
    wrapped = pc.binary_join_element_wise(inner_extra, ',"properties":', json_literals(existing), "}", "")
    out = pc.if_else(is_obj, merged, wrapped)
    out = pc.if_else(pc.is_valid(extra), out, existing)
    return pc.if_else(pc.is_valid(existing), out, extra)


def map_values(arr: pa.Array, mapping: dict[str, str]) -> pa.Array:
    """Translate source codes to native ones; unknown codes pass through unchanged."""
    keys = pa.array(list(mapping), pa.string())
    values = pa.array(list(mapping.values()), pa.string())
    idx = pc.index_in(arr, value_set=keys)
    return pc.coalesce(pc.take(values, idx), arr)


def _as_string(arr: pa.Array) -> pa.Array:
    if arr.type == pa.string():
        return arr
    if pa.types.is_floating(arr.type):
        # Ids stored as floats (pandas exports: 13085.0) become integer text.
        as_int = pc.cast(arr, pa.int64(), safe=False)
        # Unsafe back too: an id beyond int64 (1E20) or NaN wraps, compares unequal and stays float text.
        exact = pc.equal(pc.cast(as_int, pa.float64(), safe=False), arr)
        return pc.if_else(exact, pc.cast(as_int, pa.string()), pc.cast(arr, pa.string()))
    return pc.cast(arr, pa.string()) if not pa.types.is_binary(arr.type) else arr


@dataclass(frozen=True)
class Adapter:
    """How one source format maps to the native columns."""

    name: str
    required: frozenset[str]
    csv_types: dict[str, pa.DataType]
    convert: Callable[[pa.RecordBatch], Columns]
    # Column aliases (older exports of a data set) mapped to the names `convert` expects.
    aliases: dict[str, str] = field(default_factory=dict)
    # Epoch unit of integer timestamps, when the source uses them.
    epoch_unit: str | None = None
    # Fixed header for headerless files (Taobao's UserBehavior.csv has none).
    headerless_names: tuple[str, ...] = ()

    def matches(self, columns: Iterable[str]) -> bool:
        names = {self.aliases.get(c, c) for c in columns}
        return self.required <= names

    def to_native(self, batch: pa.RecordBatch) -> Columns:
        if self.aliases:
            batch = batch.rename_columns([self.aliases.get(c, c) for c in batch.schema.names])
        return self.convert(batch)


def _col(batch: pa.RecordBatch, name: str) -> pa.Array | None:
    i = batch.schema.get_field_index(name)
    return batch.column(i) if i >= 0 else None


# ---------------------------------------------------------------- native
_NATIVE_STRING = {
    "event_id",
    "event_type",
    "user_id",
    "session_id",
    "item_id",
    "query",
    "recommendation_id",
    "category",
    "variant",
    "model_version",
    "properties",
}
_IGNORED_EXTRAS = set(DERIVED_COLUMNS) | {PARTITION_COLUMN}


def _native(batch: pa.RecordBatch) -> Columns:
    out: Columns = {}
    extras: list[tuple[str, pa.Array]] = []
    for name, arr in zip(batch.schema.names, batch.columns, strict=True):
        if name in NATIVE_COLUMNS:
            out[name] = arr
        elif name not in _IGNORED_EXTRAS:
            extras.append((name, arr))
    if extras:
        extra = json_object(extras, batch.num_rows)
        props = out.get("properties")
        if props is not None and pa.types.is_binary(props.type):
            props = None if props.null_count == len(props) else props
        out["properties"] = merge_properties(props, extra)
    return out


NATIVE = Adapter(
    name="native",
    required=frozenset({"event_type", "timestamp"}),
    csv_types={
        **dict.fromkeys(_NATIVE_STRING, pa.string()),
        "timestamp": pa.string(),
        "price": pa.float64(),
        "quantity": pa.float64(),
        "position": pa.int64(),
        "score": pa.float64(),
    },
    convert=_native,
)


# ---------------------------------------------------------------- RetailRocket
def _retailrocket(batch: pa.RecordBatch) -> Columns:
    tx = _col(batch, "transactionid")
    out: Columns = {
        "timestamp": _col(batch, "timestamp"),
        "user_id": _as_string(_col(batch, "visitorid")),
        "event_type": map_values(
            _col(batch, "event"),
            {"view": "view", "addtocart": "add_to_cart", "transaction": "purchase"},
        ),
        "item_id": _as_string(_col(batch, "itemid")),
    }
    if tx is not None:
        props = json_object([("transaction_id", _as_string(tx))], batch.num_rows)
        if props is not None:
            out["properties"] = props
    return out


RETAILROCKET = Adapter(
    name="retailrocket",
    required=frozenset({"timestamp", "visitorid", "event", "itemid"}),
    csv_types={
        "timestamp": pa.int64(),
        "visitorid": pa.string(),
        "event": pa.string(),
        "itemid": pa.string(),
        "transactionid": pa.string(),
    },
    convert=_retailrocket,
    epoch_unit="ms",
)


# ---------------------------------------------------------------- Taobao UserBehavior
def _taobao(batch: pa.RecordBatch) -> Columns:
    return {
        "user_id": _as_string(_col(batch, "user")),
        "item_id": _as_string(_col(batch, "item")),
        "category": _as_string(_col(batch, "category")),
        "event_type": map_values(
            _col(batch, "behavior"),
            {"pv": "view", "cart": "add_to_cart", "fav": "add_to_wishlist", "buy": "purchase"},
        ),
        "timestamp": _col(batch, "ts"),
    }


TAOBAO = Adapter(
    name="taobao",
    required=frozenset({"user", "item", "category", "behavior", "ts"}),
    csv_types={
        "user": pa.string(),
        "item": pa.string(),
        "category": pa.string(),
        "behavior": pa.string(),
        "ts": pa.int64(),
    },
    convert=_taobao,
    aliases={
        "user_id": "user",
        "item_id": "item",
        "category_id": "category",
        "behavior_type": "behavior",
        "timestamp": "ts",
    },
    epoch_unit="s",
    headerless_names=("user", "item", "category", "behavior", "ts"),
)


# ---------------------------------------------------------------- UCI Online Retail II
def _online_retail(batch: pa.RecordBatch) -> Columns:
    invoice = _as_string(_col(batch, "Invoice"))
    qty_raw = _col(batch, "Quantity")
    out: Columns = {
        "item_id": _as_string(_col(batch, "StockCode")),
        "timestamp": _col(batch, "InvoiceDate"),
        "price": _col(batch, "Price"),
    }
    customer = _col(batch, "Customer ID")
    if customer is not None:
        out["user_id"] = _as_string(customer)
    # An invoice is one basket: the natural session (and it keeps anonymous buyers valid).
    if invoice.type == pa.string():
        out["session_id"] = pc.binary_join_element_wise("invoice:", invoice, "")
        cancelled = pc.fill_null(pc.starts_with(invoice, "C"), False)
    else:
        out["session_id"] = invoice
        cancelled = pa.nulls(len(invoice), pa.bool_()).fill_null(False)
    if qty_raw is not None and (pa.types.is_integer(qty_raw.type) or pa.types.is_floating(qty_raw.type)):
        qty = pc.cast(qty_raw, pa.float64())
        negative = pc.fill_null(pc.less(qty, 0), False)
        # Cancellations are returns of the quantity given (stored positive).
        out["quantity"] = pc.abs(qty)
        is_return = pc.or_(cancelled, negative)
    else:
        out["quantity"] = qty_raw
        is_return = cancelled
    out["event_type"] = pc.if_else(is_return, "return", "purchase")
    extras = [
        (key, _col(batch, col)) for key, col in (("description", "Description"), ("country", "Country"))
    ]
    props = json_object([(k, v) for k, v in extras if v is not None], batch.num_rows)
    if props is not None:
        out["properties"] = props
    return out


ONLINE_RETAIL = Adapter(
    name="online_retail",
    required=frozenset({"Invoice", "StockCode", "Quantity", "InvoiceDate", "Price"}),
    csv_types={
        "Invoice": pa.string(),
        "StockCode": pa.string(),
        "Description": pa.string(),
        "Quantity": pa.float64(),
        "InvoiceDate": pa.string(),
        "Price": pa.float64(),
        "Customer ID": pa.float64(),
        "Country": pa.string(),
    },
    convert=_online_retail,
    aliases={"InvoiceNo": "Invoice", "UnitPrice": "Price", "CustomerID": "Customer ID"},
)


# ---------------------------------------------------------------- MovieLens ratings
def _movielens(batch: pa.RecordBatch) -> Columns:
    rating = _col(batch, "rating")
    out: Columns = {
        "user_id": _as_string(_col(batch, "userId")),
        "item_id": _as_string(_col(batch, "movieId")),
        "timestamp": _col(batch, "timestamp"),
        "event_type": pa.repeat(pa.scalar("rating"), batch.num_rows),
    }
    if rating is not None:
        out["properties"] = json_object([("rating", rating)], batch.num_rows)
    return out


MOVIELENS = Adapter(
    name="movielens",
    required=frozenset({"userId", "movieId", "rating", "timestamp"}),
    csv_types={
        "userId": pa.string(),
        "movieId": pa.string(),
        "rating": pa.float64(),
        "timestamp": pa.int64(),
    },
    convert=_movielens,
    epoch_unit="s",
)

# Detection order matters: the most specific headers first, native (the loosest) last.
ADAPTERS: dict[str, Adapter] = {a.name: a for a in (RETAILROCKET, TAOBAO, ONLINE_RETAIL, MOVIELENS, NATIVE)}
FORMAT_NAMES = ("auto", *ADAPTERS)


def adapter_for(columns: list[str], fmt: str = "auto") -> Adapter:
    """The adapter for these source columns: the named one (checked) or the one the header matches."""
    if fmt != "auto":
        if fmt not in ADAPTERS:
            raise UnknownFormatError(f"unknown format {fmt!r}; known: {', '.join(ADAPTERS)}")
        adapter = ADAPTERS[fmt]
        if not adapter.matches(columns):
            missing = sorted(adapter.required - {adapter.aliases.get(c, c) for c in columns})
            raise UnknownFormatError(f"format {fmt!r} needs columns {missing} that the object lacks")
        return adapter
    for adapter in ADAPTERS.values():
        if adapter.matches(columns):
            return adapter
    shown = ", ".join(repr(c[:40]) for c in columns[:12])
    raise UnknownFormatError(
        f"no supported format has these columns: [{shown}]; "
        f"expected one of: {', '.join(f'{a.name} ({sorted(a.required)})' for a in ADAPTERS.values())}"
    )


def headerless_adapter(first_fields: list[str]) -> Adapter | None:
    """Taobao's UserBehavior.csv has no header: five fields, ids and an epoch, a pv/cart/fav/buy code."""
    if len(first_fields) != 5:
        return None
    user, item, cat, behavior, ts = first_fields
    if all(v.isdigit() for v in (user, item, cat, ts)) and behavior in {"pv", "cart", "fav", "buy"}:
        return TAOBAO
    return None


# MovieLens' classic files have no header: u.data (100K) is ``user<TAB>item<TAB>rating<TAB>epoch``,
# ratings.dat (1M, 10M) is ``user::item::rating::epoch``. A ``::`` line is read with ``:`` as the
# delimiter, so every other field is the empty string between the two colons (ignored).
MOVIELENS_FIELDS = ("userId", "movieId", "rating", "timestamp")
MOVIELENS_DAT_FIELDS = ("userId", "_sep1", "movieId", "_sep2", "rating", "_sep3", "timestamp")


def _is_number(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def headerless_source(first_line: str) -> tuple[Adapter, str, list[str]] | None:
    """(adapter, delimiter, column names) of a known headerless file from its first line, or None."""
    line = first_line.rstrip("\r\n")
    taobao = headerless_adapter(line.split(","))
    if taobao is not None:
        return taobao, ",", list(taobao.headerless_names)
    for delimiter, sep in (("\t", "\t"), (":", "::")):
        fields = line.split(sep)
        if len(fields) != 4:
            continue
        if all(f.strip().isdigit() for f in (fields[0], fields[1], fields[3])) and _is_number(fields[2]):
            names = MOVIELENS_FIELDS if sep == "\t" else MOVIELENS_DAT_FIELDS
            return MOVIELENS, delimiter, list(names)
    return None
