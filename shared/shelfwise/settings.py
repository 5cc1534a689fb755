"""Configuration as a validated contract: parsed once at cold start, failing fast when wrong."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from shelfwise.errors import ConfigurationError

T = TypeVar("T", bound=BaseModel)


def load_settings(model: type[T], environ: Mapping[str, str] | None = None) -> T:
    """Build ``model`` from environment variables named like its fields in upper case.

    Only handlers call this (domain code receives the settings object). A missing or invalid
    variable raises ``ConfigurationError`` naming it, so a misconfigured function fails at cold
    start instead of half-working.
    """
    env = os.environ if environ is None else environ
    values = {name: env[name.upper()] for name in model.model_fields if name.upper() in env}
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        fields = ", ".join(str(e["loc"][0]).upper() for e in exc.errors() if e["loc"])
        raise ConfigurationError(f"invalid or missing configuration: {fields}: {exc}") from exc
