"""``python -m shelfwise.cli``: the ``shelfwise`` command."""

from shelfwise.cli import main

raise SystemExit(main())
