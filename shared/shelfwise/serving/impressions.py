"""Server-side impression records, buffered and shipped to Kinesis Data Firehose off the hot path.

A served list costs the request one ``deque.append`` of a tuple (about a microsecond); a daemon
thread turns buffered lists into native-schema JSON lines (one ``impression`` row per item, as
docs/contracts.md says) and sends them with ``put_record_batch``, several served lists per Firehose
record. Firehose concatenates records into objects under ``raw/events/`` of the raw bucket, where the
ingest picks them up like any JSON Lines file.

Trade-off, deliberately taken: Lambda freezes the thread between invocations and may discard the
environment, so up to ``max_age_seconds`` of impressions (or one batch) can be lost when an
environment is reclaimed. Rows carry no personal data: ``session_id`` is the recommendation id
itself (the schema wants one of user_id/session_id), the join key monitoring uses.
"""

from __future__ import annotations

import hashlib
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
MAX_RECORD_BYTES = 1000 * 1024 - 16 * 1024  # 1,000 KiB per record, with headroom

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


def _json_string(text: str) -> str:
    """``json.dumps(text)``, without the encoder's overhead for the plain ids that are the rule."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    return json.dumps(text)


def encode(served: Served) -> bytes:
    """Newline-delimited JSON of one served list; same rows as impression_rows, same bytes.

    Hand-assembled from pre-encoded parts: it runs on the shipper thread, and every microsecond it
    holds the GIL is a microsecond a request in the same environment may wait. The event ids are
    ``derive_event_id("impression", rec_id, pos)``, with the hash of the common prefix computed once.
    """
    rec_id, variant, version, endpoint, k, ts, items, scores = served
    stamp = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    rid = json.dumps(rec_id)
    common = f'","event_type":"impression","session_id":{rid},"item_id":'
    tail = (
        f',"timestamp":"{stamp}","recommendation_id":{rid},"variant":{json.dumps(variant)},'
        f'"model_version":{json.dumps(version)},"properties":'
        + json.dumps({"endpoint": endpoint, "k": k, "schema_version": SCHEMA_VERSION}, separators=(",", ":"))
    )
    prefix = hashlib.blake2b(digest_size=12)
    prefix.update(b"impression\x1e" + str(rec_id).encode("utf-8", "surrogatepass") + b"\x1e")
    lines = []
    for pos, (item, score) in enumerate(zip(items, scores, strict=True)):
        h = prefix.copy()
        h.update(b"%d\x1e" % pos)
        lines.append(
            f'{{"event_id":"{h.hexdigest()}{common}{_json_string(item)}{tail}'
            f',"position":{pos},"score":{round(float(score), 6)!r}}}\n'
        )
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
        max_record_bytes: int = MAX_RECORD_BYTES,
        background: bool = True,
        clock: Callable[[], float] = time.monotonic,
        on_result: Callable[[int, int], None] | None = None,
    ) -> None:
        # A client, or a zero-argument factory called on the first flush (keeps client creation
        # off the cold start: it happens on the shipper thread).
        self._firehose, self.stream_name = firehose, stream_name
        self.max_records = min(max_records, MAX_BATCH_RECORDS)
        self.max_age_seconds = max_age_seconds
        self.max_record_bytes = min(max_record_bytes, MAX_RECORD_BYTES)
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
        """Ship everything buffered now; returns the number of served lists delivered.

        Several served lists share one Firehose record (up to ``max_record_bytes``): Firehose
        writes record bytes to S3 as they are, so the objects hold the same JSON lines, and
        botocore serialises a few large blobs instead of hundreds of small ones, which was most
        of a flush's CPU (time the shipper thread holds the GIL).
        """
        with self._flush_lock:
            delivered = 0
            while self._buffer:
                records: list[tuple[bytes, int]] = []  # (newline-delimited lists, lists in it)
                parts: list[bytes] = []
                part_size = size = lists = 0
                while self._buffer and lists < self.max_records:
                    time.sleep(0)  # hand the GIL to a waiting request between lists
                    data = encode(self._buffer[0])
                    if size + len(data) > MAX_BATCH_BYTES and lists:
                        break
                    if parts and part_size + len(data) > self.max_record_bytes:
                        records.append((b"".join(parts), len(parts)))
                        parts, part_size = [], 0
                    self._buffer.popleft()
                    parts.append(data)
                    part_size += len(data)
                    size += len(data)
                    lists += 1
                if parts:
                    records.append((b"".join(parts), len(parts)))
                self._oldest = self._clock() if self._buffer else None
                delivered += self._send(records)
            return delivered

    def _send(self, batch: list[tuple[bytes, int]]) -> int:
        """Put the records (retrying failed ones once); counts delivered and dropped lists."""
        pending = batch
        for attempt in range(2):
            records = [{"Data": data} for data, _ in pending]
            try:
                resp = self.firehose.put_record_batch(DeliveryStreamName=self.stream_name, Records=records)
            except Exception as exc:
                logger.warning(
                    "impression batch not delivered", extra={"records": len(records), "error": str(exc)}
                )
                break
            if not int(resp.get("FailedPutCount", 0)):
                pending = []
                break
            pending = [
                rec
                for rec, res in zip(pending, resp["RequestResponses"], strict=True)
                if res.get("ErrorCode")
            ]
            if attempt == 1:
                break
        failed = sum(n for _, n in pending)
        sent = sum(n for _, n in batch) - failed
        self.sent += sent
        self.dropped += failed
        if self._on_result is not None:
            self._on_result(sent, failed)
        return sent
