"""Server-side impression records, buffered and shipped to Kinesis Data Firehose off the hot path.

A served list costs the request one ``deque.append`` of a tuple (about a microsecond); a daemon
thread turns buffered lists into native-schema JSON lines (one ``impression`` row per item, as
docs/contracts.md says) and sends them with ``put_record_batch``, one Firehose record per served
list. Firehose concatenates records into objects under ``raw/events/`` of the raw bucket, where the
ingest picks them up like any JSON Lines file.

Trade-off, deliberately taken: Lambda freezes the thread between invocations and may discard the
environment, so up to ``max_age_seconds`` of impressions (or one batch) can be lost when an
environment is reclaimed. Rows carry no personal data: ``session_id`` is the recommendation id
itself (the schema wants one of user_id/session_id), the join key monitoring uses.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from shelfwise.events import SCHEMA_VERSION, derive_event_id
from shelfwise.observability import logger

MAX_BATCH_RECORDS = 500  # PutRecordBatch limit
MAX_BATCH_BYTES = 4 * 1024 * 1024 - 64 * 1024  # 4 MiB limit, with headroom

# (recommendation_id, variant, model_version, endpoint, k, epoch seconds, item ids, scores)
Served = tuple[str, str, str, str, int, float, Sequence[str], Sequence[float]]


def impression_rows(served: Served) -> list[dict[str, Any]]:
    """The native-schema impression rows of one served list, one per item, positions 0-based."""
    rec_id, variant, version, endpoint, k, ts, items, scores = served
    stamp = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    props = {"endpoint": endpoint, "k": k, "schema_version": SCHEMA_VERSION}
    return [
        {
            "event_id": derive_event_id("impression", rec_id, pos),
            "event_type": "impression",
            "session_id": rec_id,
            "item_id": item,
            "timestamp": stamp,
            "recommendation_id": rec_id,
            "position": pos,
            "score": round(float(score), 6),
            "variant": variant,
            "model_version": version,
            "properties": props,
        }
        for pos, (item, score) in enumerate(zip(items, scores, strict=True))
    ]


def encode(served: Served) -> bytes:
    """Newline-delimited JSON of one served list (a Firehose record); same rows as impression_rows.

    Hand-assembled from pre-encoded parts: it runs on the shipper thread, and every microsecond it
    holds the GIL is a microsecond a request in the same environment may wait.
    """
    rec_id, variant, version, endpoint, k, ts, items, scores = served
    stamp = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    rid = json.dumps(rec_id)
    head = '{"event_id":'
    common = f',"event_type":"impression","session_id":{rid},"item_id":'
    tail = (
        f',"timestamp":"{stamp}","recommendation_id":{rid},"variant":{json.dumps(variant)},'
        f'"model_version":{json.dumps(version)},"properties":'
        + json.dumps({"endpoint": endpoint, "k": k, "schema_version": SCHEMA_VERSION}, separators=(",", ":"))
    )
    lines = [
        f'{head}"{derive_event_id("impression", rec_id, pos)}"{common}{json.dumps(item)}{tail}'
        f',"position":{pos},"score":{round(float(score), 6)!r}}}\n'
        for pos, (item, score) in enumerate(zip(items, scores, strict=True))
    ]
    return "".join(lines).encode("utf-8", "surrogatepass")


class ImpressionSink:
    """Buffers served lists and ships them to a Firehose delivery stream in batches."""

    def __init__(
        self,
        firehose: Any,
        stream_name: str,
        *,
        max_records: int = 200,
        max_age_seconds: float = 2.0,
        max_buffer: int = 20_000,
        background: bool = True,
        clock: Callable[[], float] = time.monotonic,
        on_result: Callable[[int, int], None] | None = None,
    ) -> None:
        # A client, or a zero-argument factory called on the first flush (keeps client creation
        # off the cold start: it happens on the shipper thread).
        self._firehose, self.stream_name = firehose, stream_name
        self.max_records = min(max_records, MAX_BATCH_RECORDS)
        self.max_age_seconds = max_age_seconds
        self._buffer: deque[Served] = deque()
        self._max_buffer = max_buffer
        self._clock = clock
        self._oldest: float | None = None
        self._wake = threading.Event()
        self._flush_lock = threading.Lock()
        self._on_result = on_result
        self.sent = 0
        self.dropped = 0
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._run, name="impressions", daemon=True)
            self._thread.start()

    @property
    def firehose(self) -> Any:
        if callable(self._firehose) and not hasattr(self._firehose, "put_record_batch"):
            self._firehose = self._firehose()
        return self._firehose

    def record(self, served: Served) -> None:
        """Queue one served list (hot path: no I/O, no serialisation)."""
        if len(self._buffer) >= self._max_buffer:
            self._buffer.popleft()
            self.dropped += 1
        self._buffer.append(served)
        if self._oldest is None:
            self._oldest = self._clock()
        if len(self._buffer) >= self.max_records:
            self._wake.set()

    def pending(self) -> int:
        return len(self._buffer)

    def due(self) -> bool:
        """Whether the buffer should be shipped now (full, or its oldest entry is too old)."""
        if not self._buffer:
            return False
        old = self._oldest is not None and self._clock() - self._oldest >= self.max_age_seconds
        return old or len(self._buffer) >= self.max_records

    def _run(self) -> None:
        while True:
            self._wake.wait(timeout=max(self.max_age_seconds / 2, 0.05))
            self._wake.clear()
            if self.due():
                try:
                    self.flush()
                except Exception:  # keep the shipper alive whatever one batch does
                    logger.exception("impression flush failed")

    def flush(self) -> int:
        """Ship everything buffered now; returns the number of served lists delivered."""
        with self._flush_lock:
            delivered = 0
            while self._buffer:
                batch: list[bytes] = []
                size = 0
                while self._buffer and len(batch) < self.max_records:
                    time.sleep(0)  # hand the GIL to a waiting request between lists
                    data = encode(self._buffer[0])
                    if batch and size + len(data) > MAX_BATCH_BYTES:
                        break
                    self._buffer.popleft()
                    batch.append(data)
                    size += len(data)
                self._oldest = self._clock() if self._buffer else None
                delivered += self._send(batch)
            return delivered

    def _send(self, batch: list[bytes]) -> int:
        records = [{"Data": data} for data in batch]
        failed = 0
        for attempt in range(2):
            try:
                resp = self.firehose.put_record_batch(DeliveryStreamName=self.stream_name, Records=records)
            except Exception as exc:
                logger.warning(
                    "impression batch not delivered", extra={"records": len(records), "error": str(exc)}
                )
                failed = len(records)
                break
            failed = int(resp.get("FailedPutCount", 0))
            if not failed:
                break
            records = [
                rec
                for rec, res in zip(records, resp["RequestResponses"], strict=True)
                if res.get("ErrorCode")
            ]
            if attempt == 1:
                break
        sent = len(batch) - failed
        self.sent += sent
        self.dropped += failed
        if self._on_result is not None:
            self._on_result(sent, failed)
        return sent
