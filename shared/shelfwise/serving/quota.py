"""Per-client request quotas: each API client gets its own requests per minute, across all
execution environments.

API Gateway HTTP APIs throttle per stage and per route, not per caller (they have no usage plans),
so one client could use the whole stage's rate. Here every client (the principal API Gateway
authenticated; the source IP on the explicitly open API) has a counter per minute in a DynamoDB
table, and an execution environment leases requests from it in blocks with one conditional
``UpdateItem`` (``ADD used :block`` only while ``used <= limit - block``). Blocks keep the table
off the request path (one call per block, not per request); the total leased per minute never
exceeds the limit, so a client over it gets 429 from every environment. A table that cannot be
reached lets requests through (counted as ``QuotaUnavailable``) and is not asked again for
``RETRY_SECONDS``: availability before metering, and no request waits on a table that is down.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shelfwise.observability import logger, metrics

WINDOW_SECONDS = 60
RETRY_SECONDS = 30.0
_CONDITION_FAILED = "ConditionalCheckFailedException"


@dataclass
class _Lease:
    window: int
    left: int


class ClientQuota:
    """``admit(client)``: whether one more request of ``client`` fits its quota this minute."""

    def __init__(
        self,
        dynamodb: Any,
        table: str,
        limit_per_minute: int,
        clock: Callable[[], float],
        *,
        block: int | None = None,
    ) -> None:
        if limit_per_minute < 1:
            raise ValueError("a client quota needs a limit of at least 1 request per minute")
        self.dynamodb, self.table, self.limit, self.clock = dynamodb, table, limit_per_minute, clock
        # Small blocks for small limits (a block is what one environment may hold unused).
        self.block = block or max(1, min(50, limit_per_minute // 20))
        self._leases: dict[str, _Lease] = {}
        self._lock = threading.Lock()
        self._down_until = 0.0

    def admit(self, client: str) -> bool:
        now = self.clock()
        if now < self._down_until:
            return True
        window = int(now // WINDOW_SECONDS)
        with self._lock:
            lease = self._leases.get(client)
            if lease is not None and lease.window == window and lease.left > 0:
                lease.left -= 1
                return True
        for size in dict.fromkeys((self.block, 1)):  # a whole block, else the last requests
            granted = self._lease(client, window, size)
            if granted is None:  # table unreachable: let it through, and leave the table alone a while
                self._down_until = now + RETRY_SECONDS
                return True
            if granted:
                with self._lock:
                    if len(self._leases) > 10_000:
                        self._leases.clear()
                    self._leases[client] = _Lease(window, size - 1)
                return True
        return False

    def _lease(self, client: str, window: int, size: int) -> bool | None:
        try:
            self.dynamodb.update_item(
                TableName=self.table,
                Key={"pk": {"S": f"{client}#{window}"}},
                UpdateExpression="ADD used :n SET expires_at = :exp",
                ConditionExpression="attribute_not_exists(used) OR used <= :room",
                ExpressionAttributeValues={
                    ":n": {"N": str(size)},
                    ":room": {"N": str(self.limit - size)},
                    ":exp": {"N": str((window + 2) * WINDOW_SECONDS)},
                },
            )
        except Exception as exc:
            code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
            if code == _CONDITION_FAILED:
                return False
            metrics.add_metric(name="QuotaUnavailable", unit="Count", value=1)
            logger.warning(
                "client quota table unavailable; request let through", extra={"error": code or str(exc)[:200]}
            )
            return None
        return True
