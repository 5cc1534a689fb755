"""Live stock: the catalogue's small serving snapshot, refreshed on its own short cache.

Stock and prices change faster than models. The catalogue ingest writes
``curated/catalogue/serving/stock.npz`` (sorted item ids, in stock, active, price; docs/catalogue.md);
serving re-reads it every ``ttl_seconds`` (like the aliases) on a background thread and swaps it
in whole, so an item that sells out leaves the served lists within the TTL plus the ingest's
delay, without retraining and without a request ever waiting for S3. For each loaded version the
exclusion mask (not in stock, or no longer active) and the live prices are computed once per
snapshot, also off the request path (:meth:`LiveStock.prepare`); items the snapshot does not list
keep what their bundle says.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from shelfwise.observability import logger

Fetch = Callable[[], tuple[bytes, str] | None]  # (body, etag), or None when there is no snapshot yet


@dataclass(frozen=True)
class StockSnapshot:
    item_ids: np.ndarray  # sorted, UTF-8 bytes (numpy S)
    in_stock: np.ndarray
    active: np.ndarray
    price: np.ndarray
    snapshot_id: str
    etag: str

    @classmethod
    def parse(cls, body: bytes, etag: str) -> StockSnapshot:
        with np.load(io.BytesIO(body), allow_pickle=False) as npz:
            ids = npz["item_id"]
            snap = cls(
                ids if ids.dtype.kind == "S" else np.char.encode(ids, "utf-8"),
                npz["in_stock"].astype(bool),
                npz["active"].astype(bool),
                npz["price"].astype(np.float32),
                bytes(npz["snapshot_id"][0]).decode() if "snapshot_id" in npz else "",
                etag,
            )
        n = snap.item_ids.shape[0]
        if not (snap.in_stock.shape == snap.active.shape == snap.price.shape == (n,)):
            raise ValueError("stock.npz columns differ in length")
        if n > 1 and not bool((snap.item_ids[1:] > snap.item_ids[:-1]).all()):
            raise ValueError("stock.npz item ids are not sorted and unique")
        return snap

    def overlay(self, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For a bundle's items: (unavailable mask, live prices with the bundle's where unlisted: NaN)."""
        keys = item_ids if item_ids.dtype.kind == "S" else np.char.encode(item_ids.astype(str), "utf-8")
        n = self.item_ids.shape[0]
        unavailable = np.zeros(keys.shape[0], dtype=bool)
        price = np.full(keys.shape[0], np.nan, dtype=np.float32)
        if n == 0 or keys.shape[0] == 0:
            return unavailable, price
        pos = np.minimum(np.searchsorted(self.item_ids, keys), n - 1)
        listed = self.item_ids[pos] == keys
        unavailable[listed] = ~(self.in_stock[pos[listed]] & self.active[pos[listed]])
        price[listed] = self.price[pos[listed]]
        return unavailable, price


class LiveStock:
    """The current :class:`StockSnapshot` and per-version overlays, refreshed every ``ttl_seconds``."""

    def __init__(
        self,
        fetch: Fetch,
        ttl_seconds: float = 30.0,
        *,
        background: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch, self.ttl, self._background, self._clock = fetch, ttl_seconds, background, clock
        self.snapshot: StockSnapshot | None = None
        self.checked_at = -float("inf")
        self.error: str | None = None
        self._lock = threading.Lock()
        # (version, etag) -> (unavailable mask, live prices)
        self._overlays: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        self._models: Callable[[], Iterable[Any]] = list

    def watch(self, models: Callable[[], Iterable[Any]]) -> None:
        """Give the loaded versions (objects with ``version`` and ``catalog``), prepared at each refresh."""
        self._models = models

    def refresh(self) -> None:
        """Per request: when the cache expired, re-read the snapshot (in the background when enabled)."""
        if self._clock() - self.checked_at < self.ttl or self._lock.locked():
            return
        if self._background:
            threading.Thread(target=self.sync, name="stock-sync", daemon=True).start()
        else:
            self.sync()

    def sync(self) -> StockSnapshot | None:
        """Read the snapshot now; keep the current one when the read fails."""
        if not self._lock.acquire(blocking=False):
            return self.snapshot
        try:
            self.checked_at = self._clock()
            try:
                got = self._fetch()
                if got is not None and (self.snapshot is None or got[1] != self.snapshot.etag):
                    self.snapshot = StockSnapshot.parse(*got)
                    logger.info("stock snapshot loaded", extra={"snapshot_id": self.snapshot.snapshot_id})
                self.error = None
            except Exception as exc:  # S3 down or a bad file: keep serving the last good snapshot
                self.error = str(exc)
                logger.warning(
                    "stock snapshot read failed; keeping the current one", extra={"error": str(exc)}
                )
            for model in list(self._models()):
                self.overlay(model.version, model.catalog.item_ids)
            return self.snapshot
        finally:
            self._lock.release()

    def overlay(self, version: str, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """The current snapshot's (unavailable mask, live prices) for a version; None without a snapshot."""
        snap = self.snapshot
        if snap is None:
            return None
        key = (version, snap.etag)
        got = self._overlays.get(key)
        if got is None:
            got = snap.overlay(item_ids)
            self._overlays = {k: v for k, v in self._overlays.items() if k[1] == snap.etag}
            self._overlays[key] = got
        return got

    def health(self) -> dict[str, Any]:
        snap = self.snapshot
        return {
            "snapshot_id": snap.snapshot_id if snap else None,
            "items": int(snap.item_ids.shape[0]) if snap else 0,
            "age_seconds": None
            if self.checked_at == -float("inf")
            else round(self._clock() - self.checked_at, 1),
            "error": self.error,
        }


def s3_fetch(s3: Any, bucket: str, key: str) -> Fetch:
    """Read the snapshot object (None while the catalogue has never been ingested)."""

    def fetch() -> tuple[bytes, str] | None:
        try:
            resp = s3.get_object(Bucket=bucket, Key=key)
        except Exception as exc:
            code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
            if code in {"NoSuchKey", "404", "NotFound"}:
                return None
            raise
        return resp["Body"].read(), str(resp.get("ETag") or "")

    return fetch
