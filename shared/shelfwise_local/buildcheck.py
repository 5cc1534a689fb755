"""After `sam build`: size of every function with its layers against its budget, and cold start.

Budgets (unzipped code + layers): serving functions (those with the InferenceLayer) 150 MB, every
other zip function 250 MB, Lambda's hard limit. Cold start is measured the way Lambda pays it: a
fresh interpreter (``-I -S``: no site-packages) with only the built directories on ``sys.path``
imports the handler module, writing no bytecode (``-B``), since /opt and /var/task are read-only
in Lambda: what a layer does not ship as .pyc is compiled again at every cold start. The python3.12 Lambda runtime ships the AWS SDK (boto3, botocore and
their dependencies) outside the package, so a directory holding just those, linked from this
environment, stands in for it. Prints one line per function and a JSON line last; exits 1 when a
budget is exceeded or a handler fails to import.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

MB = 1024 * 1024
SERVING_BUDGET_MB = 150
DEFAULT_BUDGET_MB = 250

# The serving function's memory and /tmp follow from the largest bundle it serves (the function's
# Metadata BundleMaxMB in the template, or a real bundle given with --bundle). A bundle is memory-mapped, so in the
# worst case every page of it is resident, and it is held up to VERSIONS times: champion,
# challenger and a new version loaded beside them before the swap (docs/serving.md); /tmp holds
# the same versions, the new one first in a staging directory. SERVING_BASE_MB is the process
# without its bundle (interpreter, numpy, ONNX Runtime, Pydantic, Powertools, session arenas):
# `shelfwise bench serve` reports `function_rss_mb` (about 230 MB at 100k items, a 56 MB bundle).
SERVING_BASE_MB = 256
BUNDLE_VERSIONS = 3
TMP_HEADROOM_MB = 64
LAMBDA_MAX_MEMORY_MB = 10240
LAMBDA_MAX_TMP_MB = 10240
LAMBDA_DEFAULT_TMP_MB = 512


def serving_requirements(bundle_mb: float) -> dict[str, int]:
    """Memory and ephemeral storage (MB) a serving function needs for bundles of ``bundle_mb``."""
    return {
        "memory_mb": int(SERVING_BASE_MB + BUNDLE_VERSIONS * bundle_mb + 0.999),
        "ephemeral_mb": int(BUNDLE_VERSIONS * bundle_mb + TMP_HEADROOM_MB + 0.999),
    }


def check_serving_sizing(props: dict[str, Any], bundle_mb: float) -> dict[str, Any]:
    """The serving function's configured MemorySize / EphemeralStorage against
    :func:`serving_requirements`; ``ok`` is false when a bundle of ``bundle_mb`` would not fit
    (or could not fit any Lambda function)."""
    need = serving_requirements(bundle_mb)
    memory = int(props.get("MemorySize", 128))
    tmp = int((props.get("EphemeralStorage") or {}).get("Size", LAMBDA_DEFAULT_TMP_MB))
    problems = []
    if need["memory_mb"] > LAMBDA_MAX_MEMORY_MB or need["ephemeral_mb"] > LAMBDA_MAX_TMP_MB:
        problems.append("no Lambda function holds it: split the catalogue into shards (docs/serving.md)")
    if memory < need["memory_mb"]:
        problems.append(f"MemorySize {memory} < {need['memory_mb']} MB")
    if tmp < need["ephemeral_mb"]:
        problems.append(f"EphemeralStorage {tmp} < {need['ephemeral_mb']} MB")
    return {
        "bundle_mb": round(bundle_mb, 1),
        "memory_mb": memory,
        "ephemeral_mb": tmp,
        "needs": need,
        "ok": not problems,
        **({"problems": problems} if problems else {}),
    }


def bundle_size_mb(directory: Path) -> float:
    """Bytes of a bundle directory as serving downloads it (``items.parquet`` is not fetched)."""
    return (
        sum(p.stat().st_size for p in directory.iterdir() if p.is_file() and p.name != "items.parquet") / MB
    )


class _Loader(yaml.SafeLoader):
    """Reads CloudFormation short-form tags (!Ref, !Sub ...) as plain values."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return {suffix: loader.construct_scalar(node)}
    if isinstance(node, yaml.SequenceNode):
        return {suffix: loader.construct_sequence(node, deep=True)}
    return {suffix: loader.construct_mapping(node, deep=True)}  # type: ignore[arg-type]


