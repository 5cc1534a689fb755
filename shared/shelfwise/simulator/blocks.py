"""Building blocks shared by the simulated shop and its sessions: event codes, time and seed
constants, the DayBlock columns and fast numpy helpers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DAY_MS = 86_400_000
HOUR_MS = 3_600_000

# Event type codes of a DayBlock; names are the native event types.
VIEW, CART, REMOVE, FAV, PURCHASE, SEARCH = 0, 1, 2, 3, 4, 5
CODE_NAMES: tuple[str, ...] = (
    "view",
    "add_to_cart",
    "remove_from_cart",
    "add_to_wishlist",
    "purchase",
    "search",
)

QUERIES_PER_LEAF = 16

# Stream ids for SeedSequence([seed, stream, ...]): each concern draws from its own stream.
STREAM_SHOP, STREAM_DAY, STREAM_DRIFT, STREAM_LOOP, STREAM_EXPORT, STREAM_CALIBRATE = 1, 2, 3, 4, 5, 6
STREAM_MISSION = 7
ANON_VISITOR_OFFSET = 10**11  # anonymous visitors' ids in formats that need a user (Taobao, RetailRocket)
BOT_USER_OFFSET = 9 * 10**9


def time_order(ts: np.ndarray) -> np.ndarray:
    """Stable argsort of millisecond timestamps, several times faster than
    ``argsort(kind="stable")``: each key is the time offset with the row index in its low bits, so
    keys are unique, a plain (SIMD) sort of them is stable, and the index comes back out of them."""
    n = len(ts)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    lo = int(ts.min())
    bits = max(1, (n - 1).bit_length())
    if (int(ts.max()) - lo) >> (62 - bits):
        return np.argsort(ts, kind="stable")
    key = (ts - lo) << bits
    key |= np.arange(n, dtype=np.int64)
    key.sort()
    key &= (1 << bits) - 1
    return key


def take_rows(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``np.take(a, idx, axis=0)`` for a 2-D array, each row moved as one item (about 25% faster)."""
    a = np.ascontiguousarray(a)
    rows = a.view(np.dtype((np.void, a.shape[1] * a.itemsize))).ravel()
    return np.take(rows, idx).view(a.dtype).reshape(len(idx), a.shape[1])


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class DayBlock:
    """One simulated day of events as parallel numpy columns, sorted by time."""

    day: int
    ts: np.ndarray  # int64 ms since epoch, UTC
    code: np.ndarray  # int8, CODE_NAMES index
    user: np.ndarray  # int64 user index, -1 when anonymous
    visitor: np.ndarray  # int64 user index, or ANON_VISITOR_OFFSET + session for anonymous events
    session: np.ndarray  # int64 session number, unique over the run
    item: np.ndarray  # int32 item index, -1 for search
    price: np.ndarray  # float64, NaN where none
    quantity: np.ndarray  # int16, 0 where none
    query: np.ndarray  # int32 index into catalogue.leaf_queries.ravel(), -1 where none
    owner: np.ndarray  # int64 true user index behind the event, also when anonymous (ground truth)

    def __len__(self) -> int:
        return len(self.ts)

    def select(self, keep: np.ndarray) -> DayBlock:
        if isinstance(keep, np.ndarray) and keep.dtype != bool:
            return DayBlock(self.day, *(np.take(getattr(self, f), keep) for f in BLOCK_FIELDS))
        return DayBlock(self.day, *(getattr(self, f)[keep] for f in BLOCK_FIELDS))


BLOCK_FIELDS = ("ts", "code", "user", "visitor", "session", "item", "price", "quantity", "query", "owner")
