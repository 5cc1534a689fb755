"""Cold start: a fresh interpreter importing the serving function as Lambda would, and its package size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from shelfwise_local.bench.serve.events import apigw_event
from shelfwise_local.bench.serve.handler import REPO, SERVE_APP


def package_mb() -> dict[str, float]:
    """Unzipped size of what the serving function ships: its code, shelfwise, and the inference layer deps."""
    import importlib.util

    def size(path: Path) -> int:
        if path.is_file():
            return path.stat().st_size
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)

    def pkg(name: str) -> int:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            return 0
        root = Path(spec.origin).parent
        total = size(root)
        libs = root.parent / f"{name}.libs"
        return total + (size(libs) if libs.exists() else 0)

    mb = 1024 * 1024
    layers = {
        "function": size(SERVE_APP.parent),
        "shelfwise": size(REPO / "shared" / "shelfwise"),
        "inference (onnxruntime, numpy)": pkg("onnxruntime") + pkg("numpy"),
        "base (powertools, pydantic)": pkg("aws_lambda_powertools") + pkg("pydantic") + pkg("pydantic_core"),
    }
    out = {k: round(v / mb, 1) for k, v in layers.items()}
    out["total"] = round(sum(layers.values()) / mb, 1)
    return out


_COLD = r"""
import sys, time
t0 = time.perf_counter()
sys.path[:0] = sys.argv[3].split(":")
import importlib.util, json
spec = importlib.util.spec_from_file_location("serve_app", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
sys.modules["serve_app"] = mod
spec.loader.exec_module(mod)
t1 = time.perf_counter()
class Ctx:
    function_name = "serve"; memory_limit_in_mb = 1769; aws_request_id = "cold"
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:serve"
    def get_remaining_time_in_millis(self): return 30000
first, other_route = json.loads(sys.argv[2])
resp = mod.lambda_handler(first, Ctx())
t2 = time.perf_counter()
other = mod.lambda_handler(other_route, Ctx())  # what the first request of another route adds
t3 = time.perf_counter()
def hwm_mb():  # this process's peak RSS (VmHWM: ru_maxrss would include the parent's, kept across exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
rss_first = hwm_mb()
if len(sys.argv) > 4:  # then a replay of the bench's request mix: the function's steady-state RSS
    for ev in json.load(open(sys.argv[4])):
        mod.lambda_handler(ev, Ctx())
m = next(iter(mod.recommender.state.models.values()), None)
print(json.dumps({"rss_after_first_mb": rss_first,
                  "rss_mb": hwm_mb(),"init_s": t1 - t0, "first_answer_s": t2 - t0, "first_request_s": t2 - t1,
                  "first_other_route_s": t3 - t2,
                  "bundle_fetch_s": m and m.fetch_seconds, "bundle_load_s": m and m.load_seconds,
                  "status": resp["statusCode"], "other_status": other["statusCode"]}))
"""


def lambda_paths(work: Path) -> list[Path]:
    """``sys.path`` of the deployed serving function: its code, shelfwise, its layers, the runtime's SDK.

    Links into this environment (:func:`shelfwise_local.buildcheck.layer_site`), so a ``-I -S``
    interpreter imports what Lambda would and nothing a developer happens to have installed
    (botocore picks up awscrt and pyOpenSSL when present, ~0.2 s that Lambda never pays).
    """
    from shelfwise_local.buildcheck import layer_site, runtime_sdk

    layers = [REPO / "layers" / name / "requirements.txt" for name in ("base", "inference")]
    return [
        SERVE_APP.parent,
        REPO / "shared",
        layer_site(layers, work / "lambda-layers"),
        runtime_sdk(work / "lambda-sdk"),
    ]


def one_core() -> set[int]:
    """The last CPU this process may use: where a pinned cold start runs (Lambda at 1769 MB has one vCPU)."""
    return {max(os.sched_getaffinity(0))}


def cold_start(
    cache: Path, paths: list[Path], cpus: set[int] | None = None, replay: Path | None = None
) -> dict[str, Any]:
    """A fresh interpreter: import the handler (init: clients, aliases, download, load), answer once.

    ``-I -S``: no site-packages, only ``paths`` (:func:`lambda_paths`), as in Lambda. ``cpus``
    pins the interpreter (its threads overlap the download with imports, not CPU work with CPU
    work, on one core); the emulator serving the bundle runs elsewhere, as S3 would.
    """
    event = apigw_event("GET", "/v1/users/user-000001/recommendations", query={"k": "20"})
    # then the first session fold-in: the cost of a route's first request (its models and
    # parameter analysis are built on first use)
    history = [{"item_id": f"sku-{i * 997:07d}", "event_type": "view"} for i in range(1, 11)]
    other = apigw_event(
        "POST", "/v1/recommendations", body={"session_id": "s-cold", "history": history, "k": 20}
    )
    t = time.perf_counter()
    out = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            _COLD,
            str(SERVE_APP),
            json.dumps([event, other]),
            ":".join(map(str, paths)),
            *([str(replay)] if replay else []),
        ],
        env={**os.environ, "MODEL_CACHE_DIR": str(cache)},
        capture_output=True,
        text=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )
    wall = time.perf_counter() - t
    if out.returncode:
        raise RuntimeError(f"cold start run failed: {out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = wall
    return result


# What the serving function cannot start without: the model runtime, Pydantic (its BaseModel) and
# Powertools' HTTP resolver (the issue's validation). Importing them, nothing else, is the floor of
# any cold start here. The AWS SDK is not among them: serving reads S3 and SSM with
# shelfwise.aws_lite; boto3's own import is reported beside it for reference.
SERVING_LIBRARIES = "numpy, onnxruntime, pydantic.main, aws_lambda_powertools.event_handler"


def import_seconds(paths: list[Path], modules: str = "numpy, onnxruntime") -> float:
    """Seconds for a fresh ``-I -S`` interpreter on ``paths`` to import ``modules``."""
    code = (
        f"import sys, time; sys.path[:0] = {[str(p) for p in paths]!r}; t = time.perf_counter(); "
        f"import {modules}; print(time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())
