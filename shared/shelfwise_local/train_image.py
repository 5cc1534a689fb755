"""``make train-image``: build the training image, push it to the stack's ECR repository, print its digest.

Steps: check that Docker answers; read the repository URI from the stack's
``TrainingImageRepositoryUri`` output; tag the image with a unique tag (the git commit, ``-dirty``
when the work tree has changes, and the UTC time: the repository's tags are IMMUTABLE, so a tag
is never reused, and ``latest`` is never written); log Docker in to ECR; build for
``linux/amd64`` (what Fargate runs here); push; print the image's digest reference, which is what
the ``TrainingImageUri`` parameter takes. The last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

OUTPUT_KEY = "TrainingImageRepositoryUri"


class TrainImageError(Exception):
    """A step failed; the message says which and what to do."""


def _run(cmd: list[str], *, cwd: Path | None = None, stdin: str | None = None, capture: bool = False) -> str:
    """Run a command; build and push output goes to the terminal unless ``capture``."""
    capture = capture or stdin is not None
    proc = subprocess.run(cmd, cwd=cwd, input=stdin, capture_output=capture, text=True, check=False)
    if proc.returncode != 0:
        detail = (proc.stderr or "").strip()[-2000:] if capture else ""
        raise TrainImageError(f"`{' '.join(cmd[:3])} ...` failed (exit {proc.returncode}) {detail}".strip())
    return proc.stdout or ""


def docker_status(docker: str = "docker") -> str | None:
    """None when Docker can build here; otherwise why not, in words a person can act on."""
    if shutil.which(docker) is None:
        return f"`{docker}` is not installed (https://docs.docker.com/engine/install/)"
    proc = subprocess.run([docker, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True)
    if proc.returncode != 0:
        return f"the Docker daemon does not answer (`{docker} info` failed: {proc.stderr.strip()[:300]})"
    return None


def unique_tag(root: Path, now: datetime | None = None) -> str:
    """``<git sha>[-dirty]-<UTC time>``: unique per build, never ``latest``."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    sha = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True, check=False
    ).stdout.strip()
    if not sha:
        return f"build-{stamp}"
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True).stdout
    return f"{sha}{'-dirty' if dirty.strip() else ''}-{stamp}"


def repository_uri(cloudformation: Any, stack: str) -> str:
    try:
        stacks = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    except Exception as exc:
        raise TrainImageError(
            f"cannot read stack {stack!r}: {exc}; deploy it first (`sam deploy --guided`)"
        ) from exc
    for out in stacks[0].get("Outputs", []):
        if out["OutputKey"] == OUTPUT_KEY:
            return str(out["OutputValue"])
    raise TrainImageError(f"stack {stack!r} has no {OUTPUT_KEY} output; deploy the current template.yaml")


def build_and_push(
    root: Path, repo_uri: str, tag: str, ecr: Any, docker: str = "docker", platform: str = "linux/amd64"
) -> str:
    """Build, push and return ``<repository>@sha256:<digest>``."""
    auth = ecr.get_authorization_token()["authorizationData"][0]
    user, password = base64.b64decode(auth["authorizationToken"]).decode().split(":", 1)
    registry = repo_uri.split("/", 1)[0]
    _run([docker, "login", "--username", user, "--password-stdin", registry], stdin=password)
    image = f"{repo_uri}:{tag}"
    _run([docker, "build", "--platform", platform, "--pull", "--tag", image, "."], cwd=root)
    _run([docker, "push", image])
    digests = _run([docker, "image", "inspect", "--format", "{{json .RepoDigests}}", image], capture=True)
    for ref in json.loads(digests or "[]"):
        if ref.startswith(repo_uri + "@sha256:"):
            return str(ref)
    raise TrainImageError(f"pushed {image} but Docker reports no digest for {repo_uri}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="make train-image", description=__doc__.splitlines()[0])
    p.add_argument("--stack", required=True, help="the deployed stack (its ECR repository)")
    p.add_argument("--region", default=None, help="AWS region (default: the SDK's)")
    p.add_argument("--root", default=".", help="repository root (the build context)")
    p.add_argument("--docker", default="docker")
    args = p.parse_args(argv)
    root = Path(args.root).resolve()
    why = docker_status(args.docker)
    if why is not None:
        print(
            f"make train-image: cannot build the training image here: {why}.\n"
            "Build it on a machine with Docker (the recipe is ./Dockerfile, the context this repository),\n"
            "or check the recipe without Docker: .venv/bin/python -m pytest tests/unit/test_training_image.py",
            file=sys.stderr,
        )
        return 2
    import boto3

    session = boto3.session.Session(region_name=args.region)
    try:
        repo = repository_uri(session.client("cloudformation"), args.stack)
        tag = unique_tag(root)
        print(f"building {repo}:{tag}", file=sys.stderr)
        ref = build_and_push(root, repo, tag, session.client("ecr"), args.docker)
    except TrainImageError as exc:
        print(f"make train-image: {exc}", file=sys.stderr)
        return 1
    print(
        f"pushed {ref}\nnext: sam deploy --parameter-overrides TrainingImageUri={ref} "
        "(keep your other overrides)",
        file=sys.stderr,
    )
    print(json.dumps({"image": ref, "tag": tag, "repository": repo}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
