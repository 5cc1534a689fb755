"""Run a template's Lambda handlers in this process, the way Lambda would.

Each function's module is imported in isolation under its own module name (every handler file
is called ``app.py``), with that function's environment variables in place, once per runtime
(a cold start); later invocations reuse it (warm). Each invocation gets a real context object
(name, memory, ARN, request id, remaining time), runs under the function's timeout, and its
stdout is scanned for Powertools EMF lines, which the runtime turns into metrics as CloudWatch
Logs does in AWS, and handed to ``on_output`` (the runtime's subscription filters). Invocations
are serialised: environment variables are process-wide.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import sys
import threading
import time
import traceback
import types
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_INVOKE_LOCK = threading.RLock()


class FunctionError(RuntimeError):
    """A handler failed (raised, timed out); ``error`` is Lambda's error payload."""

    def __init__(self, function: str, error: dict[str, Any]) -> None:
        super().__init__(f"{function}: {error.get('errorType')}: {error.get('errorMessage')}")
        self.function = function
        self.error = error


@dataclass
class LambdaContext:
    """The context object Lambda passes to a Python handler."""

    function_name: str
    function_version: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    aws_request_id: str
    log_group_name: str
    log_stream_name: str
    deadline: float  # time.monotonic() deadline
    identity: Any = None
    client_context: Any = None
    tenant_id: str | None = None

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


@dataclass
class Invocation:
    """What one invocation did: payload or Lambda-shaped error, captured output, EMF lines."""

    function: str
    request_id: str
    started: float  # runtime clock
    duration_ms: float
    event: Any = None
    payload: Any = None
    error: dict[str, Any] | None = None
    stdout: str = ""
    emf: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class FunctionSpec:
    """A ``AWS::Serverless::Function`` (or ``AWS::Lambda::Function``) with resolved properties."""

    logical_id: str
    name: str
    arn: str
    code_dir: Path
    handler: str
    timeout: float
    memory: int
    environment: dict[str, str]
    properties: dict[str, Any]


class _Tee(io.TextIOBase):
    """Writes to the real stream (unless quiet) and keeps a copy."""

    def __init__(self, target: Any, quiet: bool) -> None:
        self.target, self.quiet, self.buffer_ = target, quiet, io.StringIO()

    def write(self, s: str) -> int:
        self.buffer_.write(s)
        if not self.quiet:
            self.target.write(s)
        return len(s)

    def flush(self) -> None:
        if not self.quiet:
            self.target.flush()


@contextlib.contextmanager
def _environment(overlay: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in overlay}
    os.environ.update(overlay)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def parse_emf(text: str) -> list[dict[str, Any]]:
    """The EMF documents (JSON lines with ``_aws.CloudWatchMetrics``) in captured output."""
    docs = []
    for line in text.splitlines():
        line = line.strip()
        if not (line.startswith("{") and '"_aws"' in line):
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            continue
        if (
            isinstance(doc, dict)
            and isinstance(doc.get("_aws"), dict)
            and doc["_aws"].get("CloudWatchMetrics")
        ):
            docs.append(doc)
    return docs


