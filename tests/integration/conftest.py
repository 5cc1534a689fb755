"""Integration tier: the local runtime against a real emulator over HTTP, on a test template.

The emulator comes from SHELFWISE_BACKEND (moto by default; ``localstack`` uses
SHELFWISE_LOCALSTACK_ENDPOINT). A LocalStack leg whose emulator does not answer stops the whole
session with an error: it never skips silently.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shelfwise_local.runtime import LocalRuntime
from shelfwise_local.runtime.emulator import EmulatorError
from shelfwise_local.runtime.testing import backend_from_env, check_backend, new_runtime

TEST_TEMPLATE = Path(__file__).resolve().parents[1] / "templates" / "runtime.yaml"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)
    try:
        check_backend()
    except EmulatorError as exc:
        pytest.exit(f"EMULATOR NOT AVAILABLE for the {backend_from_env()} leg: {exc}", returncode=3)


@pytest.fixture
def backend() -> str:
    return backend_from_env()


@pytest.fixture
def rt() -> Iterator[LocalRuntime]:
    """The test stack (tests/templates/runtime.yaml) running on the selected emulator."""
    runtime = new_runtime(TEST_TEMPLATE)
    try:
        yield runtime
    finally:
        runtime.close()
