"""Typed domain errors. Each one is a failure that some caller handles differently."""


class ShelfwiseError(Exception):
    """Base class of every error the domain raises on purpose."""


class ConfigurationError(ShelfwiseError):
    """Configuration (environment, SSM, CLI flags) is missing or invalid; fail fast at start-up."""


class InputError(ShelfwiseError):
    """Input from outside (a file, a request, an event) cannot be used; the message says why."""


class NotFoundError(ShelfwiseError):
    """A named thing (object, model version, item, user) does not exist."""


class ConflictError(ShelfwiseError):
    """A write would overwrite something immutable (a model version, an output object)."""
