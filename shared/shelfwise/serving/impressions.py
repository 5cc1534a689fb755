"""Server-side impressions: one structured log line per served list, shipped by CloudWatch Logs.

A served list costs the request one compact JSON line written to stdout (``served_list_line``,
about 10-20 microseconds of CPU for 20 items; no thread, no client, no buffer). In Lambda, stdout
is the function's log group; the template's subscription filter ``{ $.shelfwise = "served_list" }``
hands those lines, and only those, to a Firehose stream that decompresses them, extracts the
messages and writes them, one per line, under ``raw/impressions/`` of the raw bucket. The ingest
expands each line into the native ``impression`` rows (``served_list_rows``): one per item, the
same rows ``impression_rows`` defines (the contract: :mod:`shelfwise.served_lists`).

Why a log line rather than an in-process buffer shipped by a thread: Lambda freezes the
environment between invocations, so a shipper thread only runs while a request is being handled
and takes the GIL from it (it cost the handler's p99 several milliseconds), and a reclaimed
environment lost its unsent buffer. A log line is written synchronously and is durable once
written. Rows carry no personal data: ``session_id`` is the recommendation id itself (the schema
wants one of user_id/session_id), the join key monitoring uses.
"""

from __future__ import annotations

import sys
from typing import TextIO

from shelfwise.observability import logger

# The contract lives in shelfwise.served_lists (ingest reads it too); re-exported for callers here.
from shelfwise.served_lists import (
    FILTER_PATTERN,
    MARKER_KEY,
    MAX_SERVED_ITEMS,
    SERVED_LIST,
    Served,
    ServedListError,
    impression_rows,
    is_served_list,
    served_list_line,
    served_list_rows,
    user_hash,
)

__all__ = [
    "FILTER_PATTERN",
    "MARKER_KEY",
    "MAX_SERVED_ITEMS",
    "SERVED_LIST",
    "ImpressionSink",
    "Served",
    "ServedListError",
    "impression_rows",
    "is_served_list",
    "served_list_line",
    "served_list_rows",
    "user_hash",
]


class ImpressionSink:
    """Records served lists as served-list log lines on stdout (or on the stream given).

    ``record`` is the hot path: format one line, one ``write``. The stream is looked up at every
    call when none was given, so a redirected ``sys.stdout`` (the local runtime captures each
    invocation's output that way) is honoured. Lambda's Python runtime writes stdout unbuffered:
    one ``write`` of the whole line is one log event.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self.recorded = 0
        self.dropped = 0

    def record(self, served: Served) -> None:
        """Write the served list's line; never raises into the request (a failure is logged)."""
        try:
            line = served_list_line(served)
            (self._stream or sys.stdout).write(line)
        except Exception as exc:
            self.dropped += 1
            logger.warning("impression not recorded", extra={"error": str(exc)})
            return
        self.recorded += 1

    def pending(self) -> int:
        """Served lists held in the process: none (each is written when it is served)."""
        return 0
