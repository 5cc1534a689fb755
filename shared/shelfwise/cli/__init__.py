"""The ``shelfwise`` command: a thin dispatcher over the ``shelfwise.commands`` entry points.

The platform's commands live together in this package (``ingest``, ``simulate``, ``train`` and
``evaluate``, ``models``, ``report``); the development tooling registers its own (``local``,
``bench``, ``demo`` in ``shelfwise_local``), so the domain package never imports it. A command is
imported only when it runs. Commands print human progress on stderr and one JSON object last on
stdout; user errors end in one line on stderr and exit 2 (bad input) or 1 (failure).
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, entry_points, version

from shelfwise.cli.common import report_error

GROUP = "shelfwise.commands"

# One line per command for `shelfwise --help` (kept here so help imports no command).
DESCRIPTIONS = {
    "ingest": "raw event files to curated Parquet, bad rows to quarantine",
    "simulate": "write a simulated shop's event files, or print a log's realism figures",
    "train": "train, evaluate and export a model bundle; optionally register it",
    "evaluate": "the offline evaluation protocol on any event log",
    "models": "the model registry: list, show, promote, roll back, canary",
    "report": "HTML monitoring report with charts of the metric history",
    "local": "run template.yaml locally on an AWS emulator, or invoke one function",
    "bench": "benchmarks that print figures",
    "demo": "the whole loop on the local runtime: simulate, ingest, train, serve, monitor, roll back",
}


def _commands() -> dict[str, object]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def _version() -> str:
    try:
        return version("shelfwise")
    except PackageNotFoundError:
        return "unknown"


def usage(commands: dict[str, object]) -> str:
    width = max((len(n) for n in commands), default=8)
    lines = [
        "usage: shelfwise [--version] [--help] COMMAND [ARGS]",
        "",
        "Shelfwise: ingest shop events, train recommendation models, serve and monitor them.",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {DESCRIPTIONS.get(name, '')}".rstrip() for name in sorted(commands)]
    lines += ["", "Run `shelfwise COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    commands = _commands()
    if not args:
        print(usage(commands), file=sys.stderr)
        return 2
    if args[0] in {"-h", "--help", "help"}:
        print(usage(commands))
        return 0
    if args[0] == "--version":
        print(f"shelfwise {_version()}")
        return 0
    name, rest = args[0], args[1:]
    if name not in commands:
        print(
            f"shelfwise: error: unknown command {name!r}; known: {', '.join(sorted(commands))}",
            file=sys.stderr,
        )
        return 2
    run = commands[name].load()  # type: ignore[attr-defined]
    try:
        return int(run(rest) or 0)
    except Exception as exc:  # commands wrap their own; this catches those that do not
        code = report_error(f"shelfwise {name}", exc, json_output=True)
        if code is None:
            raise
        return code
