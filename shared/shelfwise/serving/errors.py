"""Errors of the serving functions that callers (the HTTP layer) map to distinct answers."""

from __future__ import annotations

from shelfwise.bundle_files import BundleError
from shelfwise.errors import NotFoundError, ShelfwiseError


class ModelUnavailableError(ShelfwiseError):
    """No version could ever be loaded, so there is nothing to serve (503, retry later)."""


class ItemNotFoundError(NotFoundError):
    """The item asked about is not in the served catalogue (404)."""


class DeliveryError(ShelfwiseError):
    """Firehose accepted none of the events; the client should retry (503)."""


class ModelLoadError(BundleError):
    """A version could not be loaded (download, checksum, graph or session); the old one stays."""
