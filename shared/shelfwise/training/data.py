"""Interaction data for training: curated-schema Arrow tables to indexed arrays and sparse matrices.

Only events that say something about an item (``weight > 0``: views, clicks, carts, purchases,
ratings) are kept. Users are keyed by ``user_id``, or by ``session_id`` for anonymous events.
Ids are encoded against *sorted* id arrays, so a bundle's ``users.npz``/``items.npz`` map an id to
its index with ``np.searchsorted`` (docs/contracts.md).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from shelfwise.errors import InputError

REQUIRED_COLUMNS: tuple[str, ...] = ("event_type", "item_id", "timestamp", "weight")
TITLE_KEYS: tuple[str, ...] = ("title", "description", "name")
MS_PER_DAY = 86_400_000


def _encode(values: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(sorted unique values as a numpy str array, int32 index of each value into it)."""
    enc = pc.dictionary_encode(values).combine_chunks() if isinstance(values, pa.ChunkedArray) else None
    if enc is None:
        enc = pc.dictionary_encode(values)
    dictionary = enc.dictionary
    order = pc.array_sort_indices(dictionary).to_numpy()
    rank = np.empty(len(order), dtype=np.int32)
    rank[order] = np.arange(len(order), dtype=np.int32)
    codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    uniques = np.asarray(dictionary.take(pa.array(order)).to_pylist(), dtype=str)
    return uniques, rank[codes]


@dataclass
class Interactions:
    """Events as parallel arrays over one encoding of users and items, sorted by time."""

    user_ids: np.ndarray  # [U] str, sorted
    item_ids: np.ndarray  # [N] str, sorted
    user: np.ndarray  # [E] int32
    item: np.ndarray  # [E] int32
    session: np.ndarray  # [E] int32 (session index, for co-occurrence within sessions)
    weight: np.ndarray  # [E] float32
    ts: np.ndarray  # [E] int64, ms since epoch
    item_info: dict[str, np.ndarray]  # category (U), title (U), price (f4) per item
    # [E] bool: the event is a purchase (what "already bought" means); None when unknown
    purchase: np.ndarray | None = None

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_events(self) -> int:
        return len(self.ts)

    def matrix(self, rows: str = "user", mask: np.ndarray | None = None) -> sp.csr_matrix:
        """Summed event weights, ``rows`` x items (``user`` or ``session``), as float32 CSR."""
        r = self.user if rows == "user" else self.session
        n_rows = self.n_users if rows == "user" else int(self.session.max(initial=-1)) + 1
        w, c = self.weight, self.item
        if mask is not None:
            r, w, c = r[mask], w[mask], c[mask]
        m = sp.csr_matrix((w.astype(np.float32), (r, c)), shape=(n_rows, self.n_items), dtype=np.float32)
        m.sum_duplicates()
        return m

    def history_matrix(self, half_life_days: float | None = None) -> sp.csr_matrix:
        """User x item history strength: event weights, decayed by age at the end of the log, log1p-damped.

        ``half_life_days`` halves an event's weight per that many days before the last event, so
        what a user did recently counts more (None = no decay). ``log1p`` keeps eight purchases of
        one item from counting eight times.
        """
        w = self.weight.astype(np.float64)
        if half_life_days:
            age_days = (int(self.ts[-1]) - self.ts) / MS_PER_DAY
            w = w * np.power(0.5, age_days / float(half_life_days))
        m = sp.csr_matrix((w, (self.user, self.item)), shape=(self.n_users, self.n_items))
        m.sum_duplicates()
        m.data = np.log1p(m.data)
        return m.astype(np.float32)

    def subset(self, mask: np.ndarray) -> Interactions:
        """The events under ``mask``, re-encoded so that only users and items present remain."""
        users, u_inv = np.unique(self.user[mask], return_inverse=True)
        items, i_inv = np.unique(self.item[mask], return_inverse=True)
        _, s_inv = np.unique(self.session[mask], return_inverse=True)
        return Interactions(
            user_ids=self.user_ids[users],
            item_ids=self.item_ids[items],
            user=u_inv.astype(np.int32),
            item=i_inv.astype(np.int32),
            session=s_inv.astype(np.int32),
            weight=self.weight[mask],
            ts=self.ts[mask],
            item_info={k: v[items] for k, v in self.item_info.items()},
            purchase=None if self.purchase is None else self.purchase[mask],
        )

    def purchases_by_user(self) -> tuple[np.ndarray, np.ndarray]:
        """CSR (indptr [U+1], item indices) of what each user bought, most recent first, each item once.

        Serving's "already bought" filter reads it (``users.npz``); views, clicks and carts are not
        purchases. Empty rows when the source had no event types.
        """
        if self.purchase is None or not self.purchase.any():
            return np.zeros(self.n_users + 1, np.int64), np.zeros(0, np.int64)
        users, items, ts = self.user[self.purchase], self.item[self.purchase], self.ts[self.purchase]
        order = np.lexsort((-ts, users))  # by user, newest first
        users, items = users[order], items[order]
        pair = users.astype(np.int64) * self.n_items + items
        _, first = np.unique(pair, return_index=True)  # the newest purchase of each (user, item)
        keep = np.zeros(len(pair), dtype=bool)
        keep[first] = True
        users, items = users[keep], items[keep]
        indptr = np.zeros(self.n_users + 1, np.int64)
        np.add.at(indptr, users.astype(np.int64) + 1, 1)
        return np.cumsum(indptr), items.astype(np.int64)

    def time_quantile(self, q: float) -> int:
        """The time (ms) by which a fraction ``q`` of the events had happened."""
        if self.n_events == 0:
            raise InputError("no usable events (need item events with a positive weight)")
        return int(np.quantile(self.ts, q, method="lower"))

    def data_hash(self) -> str:
        """A content hash of the interactions (ids, times, weights), recorded in the manifest."""
        h = hashlib.sha256()
        for arr in (self.user, self.item, self.ts, self.weight):
            h.update(np.ascontiguousarray(arr).tobytes())
        h.update("\x1f".join(self.user_ids.tolist()).encode())
        h.update("\x1f".join(self.item_ids.tolist()).encode())
        return h.hexdigest()[:32]