_Loader.add_multi_constructor("!", _tag)


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


SDK_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six")


def runtime_sdk(target: Path) -> Path:
    """A directory with only the AWS SDK packages, as the python3.12 Lambda runtime provides them."""
    import importlib.util

    target.mkdir(parents=True, exist_ok=True)
    for name in SDK_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            continue
        src = Path(spec.origin).parent if spec.submodule_search_locations else Path(spec.origin)
        link = target / src.name
        if not link.exists():
            link.symlink_to(src)
    return target


def layer_site(requirements: list[Path], target: Path) -> Path:
    """A directory holding what the given layer requirement files install, linked from this environment.

    Each requirement is resolved with its dependencies (markers and extras evaluated), and each
    distribution's top-level modules are linked into ``target``: the same import graph as the built
    layers, without a build. With :func:`runtime_sdk` beside it on ``sys.path`` of a ``-I -S``
    interpreter, it is the import environment of a deployed function (no dev-only packages such
    as awscrt or pyOpenSSL, which botocore would otherwise pick up and which Lambda does not have).
    """
    from importlib import metadata

    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    target.mkdir(parents=True, exist_ok=True)
    env = default_environment()
    pending = [
        Requirement(line.split("#", 1)[0].strip())
        for path in requirements
        for line in path.read_text().splitlines()
        if line.split("#", 1)[0].strip()
    ]
    seen: set[str] = set()
    while pending:
        req = pending.pop()
        name = req.name.lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        dist = metadata.distribution(req.name)
        for sub in dist.requires or []:
            child = Requirement(sub)
            extras = req.extras or {""}
            if child.marker is None or any(child.marker.evaluate({**env, "extra": e}) for e in extras):
                pending.append(child)
        tops = {
            f.parts[0]
            for f in dist.files or []
            if f.parts
            and not f.parts[0].endswith((".dist-info", ".data"))
            and f.parts[0] not in {"..", "bin", "__pycache__"}
        }
        for top in tops:
            src = Path(str(dist.locate_file(top)))
            link = target / top
            if src.exists() and not link.exists():
                link.symlink_to(src)
    return target


def _env_value(key: str, value: Any, parameters: dict[str, Any]) -> str:
    """An environment value as deployed: literal, a parameter's default, else a placeholder name."""
    if isinstance(value, str | int | float):
        return str(value)
    ref = value.get("Ref") if isinstance(value, dict) else None
    if isinstance(ref, str) and "Default" in parameters.get(ref, {}):
        return str(parameters[ref]["Default"])
    return f"placeholder-{key.lower().replace('_', '-')}"


