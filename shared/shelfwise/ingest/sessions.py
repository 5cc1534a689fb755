"""Session ids for rows whose source has none: a 30-minute inactivity gap per user, streaming."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SESSION_GAP_MS = 30 * 60 * 1000


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
