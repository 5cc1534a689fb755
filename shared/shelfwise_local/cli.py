"""``shelfwise local``: run template.yaml locally (``up``) or invoke one function (``invoke``).

``up`` starts the emulator (embedded moto by default), creates the stack, serves the HTTP API on a
loopback port and delivers events (queues every second, schedules and alarms on wall time) until
Ctrl-C. ``invoke`` runs one function once with an event file, like ``sam local invoke`` without
Docker. Progress goes to stderr; one JSON object goes last to stdout.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from shelfwise.cli.common import plain


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shelfwise local", description=plain(__doc__.splitlines()[0]))
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--template", default="template.yaml", help="SAM template (default: template.yaml)")
        sp.add_argument(
            "--backend",
            default="moto",
            help="moto (embedded, default), localstack (SHELFWISE_LOCALSTACK_ENDPOINT or :4566) or an endpoint URL",
        )
        sp.add_argument(
            "--stack-name", default="shelfwise-local", help="prefix of the created resources' names"
        )
        sp.add_argument(
            "--param", action="append", default=[], metavar="KEY=VALUE", help="template parameter override"
        )

    up = sub.add_parser("up", help="start everything and serve until Ctrl-C")
    common(up)
    up.add_argument("--port", type=int, default=3000, help="HTTP API port (0 = any free port)")
    up.add_argument("--tick", type=float, default=1.0, help="seconds between delivery rounds")

    inv = sub.add_parser("invoke", help="invoke one function with an event file")
    common(inv)
    inv.add_argument("function", help="logical id (IngestEventsFunction), folder name or physical name")
    inv.add_argument("--event", required=True, help="JSON event file ('-' for stdin)")
    inv.add_argument("--pump", action="store_true", help="afterwards, deliver what the call triggered")
    return p


def _params(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"shelfwise local: --param needs KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    from shelfwise_local.runtime import Clock, FunctionError, LocalRuntime

    if args.command == "invoke":
        text = sys.stdin.read() if args.event == "-" else Path(args.event).read_text()
        event = json.loads(text)
        with LocalRuntime(
            args.template, backend=args.backend, stack_name=args.stack_name, parameters=_params(args.param)
        ) as rt:
            try:
                payload: Any = rt.invoke(args.function, event)
                result: dict[str, Any] = {"function": args.function, "payload": payload}
                code = 0
            except FunctionError as exc:
                result, code = {"function": args.function, "error": exc.error}, 1
            if args.pump:
                result["delivered"] = rt.pump()
            result["invocations"] = [
                {"function": i.function, "ok": i.ok, "duration_ms": round(i.duration_ms, 1)}
                for i in rt.invocations
            ]
        print(json.dumps(result, default=str))
        return code

    from shelfwise_local.runtime.httpapi import with_local_api_parameters

    params = with_local_api_parameters(args.template, _params(args.param))
    rt = LocalRuntime(
        args.template,
        backend=args.backend,
        stack_name=args.stack_name,
        parameters=params,
        clock=Clock(follow_wall=True),
        api_port=args.port,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with rt:
        info = rt.describe()
        api = next(iter(info["api_urls"].values()), None)
        print(f"shelfwise local: emulator ({info['emulator']}) at {rt.endpoint_url}", file=sys.stderr)
        print(f"shelfwise local: HTTP API at {api or '(no HttpApi routes in the template)'}", file=sys.stderr)
        if params.get("ApiAuth") == "NONE":
            print(
                "shelfwise local: WARNING: the API runs OPEN (ApiAuth=NONE): anyone who can reach "
                "this port may call every route, POST /v1/events included. Deployed stacks default to "
                "ApiAuth=AWS_IAM; pass --param ApiAuth=AWS_IAM to see that behaviour locally.",
                file=sys.stderr,
            )
        if info["warnings"]:  # each was logged as it happened; the count is the reminder
            print(
                f"shelfwise local: {len(info['warnings'])} resource(s) not emulated (see above)",
                file=sys.stderr,
            )
        print(f"export AWS_ENDPOINT_URL={rt.endpoint_url}", file=sys.stderr)
        print(json.dumps({"api_url": api, **info}), flush=True)
        print("shelfwise local: serving; Ctrl-C to stop", file=sys.stderr)
        try:
            while not stop.is_set():
                try:
                    rt.run_pending()
                except Exception as exc:  # keep serving; show what broke
                    print(f"shelfwise local: delivery error: {exc!r}", file=sys.stderr)
                stop.wait(args.tick)
        except KeyboardInterrupt:
            pass
    print("shelfwise local: stopped", file=sys.stderr)
    return 0