def _cold_start(python: str, paths: list[Path], handler: str, env: dict[str, str]) -> float | str:
    module = handler.rsplit(".", 1)[0]
    code = (
        "import sys, time\n"
        f"sys.path[:0] = {[str(p) for p in paths]!r}\n"
        "t = time.perf_counter()\n"
        f"import {module}\n"
        "print(time.perf_counter() - t)\n"
    )
    proc = subprocess.run(
        [python, "-I", "-S", "-B", "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    if proc.returncode != 0:
        return "import failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1]
    return float(proc.stdout.strip().splitlines()[-1])


def _warm_emulator(env: dict[str, str]) -> None:
    """One call per service the functions touch at init, so no function pays moto's own set-up.

    moto builds a service's backend on its first request (SSM's loads AWS's public parameters:
    about 2 s), which would otherwise be counted in whichever function calls that service first.
    """
    import boto3

    kwargs = {
        "endpoint_url": env["AWS_ENDPOINT_URL"],
        "region_name": env["AWS_DEFAULT_REGION"],
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
    }
    boto3.client("ssm", **kwargs).get_parameters(Names=["/shelfwise/buildcheck/warm-up"])
    boto3.client("s3", **kwargs).list_buckets()
    boto3.client("firehose", **kwargs).list_delivery_streams()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shelfwise_local.buildcheck", description=__doc__)
    parser.add_argument("--build-dir", default=".aws-sam/build", type=Path)
    parser.add_argument("--python", default=None, help="python3.12 to measure cold starts with")
    parser.add_argument(
        "--bundle",
        type=Path,
        default=None,
        help="a bundle directory: check the serving function's memory and /tmp against its size "
        "(default: the function's Metadata BundleMaxMB in the template)",
    )
    args = parser.parse_args(argv)
    template = yaml.load((args.build_dir / "template.yaml").read_text(), Loader=_Loader)
    resources: dict[str, Any] = template["Resources"]
    global_layers = template.get("Globals", {}).get("Function", {}).get("Layers", [])
    env = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "POWERTOOLS_TRACE_DISABLED": "1",
    }
    sdk = runtime_sdk(args.build_dir.parent / "runtime-sdk")
    # Calls made at init (the serving function's first alias read and model load) go to an empty
    # embedded emulator and get their "not found" at once: this measures imports and set-up of an
    # empty stack, not a download (`shelfwise bench serve` measures cold start with a real bundle).
    from moto.server import ThreadedMotoServer

    emulator = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    emulator.start()
    host, port = emulator.get_host_and_port()
    env["AWS_ENDPOINT_URL"] = f"http://{host}:{port}"
    _warm_emulator(env)
    rows, failed = [], False
    for name, res in sorted(resources.items()):
        if res.get("Type") != "AWS::Serverless::Function":
            continue
        props = res.get("Properties", {})
        if props.get("PackageType") == "Image":
            rows.append({"function": name, "package": "image", "note": "container image, built by Docker"})
            continue
        layers = [lay["Ref"] for lay in props.get("Layers", []) + global_layers if isinstance(lay, dict)]
        layer_dirs = [args.build_dir / lay / "python" for lay in dict.fromkeys(layers)]
        code_dir = args.build_dir / name
        size = dir_size(code_dir) + sum(dir_size(d) for d in layer_dirs if d.exists())
        budget = SERVING_BUDGET_MB if "InferenceLayer" in layers else DEFAULT_BUDGET_MB
        fn_env = dict(env)
        global_vars = (
            template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
        )
        variables = {**(global_vars or {}), **(props.get("Environment", {}).get("Variables", {}) or {})}
        for key, value in variables.items():
            fn_env[key] = _env_value(key, value, template.get("Parameters", {}))
        cold = (
            _cold_start(
                args.python, [code_dir, *layer_dirs, sdk], props.get("Handler", "app.lambda_handler"), fn_env
            )
            if args.python
            else None
        )
        sizing = None
        if "InferenceLayer" in layers:
            bundle_mb = (
                bundle_size_mb(args.bundle)
                if args.bundle is not None
                else float((res.get("Metadata") or {}).get("BundleMaxMB", 0))
            )
            sizing = check_serving_sizing(props, bundle_mb)
        ok = size <= budget * MB and not isinstance(cold, str) and (sizing is None or sizing["ok"])
        failed |= not ok
        rows.append(
            {
                "function": name,
                "size_mb": round(size / MB, 1),
                "budget_mb": budget,
                "cold_import_s": round(cold, 3) if isinstance(cold, float) else cold,
                **({"bundle_sizing": sizing} if sizing else {}),
                "ok": ok,
            }
        )
    emulator.stop()
    for row in rows:
        print(json.dumps(row), file=sys.stderr)
    print(json.dumps({"functions": rows, "ok": not failed}))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
