"""The ``shelfwise`` command: a thin dispatcher over the ``shelfwise.commands`` entry points.

Each sub-command lives next to the code it drives (``shelfwise.ingest.cli`` ...) and is imported
only when it runs. Commands print human progress on stderr and one JSON object last on stdout.
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points

GROUP = "shelfwise.commands"


def _commands() -> dict[str, object]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    commands = _commands()
    if not args or args[0] in {"-h", "--help", "help"}:
        print("usage: shelfwise COMMAND [ARGS]\n\ncommands:", file=sys.stderr)
        for name in sorted(commands):
            print(f"  {name}", file=sys.stderr)
        print("\nrun `shelfwise COMMAND --help` for a command's options", file=sys.stderr)
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in commands:
        print(f"shelfwise: unknown command {name!r}; known: {', '.join(sorted(commands))}", file=sys.stderr)
        return 2
    run = commands[name].load()  # type: ignore[attr-defined]
    return int(run(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
