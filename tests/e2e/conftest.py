"""End-to-end tier: the real template.yaml in the local runtime, on the selected emulator.

SHELFWISE_BACKEND=moto (default) or localstack (SHELFWISE_LOCALSTACK_ENDPOINT). A LocalStack leg
whose emulator does not answer stops the session with an error; it never skips silently.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shelfwise_local.runtime import LocalRuntime
from shelfwise_local.runtime.emulator import EmulatorError
from shelfwise_local.runtime.httpapi import LOCAL_API_PARAMETERS
from shelfwise_local.runtime.testing import backend_from_env, check_backend, new_runtime

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "template.yaml"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)
    try:
        check_backend()
    except EmulatorError as exc:
        pytest.exit(f"EMULATOR NOT AVAILABLE for the {backend_from_env()} leg: {exc}", returncode=3)


@pytest.fixture
def stack() -> Iterator[LocalRuntime]:
    """The product's template.yaml, running on the selected emulator."""
    runtime = new_runtime(TEMPLATE, parameters=LOCAL_API_PARAMETERS)
    try:
        yield runtime
    finally:
        runtime.close()
