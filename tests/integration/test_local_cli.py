"""`shelfwise local invoke` and `shelfwise local up` against the selected emulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from shelfwise_local.cli import main
from shelfwise_local.runtime.testing import backend_from_env

TEMPLATE = Path(__file__).resolve().parents[1] / "templates" / "runtime.yaml"


def _backend_args(stack: str | None = None) -> list[str]:
    stack = stack or f"cli{os.getpid()}{int(time.time() * 1000) % 100000}"
    return ["--backend", backend_from_env(), "--stack-name", stack]


def test_invoke_prints_the_payload_as_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    event = tmp_path / "event.json"
    event.write_text('{"hello": "world"}')
    stack = f"cli{os.getpid()}x{int(time.time() * 1000) % 100000}"
    code = main(["invoke", "tick", "--template", str(TEMPLATE), "--event", str(event), *_backend_args(stack)])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0
    assert out["payload"]["event"] == {"hello": "world"}
    assert out["payload"]["function"].startswith(f"{stack}-TickFunction-")  # the context's function name


def test_invoke_reports_a_handler_error_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    event = tmp_path / "event.json"
    event.write_text('{"routeKey": "GET /boom"}')
    code = main(
        ["invoke", "ApiFunction", "--template", str(TEMPLATE), "--event", str(event), *_backend_args()]
    )
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 1 and out["error"]["errorType"] == "ValueError"


def test_up_serves_the_api_until_terminated() -> None:
    env = {**os.environ}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shelfwise.cli",
            "local",
            "up",
            "--template",
            str(TEMPLATE),
            "--port",
            "0",
            *_backend_args(),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the JSON description, printed once everything is up
        info = json.loads(line)
        assert info["endpoint_url"].startswith("http://127.0.0.1:")
        with urllib.request.urlopen(f"{info['api_url']}/items/7", timeout=30) as resp:
            assert json.loads(resp.read())["pathParameters"] == {"item_id": "7"}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0