def interactions_from_table(table: pa.Table) -> Interactions:
    """Build :class:`Interactions` from a curated-schema table (docs/contracts.md)."""
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise InputError(f"events table lacks curated columns: {', '.join(missing)}")
    if "user_id" not in table.column_names and "session_id" not in table.column_names:
        raise InputError("events table needs user_id or session_id")
    weight = pc.cast(table["weight"], pa.float32())
    keep = pc.and_(pc.is_valid(table["item_id"]), pc.greater(pc.fill_null(weight, 0.0), 0.0))
    t = table.filter(keep)
    if t.num_rows == 0:
        raise InputError("no usable events (need item events with a positive weight)")
    user_col = _user_key(t)
    session_col = t["session_id"] if "session_id" in t.column_names else user_col
    session_col = pc.coalesce(session_col, user_col)
    ts = pc.cast(pc.cast(t["timestamp"], pa.timestamp("ms", tz="UTC")), pa.int64()).to_numpy()
    order = np.argsort(ts, kind="stable")
    user_ids, user = _encode(user_col)
    item_ids, item = _encode(pc.cast(t["item_id"], pa.string()))
    _, session = _encode(pc.binary_join_element_wise(user_col, pc.cast(session_col, pa.string()), "\x1f"))
    info = _item_info(t, item, len(item_ids), order)
    purchase = pc.equal(pc.cast(t["event_type"], pa.string()), "purchase").to_numpy(zero_copy_only=False)
    return Interactions(
        user_ids=user_ids,
        item_ids=item_ids,
        user=user[order],
        item=item[order],
        session=session[order],
        weight=pc.cast(t["weight"], pa.float32()).to_numpy(zero_copy_only=False)[order],
        ts=ts[order],
        item_info=info,
        purchase=np.asarray(purchase, dtype=bool)[order],
    )


def _user_key(t: pa.Table) -> pa.ChunkedArray:
    cols = [c for c in ("user_id", "session_id") if c in t.column_names]
    key = pc.coalesce(*[pc.cast(t[c], pa.string()) for c in cols])
    if key.null_count:
        raise InputError(f"{key.null_count} events have neither user_id nor session_id")
    return key


def _item_info(t: pa.Table, item: np.ndarray, n_items: int, order: np.ndarray) -> dict[str, np.ndarray]:
    """Per item, the most recent category, price and title seen (title from ``properties`` JSON)."""
    last = np.full(n_items, -1, dtype=np.int64)
    last[item[order]] = order  # later events overwrite earlier ones
    take = pa.array(last)

    def strings(col: str) -> np.ndarray:
        if col not in t.column_names:
            return np.full(n_items, "", dtype=str)
        vals = pc.fill_null(pc.cast(t[col].take(take), pa.string()), "").to_pylist()
        return np.asarray(vals, dtype=str) if vals else np.zeros(0, dtype=str)

    price = np.full(n_items, np.nan, dtype=np.float32)
    if "price" in t.column_names:
        price = (
            pc.fill_null(pc.cast(t["price"].take(take), pa.float32()), np.nan)
            .to_numpy(zero_copy_only=False)
            .astype(np.float32)
        )
    titles = np.full(n_items, "", dtype=object)
    if "properties" in t.column_names:
        for i, raw in enumerate(t["properties"].take(take).to_pylist()):
            titles[i] = _title(raw)
    return {"category": strings("category"), "price": price, "title": titles.astype(str)}


