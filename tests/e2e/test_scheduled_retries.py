"""A scheduled training run delivered more than once submits one AWS Batch job, through the
template's own wiring (the job queue, the job definition, the function's ListJobs and SubmitJob).

The job's container is not built here: a small ``shelfwise`` script written by the test stands
in for the image's ENTRYPOINT and prints what it was given, as the real job prints its summary
(tests/e2e/test_batch_training.py runs the real one).
"""

from __future__ import annotations

import json
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from shelfwise_local.runtime import LocalRuntime
from shelfwise_local.runtime.clock import iso
from shelfwise_local.runtime.targets import scheduler_target_input
from shelfwise_local.runtime.testing import new_runtime

REPO = Path(__file__).resolve().parents[2]
IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/shelfwise-train@sha256:" + "0" * 64


@pytest.fixture
def batch_stack(tmp_path: Path) -> Iterator[tuple[LocalRuntime, Path]]:
    """The template with a training image (so a job definition) and no in-process training; the
    job runs a stand-in ``shelfwise`` that holds until ``release`` exists, then prints its input."""
    bin_dir, release = tmp_path / "bin", tmp_path / "release"
    bin_dir.mkdir()
    fake = bin_dir / "shelfwise"
    fake.write_text(
        "#!/bin/sh\n"
        f'n=0; while [ ! -e "{release}" ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); done\n'
        'printf \'{"version": "%s", "as_of": "%s", "argv": "%s"}\\n\' '
        '"$TRAINING_VERSION" "$TRAINING_AS_OF" "$*"\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    runtime = new_runtime(
        REPO / "template.yaml",
        parameters={"TrainingImageUri": IMAGE, "TrainingInProcessMaxBytes": "0"},
        batch_bin_dirs=[str(bin_dir)],
    )
    try:
        yield runtime, release
    finally:
        runtime.close()


def _daily_event(rt: LocalRuntime) -> dict[str, Any]:
    daily = next(
        s for s in rt._schedules if "TrainModelFunction" in s.targets[0]["Arn"] and "Input" in s.targets[0]
    )
    return dict(
        scheduler_target_input(
            daily.targets[0], schedule_arn=daily.rule_arn, scheduled_time=iso(rt.clock.now())
        )
    )


def test_a_scheduled_run_delivered_three_times_submits_one_batch_job(
    batch_stack: tuple[LocalRuntime, Path],
) -> None:
    rt, release = batch_stack
    rows = ["event_type,user_id,session_id,item_id,timestamp"]
    rows += [f"purchase,u{u},s{u},i{u % 7},2026-11-20T10:{u:02d}:00Z" for u in range(40)]
    rt.put_object("RawBucket", "raw/native/day.csv", "\n".join(rows) + "\n")
    assert all(i.ok for i in rt.invocations_of("IngestEventsFunction"))

    event = _daily_event(rt)
    first = rt.invoke("TrainModelFunction", event)
    assert first["decision"]["action"] == "submit_batch", first
    # Scheduler's retry while the job is queued or running: the same job answers.
    second = rt.invoke("TrainModelFunction", event)
    assert second["batch_job_id"] == first["batch_job_id"]
    assert second["batch_job_status"] in {"SUBMITTED", "RUNNING"}
    release.touch()
    (job,) = rt.wait_for_batch(timeout=120)
    assert job.status == "SUCCEEDED", job.log()
    # Lambda's retry after the job succeeded: still that job, nothing submitted.
    third = rt.invoke("TrainModelFunction", event)
    assert third["batch_job_id"] == first["batch_job_id"] and third["batch_job_status"] == "SUCCEEDED"
    assert [j.job_id for j in rt.batch_jobs()] == [first["batch_job_id"]]

    # The job was told its run: the version and the scheduled instant, on top of the definition's Command.
    printed = json.loads(job.log().strip().splitlines()[-1])
    assert printed["version"] == first["run"]["version"] and printed["version"].startswith("v")
    assert printed["as_of"].startswith(event["time"].removesuffix("Z"))
    assert job.name == first["run"]["job_name"]
    assert printed["argv"].startswith("train --curated-bucket ")

    # The Batch API answers as AWS does: a JOB_NAME filter matches any case and every state.
    assert rt.batch is not None
    batch = boto3.client(
        "batch",
        endpoint_url=rt.batch.url,
        region_name=rt.region,
        aws_access_key_id="t",
        aws_secret_access_key="t",
    )
    queue = rt.physical_name("TrainingJobQueue")
    listed = batch.list_jobs(jobQueue=queue, filters=[{"name": "JOB_NAME", "values": [job.name.upper()]}])
    assert [(j["jobId"], j["status"]) for j in listed["jobSummaryList"]] == [(job.job_id, "SUCCEEDED")]
    assert batch.list_jobs(jobQueue=queue)["jobSummaryList"] == []  # no filter: RUNNING ones only
    prefix = batch.list_jobs(jobQueue=queue, filters=[{"name": "JOB_NAME", "values": ["shelfwise-train-*"]}])
    assert len(prefix["jobSummaryList"]) == 1
    by_definition = [{"name": "JOB_DEFINITION", "values": [job.definition.name]}]
    assert len(batch.list_jobs(jobQueue=queue, filters=by_definition)["jobSummaryList"]) == 1
    with pytest.raises(batch.exceptions.ClientException, match="not emulated"):
        batch.list_jobs(jobQueue=queue, filters=[{"name": "AFTER_CREATED_AT", "values": ["0"]}])
    described = batch.describe_jobs(jobs=[job.job_id])["jobs"][0]
    assert described["jobName"] == job.name and described["status"] == "SUCCEEDED"

    # An operator's invocation (no time) is a run of its own.
    later = time.time()
    manual = rt.invoke("TrainModelFunction", {"mode": "train"})
    assert manual["batch_job_id"] != first["batch_job_id"] and manual["run"]["version"] is None
    rt.wait_for_batch(timeout=120)
    assert len(rt.batch_jobs()) == 2 and rt.batch_jobs()[1].created_at >= later
