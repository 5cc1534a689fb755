"""Errors of the ingest, one per failure a caller handles differently."""

from __future__ import annotations

from shelfwise.errors import ConflictError, InputError, NotFoundError


class UnknownFormatError(InputError):
    """The object matches no supported format (the message lists the columns seen): never a guess."""


class CorruptInputError(InputError):
    """The object cannot be read to the end (truncated gzip, broken Parquet, a line over the limit).

    Nothing is written for it: outputs are committed only after the whole object was read.
    """


class SourceGoneError(NotFoundError):
    """The raw object (or the version named in the notification) no longer exists."""


class OutputConflictError(ConflictError):
    """An output object exists with different content than this run would write."""
