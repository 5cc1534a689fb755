"""The `shelfwise` command line: help on stdout, --version, help texts, user errors without tracebacks."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from shelfwise.cli import DESCRIPTIONS, main
from shelfwise.cli import ingest as ingest_cli
from shelfwise.cli import models as models_cli
from shelfwise.cli import report as report_cli
from shelfwise.cli import simulate as simulate_cli
from shelfwise.cli import train as train_cli

pytestmark = pytest.mark.unit

PARSERS = {
    "ingest": ingest_cli.parser,
    "simulate": simulate_cli.parser,
    "train": train_cli.train_parser,
    "evaluate": train_cli.evaluate_parser,
    "models": models_cli.parser,
    "report": report_cli.parser,
}


def _last_json(out: str) -> dict[str, object]:
    return json.loads(out.strip().splitlines()[-1])


def test_help_goes_to_stdout_with_a_line_per_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    for name in PARSERS:
        line = next(x for x in out.splitlines() if x.strip().startswith(name + " "))
        assert DESCRIPTIONS[name] in line
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("shelfwise ")


def _actions(p: argparse.ArgumentParser) -> list[tuple[str, argparse.Action]]:
    out = []
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += [(f"{name} {n}", a) for n, a in _actions(sub)]
        elif not isinstance(action, argparse._HelpAction):
            out.append((action.dest, action))
    return out


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_option_has_plain_help(name: str) -> None:
    p = PARSERS[name]()
    assert p.description and "``" not in p.description and ":func:" not in p.description
    for dest, action in _actions(p):
        assert action.help, f"shelfwise {name}: {dest} has no help text"
        assert "``" not in action.help and ":func:" not in action.help, (name, dest)


def test_missing_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ingest", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o")]) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert _last_json(out)["exit_code"] == 2
    assert main(["report", "--history-file", str(tmp_path / "nope.jsonl")]) == 2
    out, err = capsys.readouterr()
    assert "nope.jsonl" in err and _last_json(out)["error"] == "FileNotFoundError"


def test_malformed_json_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "h.jsonl"
    bad.write_text('{"metric": \n')
    assert main(["report", "--history-file", str(bad), "--out", str(tmp_path / "r.html")]) == 2
    out, err = capsys.readouterr()
    assert "not valid JSON" in err and _last_json(out)["error"] == "JSONDecodeError"


def test_aws_failures_exit_1(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from moto import mock_aws

    with mock_aws():
        # A bucket that does not exist: the AWS error, named, in one line.
        assert main(["models", "--bucket", "no-such-bucket", "list"]) == 1
    out, err = capsys.readouterr()
    assert "NoSuchBucket" in err and "Traceback" not in err
    assert _last_json(out)["exit_code"] == 1


def test_stats_on_a_directory_the_simulator_wrote(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "shop"
    argv = [
        "simulate",
        "--users",
        "30",
        "--items",
        "100",
        "--days",
        "1",
        "--seed",
        "3",
        "--out",
        str(out_dir),
    ]
    assert main(argv) == 0
    assert (out_dir / "catalogue.parquet").exists()
    capsys.readouterr()
    assert main(["simulate", "--stats", str(out_dir)]) == 0
    figures = _last_json(capsys.readouterr().out)
    assert figures["path"] == str(out_dir)
    assert figures["events"] == _last_json_events(out_dir)


def _last_json_events(out_dir: Path) -> int:
    from shelfwise.ingest import read_events

    return read_events(out_dir / "events").num_rows
