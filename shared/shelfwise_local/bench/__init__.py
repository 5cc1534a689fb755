"""`shelfwise bench NAME ...`: benchmarks that print figures, one JSON line last.

Each benchmark is a module ``shelfwise_local.bench.<name>`` with ``main(argv) -> int``. Timing is
never asserted anywhere: these machines are shared and noisy, so every benchmark measures its
baseline in the same process and run, and reports the ratio.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys


def _names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def main(argv: list[str]) -> int:
    names = _names()
    if not argv or argv[0] in {"-h", "--help"}:
        usage = f"usage: shelfwise bench {{{','.join(names)}}} [ARGS]\n\nRun `shelfwise bench NAME --help` for a benchmark's options."
        print(usage, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] not in names:
        print(f"shelfwise bench: unknown benchmark {argv[0]!r}; known: {', '.join(names)}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"{__name__}.{argv[0]}")
    return int(module.main(argv[1:]) or 0)