def emf_metrics(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """MetricDatum-like dicts (Namespace, MetricName, Dimensions, Values, Unit, Timestamp ms)."""
    out = []
    ts = doc["_aws"].get("Timestamp")
    for directive in doc["_aws"]["CloudWatchMetrics"]:
        namespace = directive["Namespace"]
        dim_sets = directive.get("Dimensions") or [[]]
        for metric in directive.get("Metrics", []):
            name = metric["Name"]
            raw = doc.get(name)
            if raw is None:
                continue
            values = raw if isinstance(raw, list) else [raw]
            for dims in dim_sets:
                out.append(
                    {
                        "Namespace": namespace,
                        "MetricName": name,
                        "Dimensions": [{"Name": d, "Value": str(doc[d])} for d in dims if d in doc],
                        "Values": [float(v) for v in values],
                        "Unit": metric.get("Unit", "None"),
                        "Timestamp": ts,
                        "StorageResolution": metric.get("StorageResolution", 60),
                    }
                )
    return out


class FunctionHost:
    """Loads and invokes the handlers of one local stack."""

    def __init__(
        self,
        namespace: str,
        base_env: Callable[[], dict[str, str]],
        now: Callable[[], float],
        on_emf: Callable[[Invocation, list[dict[str, Any]]], None] | None = None,
        quiet: bool = False,
        on_output: Callable[[FunctionSpec, Invocation], None] | None = None,
    ) -> None:
        self.namespace = namespace
        self.base_env = base_env
        self.now = now
        self.on_emf = on_emf
        # Every invocation's captured output, as its log group receives it (subscription filters).
        self.on_output = on_output
        self.quiet = quiet
        self.functions: dict[str, FunctionSpec] = {}
        self._handlers: dict[str, Callable[..., Any]] = {}
        self.invocations: list[Invocation] = []

    def add(self, spec: FunctionSpec) -> None:
        self.functions[spec.logical_id] = spec

    def find(self, name: str) -> FunctionSpec:
        """A function by logical id, physical name, ARN (with or without alias) or folder name."""
        for spec in self.functions.values():
            arn_base = spec.arn
            if name in {spec.logical_id, spec.name, arn_base, spec.code_dir.name} or name.startswith(
                arn_base + ":"
            ):
                return spec
        raise KeyError(f"no function {name!r}; known: {sorted(self.functions)}")

    def env_for(self, spec: FunctionSpec, request_deadline_s: float | None = None) -> dict[str, str]:
        env = dict(self.base_env())
        env.update(
            {
                "AWS_LAMBDA_FUNCTION_NAME": spec.name,
                "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory),
                "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.name}",
                "AWS_LAMBDA_LOG_STREAM_NAME": "local/[$LATEST]shelfwise",
                "_HANDLER": spec.handler,
                "LAMBDA_TASK_ROOT": str(spec.code_dir),
                "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
            }
        )
        env.update(spec.environment)
        return env

    def _load(self, spec: FunctionSpec) -> Callable[..., Any]:
        if spec.logical_id in self._handlers:
            return self._handlers[spec.logical_id]
        module_path, _, attr = spec.handler.rpartition(".")
        if not module_path:
            raise ValueError(f"{spec.logical_id}: Handler {spec.handler!r} must be module.function")
        package = f"_shelfwise_fn_{self.namespace}_{spec.logical_id}"
        pkg = types.ModuleType(package)
        pkg.__path__ = [str(spec.code_dir)]
        sys.modules[package] = pkg
        qual = f"{package}.{module_path}"
        file = spec.code_dir / (module_path.replace(".", "/") + ".py")
        if not file.exists():
            raise FileNotFoundError(f"{spec.logical_id}: handler module {file} not found")
        module_spec = importlib.util.spec_from_file_location(qual, file)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[qual] = module
        module_spec.loader.exec_module(module)
        handler = getattr(module, attr, None)
        if not callable(handler):
            raise AttributeError(f"{spec.logical_id}: {file} has no callable {attr!r}")
        self._handlers[spec.logical_id] = handler
        return handler

    def unload(self) -> None:
        """Forget the loaded modules (the next invocation is a cold start)."""
        prefix = f"_shelfwise_fn_{self.namespace}_"
        for name in [m for m in sys.modules if m.startswith(prefix)]:
            del sys.modules[name]
        self._handlers.clear()

    def invoke(self, name: str, event: Any) -> Invocation:
        """Invoke a function synchronously; errors come back in ``Invocation.error``."""
        spec = self.find(name)
        request_id = str(uuid.uuid4())
        with _INVOKE_LOCK:
            started_clock = self.now()
            start = time.monotonic()
            deadline = start + spec.timeout
            ctx = LambdaContext(
                function_name=spec.name,
                function_version="$LATEST",
                invoked_function_arn=spec.arn,
                memory_limit_in_mb=spec.memory,
                aws_request_id=request_id,
                log_group_name=f"/aws/lambda/{spec.name}",
                log_stream_name="local/[$LATEST]shelfwise",
                deadline=deadline,
            )
            result: dict[str, Any] = {}
            tee = _Tee(sys.stdout, self.quiet)

            def run() -> None:
                try:
                    handler = self._load(spec)
                    result["payload"] = handler(event, ctx)
                except BaseException as exc:  # Lambda reports any exception, even SystemExit
                    result["error"] = {
                        "errorMessage": str(exc),
                        "errorType": type(exc).__name__,
                        "requestId": request_id,
                        "stackTrace": traceback.format_exception(exc)[-6:],
                    }

            with _environment(self.env_for(spec)), contextlib.redirect_stdout(tee):
                worker = threading.Thread(target=run, name=f"lambda-{spec.logical_id}", daemon=True)
                worker.start()
                worker.join(spec.timeout)
                timed_out = worker.is_alive()
            duration = (time.monotonic() - start) * 1000
            inv = Invocation(
                spec.logical_id,
                request_id,
                started_clock,
                duration,
                event=event,
                stdout=tee.buffer_.getvalue(),
            )
            if timed_out:
                inv.error = {
                    "errorMessage": f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {request_id} "
                    f"Task timed out after {spec.timeout:.2f} seconds",
                    "errorType": "Sandbox.Timedout",
                    "requestId": request_id,
                }
                # The thread cannot be killed; a fresh module on the next call, as Lambda
                # replaces a timed-out execution environment.
                self._handlers.pop(spec.logical_id, None)
            elif "error" in result:
                inv.error = result["error"]
            else:
                payload = result.get("payload")
                try:
                    inv.payload = json.loads(json.dumps(payload)) if payload is not None else None
                except (TypeError, ValueError) as exc:
                    inv.error = {
                        "errorMessage": f"Unable to marshal response: {exc}",
                        "errorType": "Runtime.MarshalError",
                        "requestId": request_id,
                    }
            inv.emf = parse_emf(inv.stdout)
            self.invocations.append(inv)
        if inv.emf and self.on_emf is not None:
            self.on_emf(inv, inv.emf)
        if inv.stdout and self.on_output is not None:
            self.on_output(spec, inv)
        return inv
