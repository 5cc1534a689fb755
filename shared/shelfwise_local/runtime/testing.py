"""Helpers the integration and e2e suites share: which emulator, and a runtime per test.

``SHELFWISE_BACKEND`` picks the emulator: ``moto`` (default, embedded per runtime) or
``localstack`` (``SHELFWISE_LOCALSTACK_ENDPOINT``, default http://127.0.0.1:4566). A LocalStack
leg that cannot reach its emulator must fail loudly, never skip: ``check_backend`` raises.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shelfwise_local.runtime.clock import Clock
from shelfwise_local.runtime.emulator import Emulator, EmulatorError
from shelfwise_local.runtime.runtime import LocalRuntime

BACKENDS = ("moto", "localstack")


def backend_from_env() -> str:
    backend = os.environ.get("SHELFWISE_BACKEND", "moto").strip().lower()
    if backend not in BACKENDS:
        raise EmulatorError(f"SHELFWISE_BACKEND={backend!r}; expected one of {BACKENDS}")
    return backend


def check_backend() -> str:
    """The backend in use; for LocalStack, raise unless it answers right now."""
    backend = backend_from_env()
    if backend == "localstack":
        url = os.environ.get("SHELFWISE_LOCALSTACK_ENDPOINT") or "http://127.0.0.1:4566"
        emulator = Emulator.connect(url, timeout=15)
        if emulator.kind != "localstack":
            raise EmulatorError(f"{url} answers but is not LocalStack")
    return backend


def fixed_clock() -> Clock:
    """A frozen clock at 30 s past the current hour: recent enough for any emulator's metric
    store, aligned so hourly cron schedules and 60 s alarm periods fall on known instants."""
    now = datetime.now(tz=UTC).timestamp()
    return Clock(start=(now // 3600) * 3600 + 30)


def new_runtime(template: str | Path, **kwargs: Any) -> LocalRuntime:
    """A started runtime on the selected backend, with a unique stack name (LocalStack is shared)."""
    kwargs.setdefault("clock", fixed_clock())
    kwargs.setdefault("stack_name", f"t{uuid.uuid4().hex[:8]}")
    kwargs.setdefault("quiet", True)
    return LocalRuntime(template, backend=backend_from_env(), **kwargs).start()
