"""shelfwise.powertools_internals is written against one Powertools version: this pins it."""

from __future__ import annotations

from importlib.metadata import version

import pytest

from shelfwise import powertools_internals

pytestmark = pytest.mark.unit


def test_powertools_is_the_version_the_internals_were_written_against() -> None:
    installed = version("aws-lambda-powertools")
    assert installed == powertools_internals.PINNED_VERSION, (
        f"aws-lambda-powertools {installed} is installed, but shelfwise/powertools_internals/ "
        f"reaches into the private code of {powertools_internals.PINNED_VERSION}: re-read the parts "
        "its docstring names against the new version, adjust them, then update PINNED_VERSION"
    )


def test_the_pin_matches_the_layer() -> None:
    from pathlib import Path

    reqs = (Path(__file__).resolve().parents[2] / "layers/base/requirements.txt").read_text()
    assert f"aws-lambda-powertools[tracer]=={powertools_internals.PINNED_VERSION}" in reqs