def _title(raw: Any) -> str:
    if not raw:
        return ""
    try:
        props = json.loads(raw)
    except (TypeError, ValueError):
        return ""
    if not isinstance(props, dict):
        return ""
    for key in TITLE_KEYS:
        for k, v in props.items():
            if k.lower() == key and isinstance(v, str):
                return v.strip()[:200]
    return ""


@dataclass
class Split:
    """A temporal split: models fit on ``train``; ``targets[j]`` are what ``users[j]`` did next.

    Indices in ``users`` and ``targets`` refer to ``train``'s encoding. Targets are items the
    user touched after the cut and never before it that exist in the training catalogue
    (nothing can recommend an item it has never seen); how many were dropped is recorded.
    """

    train: Interactions
    cut_ms: int
    end_ms: int
    users: np.ndarray  # [T] int32 train user indices
    targets: list[np.ndarray]  # per test user, int32 train item indices
    info: dict[str, Any]


def sample_users(split: Split, max_users: int, seed: int = 0) -> Split:
    """The split restricted to a seeded random sample of at most ``max_users`` test users.

    Scoring every user against a 100k-item catalogue costs users x items; a few thousand users
    give metrics whose standard error is far below the differences that decide anything.
    """
    if max_users <= 0 or len(split.users) <= max_users:
        return split
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(split.users), size=max_users, replace=False))
    info = {**split.info, "test_users": max_users, "test_users_before_sampling": len(split.users)}
    return Split(
        split.train, split.cut_ms, split.end_ms, split.users[pick], [split.targets[i] for i in pick], info
    )


def temporal_split(data: Interactions, fraction: float = 0.8) -> Split:
    """Global temporal split at the time by which ``fraction`` of the events had happened."""
    if not 0 < fraction < 1:
        raise InputError("split fraction must be in (0, 1)")
    cut = data.time_quantile(fraction)
    before = data.ts < cut
    if not before.any() or before.all():
        raise InputError("the log is too short to split in time (all events share a timestamp?)")
    train = data.subset(before)
    user_map = np.full(data.n_users, -1, dtype=np.int64)
    user_map[np.unique(data.user[before])] = np.arange(train.n_users)
    item_map = np.full(data.n_items, -1, dtype=np.int64)
    item_map[np.unique(data.item[before])] = np.arange(train.n_items)
    after = ~before
    u = user_map[data.user[after]]
    i = item_map[data.item[after]]
    known_user = u >= 0
    # Targets of known users: distinct (user, item) pairs after the cut, minus what they touched before.
    reachable = np.unique(np.stack([u[known_user & (i >= 0)], i[known_user & (i >= 0)]], 1), axis=0)
    unreachable = len(
        np.unique(np.stack([u[known_user & (i < 0)], data.item[after][known_user & (i < 0)]], 1), axis=0)
    )
    if len(reachable):
        seen = train.matrix("user")
        already = np.asarray(seen[reachable[:, 0], reachable[:, 1]]).ravel() > 0
        tp = reachable[~already]
    else:
        tp = np.zeros((0, 2), dtype=np.int64)
    n_new_total = len(tp) + unreachable
    if len(tp):
        users, starts = np.unique(tp[:, 0], return_index=True)
        targets = np.split(tp[:, 1].astype(np.int32), starts[1:])
    else:
        users, targets = np.zeros(0, np.int64), []
    info = {
        "split": "global temporal",
        "fraction": fraction,
        "cut": _iso(cut),
        "start": _iso(int(data.ts[0])),
        "end": _iso(int(data.ts[-1])),
        "train_events": int(before.sum()),
        "test_events": int(after.sum()),
        "train_users": train.n_users,
        "train_items": train.n_items,
        "test_users": len(users),
        "targets": len(tp),
        "unreachable_targets": unreachable,
        "unreachable_share": round(unreachable / n_new_total, 4) if n_new_total else 0.0,
    }
    return Split(train, cut, int(data.ts[-1]), users.astype(np.int32), targets, info)


def _iso(ms: int) -> str:
    return np.datetime64(ms, "ms").astype("datetime64[s]").item().isoformat() + "Z"
