"""Training on AWS Batch, through the template's own wiring, in a fresh environment built like the image.

schedule -> train_model submits the job (the stack's TrainingFamilies include sequential, which
only the image can train) -> the job runs the image's ENTRYPOINT and the job
definition's Command (a local process, in a virtual environment built by the Dockerfile's own pip
steps) -> it registers a version -> ModelRegistered -> the rule -> promote_model offers it -> canary.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shelfwise.rollout import RolloutPolicy
from shelfwise_local.dockerfile import Dockerfile, build_virtualenv, recipe_digest
from shelfwise_local.runtime import LocalRuntime
from shelfwise_local.runtime.clock import iso
from shelfwise_local.runtime.targets import scheduler_target_input
from shelfwise_local.runtime.testing import new_runtime

REPO = Path(__file__).resolve().parents[2]
IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/shelfwise-train@sha256:" + "0" * 64


@pytest.fixture(scope="session")
def image_bin() -> Path:
    """The image's Python environment, built by the recipe's own pip steps (about a minute with
    pip's cache). One slot per checkout, beside the project's own environment: the moto and
    LocalStack legs, and later runs of the same recipe and code, share it; a changed recipe or
    code replaces it (it holds PyTorch, several GB, so old ones must not pile up)."""
    recipe = Dockerfile.read(REPO / "Dockerfile")
    digest = recipe_digest(recipe, REPO)
    target = Path(sys.prefix) / "image-env"
    done = target / "built"
    if not (done.exists() and done.read_text() == digest):
        shutil.rmtree(target, ignore_errors=True)
        build_virtualenv(recipe, REPO, target, sys.executable)
        done.write_text(digest)
    return target / "venv" / "bin"


@pytest.fixture
def batch_stack(image_bin: Path) -> Iterator[LocalRuntime]:
    runtime = new_runtime(
        REPO / "template.yaml",
        # an image by digest creates the job definition; 0 bytes in process sends every run to Batch
        # and the stack asks for the sequential family too: only the image (PyTorch) trains it
        parameters={
            "TrainingImageUri": IMAGE,
            "TrainingInProcessMaxBytes": "0",
            "TrainingFamilies": "sequential",
        },
        batch_bin_dirs=[str(image_bin)],
    )
    try:
        yield runtime
    finally:
        runtime.close()


def _aliases(rt: LocalRuntime) -> dict[str, str]:
    prefix = "/shelfwise/dev/models/recs/"
    got = rt.client("ssm").get_parameters_by_path(Path=prefix)["Parameters"]
    return {p["Name"].removeprefix(prefix): p["Value"] for p in got}


def _train_event(rt: LocalRuntime, days_ago: int = 0) -> dict[str, Any]:
    """What the daily schedule sends for the run ``days_ago`` days before the platform's instant
    (each day's run is a run of its own; a repeated delivery of one is that same run)."""
    daily = next(
        s for s in rt._schedules if "TrainModelFunction" in s.targets[0]["Arn"] and "Input" in s.targets[0]
    )
    event = scheduler_target_input(
        daily.targets[0], schedule_arn=daily.rule_arn, scheduled_time=iso(rt.clock.now() - 86400 * days_ago)
    )
    return dict(event)


# The first run of a session builds the image's environment (a minute or two on a loaded machine)
# inside the fixture; pytest-timeout counts set-up too.
@pytest.mark.timeout(1800)
def test_a_batch_trained_version_is_offered_and_canaried(batch_stack: LocalRuntime, tmp_path: Path) -> None:
    from shelfwise.simulator.generate import simulate_to_files
    from shelfwise.simulator.params import ShopParams

    rt = batch_stack
    simulate_to_files(ShopParams(n_users=1200, n_items=300, n_days=4), seed=11, out_dir=tmp_path)
    for f in sorted((tmp_path / "events").iterdir()):
        rt.put_object("RawBucket", f"raw/native/{f.name}", f.read_bytes(), pump=False)
    rt.pump()
    assert all(i.ok for i in rt.invocations_of("IngestEventsFunction"))

    versions = []
    for days_ago in (1, 0):  # the first day's run makes a champion, the next day's is offered for canary
        answer = rt.invoke("TrainModelFunction", _train_event(rt, days_ago))
        assert answer["decision"]["action"] == "submit_batch" and answer["batch_job_id"], answer
        (job,) = [j for j in rt.wait_for_batch(timeout=900) if j.job_id == answer["batch_job_id"]]
        assert job.status == "SUCCEEDED", job.log()[-3000:]
        # exactly what the container runs: ENTRYPOINT + the job definition's Command
        command = rt.resource("TrainingJobDefinition").props["ContainerProperties"]["Command"]
        assert job.argv == ["shelfwise", *command]
        assert job.environment["AWS_BATCH_JOB_ID"] == job.job_id
        summary = json.loads(job.log().strip().splitlines()[-1])
        assert "sequential" in summary["models"], sorted(summary["models"])
        versions.append(summary["version"])

    offers = [
        i
        for i in rt.invocations_of("PromoteModelFunction")
        if i.event.get("detail-type") == "ModelRegistered"
    ]
    assert [o.event["detail"]["version"] for o in offers] == versions
    assert [o.payload["action"] for o in offers] == ["idle", "start"], [o.payload or o.error for o in offers]
    aliases = _aliases(rt)
    # a new challenger starts on probation (the rollout policy's first, smaller share)
    assert (aliases["champion"], aliases["challenger"], float(aliases["canary_weight"])) == (
        versions[0],
        versions[1],
        RolloutPolicy().probation,
    )

    # progress reached the operator as a Lambda run's does: metrics, and the report in the bundle
    metrics = rt.client("cloudwatch").list_metrics(Namespace="Shelfwise")["Metrics"]
    names = {
        m["MetricName"]
        for m in metrics
        if {"Name": "service", "Value": "training"} in m.get("Dimensions", [])
    }
    assert {"TrainingRuns", "TrainingStageSeconds"} <= names
    models = rt.physical_name("ModelsBucket")
    rt.s3.head_object(Bucket=models, Key=f"models/recs/{versions[1]}/report.html")
