"""Helpers every benchmark uses: peak memory, percentiles and one JSON line last."""

from __future__ import annotations

import json
import resource
import sys
from typing import Any

import numpy as np


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def emit(result: dict[str, Any]) -> None:
    """Print the benchmark's result as the last line on stdout."""
    sys.stdout.write(json.dumps(result, sort_keys=False) + "\n")
    sys.stdout.flush()


def pct(values: list[float], q: float) -> float:
    """The ``q``-th percentile of ``values``, rounded to 3 decimals (milliseconds to the microsecond)."""
    return round(float(np.percentile(values, q)), 3)
