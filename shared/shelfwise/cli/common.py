"""What every ``shelfwise`` command shares: the JSON last line, and user errors without tracebacks.

A command's ``main(argv) -> int`` is wrapped by :func:`command`: an error caused by the input (a
missing or malformed file, bad JSON, an invalid value, a missing model version) exits 2; a failure
(AWS credentials, throttling, a missing bucket, a conflict) exits 1. Either way the user sees one
line on stderr and, for commands that print JSON, one JSON error object on stdout. Anything else
is a bug and keeps its traceback; ``SHELFWISE_DEBUG=1`` shows tracebacks for every error.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from shelfwise.errors import ConfigurationError, InputError, NotFoundError, ShelfwiseError

BAD_INPUT = 2
FAILURE = 1

Main = Callable[[list[str]], int]


def classify(exc: BaseException) -> tuple[int, str] | None:
    """(exit code, one-line message) for an error the user can act on; None for a bug."""
    if isinstance(exc, InputError | ConfigurationError | NotFoundError):
        return BAD_INPUT, str(exc)
    if isinstance(exc, ShelfwiseError):
        return FAILURE, str(exc)
    if isinstance(exc, FileNotFoundError | IsADirectoryError | NotADirectoryError | PermissionError):
        return BAD_INPUT, f"{exc.strerror or type(exc).__name__}: {exc.filename}"
    if isinstance(exc, json.JSONDecodeError):
        return BAD_INPUT, f"not valid JSON: {exc}"
    if isinstance(exc, UnicodeDecodeError):
        return BAD_INPUT, f"not UTF-8 text: {exc.reason} at byte {exc.start}"
    if isinstance(exc, ValueError):
        return BAD_INPUT, str(exc) or type(exc).__name__
    try:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
    except ImportError:  # pragma: no cover - boto3 is a dependency of every extra
        return None
    if isinstance(exc, NoCredentialsError):
        return (
            FAILURE,
            "AWS credentials not found (set AWS_PROFILE or AWS_ACCESS_KEY_ID, or use the emulator)",
        )
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        op = getattr(exc, "operation_name", "") or "AWS call"
        return FAILURE, f"AWS {op} failed: {err.get('Code', 'Error')}: {err.get('Message', '')}".rstrip(": ")
    if isinstance(exc, BotoCoreError):
        return FAILURE, f"AWS: {exc}"
    return None


def report_error(prog: str, exc: BaseException, *, json_output: bool) -> int | None:
    """Print the one-line error (and the JSON error object); the exit code, or None for a bug."""
    found = classify(exc)
    if found is None or os.environ.get("SHELFWISE_DEBUG"):
        return None
    code, message = found
    message = " ".join(message.split())  # one line
    print(f"{prog}: error: {message}", file=sys.stderr)
    if json_output:
        emit({"error": type(exc).__name__, "message": message, "exit_code": code})
    return code


def command(prog: str, *, json_output: bool = True) -> Callable[[Main], Main]:
    """Wrap a command's ``main`` so user errors end in a clear line and an exit code, not a traceback."""

    def wrap(main: Main) -> Main:
        @functools.wraps(main)
        def run(argv: list[str]) -> int:
            try:
                return int(main(argv) or 0)
            except Exception as exc:
                code = report_error(prog, exc, json_output=json_output)
                if code is None:
                    raise
                return code

        return run

    return wrap


def plain(text: str | None) -> str:
    """Help text without reStructuredText markup (``code``, :func:`name`), as a terminal shows it."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text or "")
    return text.replace("``", "")


def emit(result: Any) -> None:
    """The command's result: one JSON object, the last line on stdout."""
    sys.stdout.write(json.dumps(result, default=str) + "\n")
    sys.stdout.flush()


def read_table(path: str, fmt: str, min_time: str | None = None) -> Any:
    """Events from a local file in any format the ingest understands (``curated`` = curated Parquet).

    ``min_time`` (ISO date or time, UTC): events before it are dropped as out of range; by default
    only those before the Unix epoch are.
    """
    if fmt == "curated":
        import pyarrow.parquet as pq

        return pq.read_table(path)
    from shelfwise.ingest import read_events

    if min_time is None:
        return read_events(path, fmt)
    return read_events(path, fmt, min_ts_ms=min_time_ms(min_time))


def min_time_ms(value: str) -> int:
    """``--min-time`` (ISO date or time, UTC) as the ingest's floor, in epoch milliseconds."""
    from shelfwise.time_floor import floor_ms

    return floor_ms(value, "--min-time")
