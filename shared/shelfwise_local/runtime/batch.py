"""AWS Batch, locally: a job submitted to a template's job queue runs as a local process.

Neither emulator runs Batch jobs without Docker (moto starts containers; LocalStack's community
edition has no Batch), so the runtime serves the Batch API itself, on a loopback port that the
functions reach through boto3's own ``AWS_ENDPOINT_URL_BATCH``: no ``if local:`` in the handler.
``SubmitJob`` starts what the container would run, as a child process:

- the command: the training image's ``ENTRYPOINT`` (read from the ``Dockerfile`` beside the
  template) followed by the job definition's ``Command`` (or the submit's ``containerOverrides``);
- the environment: the job definition's ``Environment`` (and overrides), the variables Batch sets
  in every job (``AWS_BATCH_JOB_ID``, ``AWS_BATCH_JQ_NAME``, ``AWS_BATCH_JOB_ATTEMPT``), and the
  emulator's endpoint and credentials, so the job's S3, SSM, EventBridge and CloudWatch calls
  reach the same emulator as the functions;
- executables from ``bin_dirs`` (default: this Python's environment), so a test can run the job
  in a fresh virtual environment built from the image's requirement files;
- the job definition's ``Timeout.AttemptDurationSeconds``, after which the process is killed
  and the job FAILED, as Batch does. One attempt (retry strategies are not emulated).

``DescribeJobs``, ``ListJobs`` and ``TerminateJob`` answer from the same records, as Batch does:
``ListJobs`` takes a queue and a ``jobStatus`` (default ``RUNNING``), or one ``JOB_NAME`` filter
(case-insensitive, a trailing ``*`` matches a prefix) or ``JOB_DEFINITION`` filter (a name
matches every revision, case-sensitive), which answer jobs in every state, newest first; other
filters are refused as not emulated. A job runs on
wall time (it is another process); what it causes (a registered version, its ``ModelRegistered``
event) is delivered by the runtime's next ``pump()``; :meth:`LocalBatch.wait` waits for jobs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from shelfwise_local.runtime.base import Resource, RuntimeBase
from shelfwise_local.runtime.template import physical_id

TERMINAL = ("SUCCEEDED", "FAILED")
JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
# The Batch API (rest-json) paths served, and the method answering each.
ROUTES = {
    "/v1/submitjob": "submit",
    "/v1/describejobs": "describe",
    "/v1/listjobs": "list",
    "/v1/terminatejob": "terminate",
}


class BatchClientError(Exception):
    """Batch's ``ClientException``: a bad request (unknown queue or definition, bad arguments)."""


@dataclass
class JobDefinition:
    name: str
    arn: str
    command: list[str]
    environment: dict[str, str]
    timeout_seconds: float | None


@dataclass
class JobQueue:
    name: str
    arn: str


@dataclass
class Job:
    job_id: str
    name: str
    queue: JobQueue
    definition: JobDefinition
    argv: list[str]
    environment: dict[str, str]
    log_path: Path
    created_at: float
    status: str = "SUBMITTED"
    started_at: float | None = None
    stopped_at: float | None = None
    exit_code: int | None = None
    reason: str = ""
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    done: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def arn(self) -> str:
        region_account = self.queue.arn.split(":")[3:5]
        return f"arn:aws:batch:{region_account[0]}:{region_account[1]}:job/{self.job_id}"

    def log(self) -> str:
        """What the job wrote to stdout and stderr (its CloudWatch log stream in AWS)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def summary(self) -> dict[str, Any]:
        """The job as ListJobs answers it (a ``JobSummary``)."""
        out: dict[str, Any] = {
            "jobArn": self.arn,
            "jobId": self.job_id,
            "jobName": self.name,
            "status": self.status,
            "createdAt": int(self.created_at * 1000),
            "jobDefinition": self.definition.arn,
        }
        if self.started_at is not None:
            out["startedAt"] = int(self.started_at * 1000)
        if self.stopped_at is not None:
            out["stoppedAt"] = int(self.stopped_at * 1000)
        if self.reason:
            out["statusReason"] = self.reason
        if self.exit_code is not None:
            out["container"] = {"exitCode": self.exit_code}
        return out

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "jobArn": self.arn,
            "jobName": self.name,
            "jobId": self.job_id,
            "jobQueue": self.queue.arn,
            "status": self.status,
            "createdAt": int(self.created_at * 1000),
            "jobDefinition": self.definition.arn,
            "container": {
                "command": self.argv,
                "environment": [
                    {"name": k, "value": v}
                    for k, v in self.environment.items()
                    if k.startswith(("AWS_BATCH",))
                ]
                + [{"name": k, "value": v} for k, v in self.definition.environment.items()],
                "logStreamName": str(self.log_path),
            },
        }
        if self.started_at is not None:
            out["startedAt"] = int(self.started_at * 1000)
        if self.stopped_at is not None:
            out["stoppedAt"] = int(self.stopped_at * 1000)
        if self.exit_code is not None:
            out["container"]["exitCode"] = self.exit_code
        if self.reason:
            out["statusReason"] = self.reason
        return out


def _filter_matches(flt: Any, job: Job) -> bool:
    """Whether ``job`` passes one ListJobs filter (``{"name": ..., "values": [...]}``)."""
    name = flt.get("name") if isinstance(flt, dict) else None
    values = flt.get("values") if isinstance(flt, dict) else None
    if not isinstance(values, list) or len(values) != 1 or not isinstance(values[0], str):
        raise BatchClientError("a ListJobs filter takes one value")
    value = values[0]
    if name == "JOB_NAME":
        got, want = job.name.lower(), value.lower()
        return got.startswith(want[:-1]) if want.endswith("*") else got == want
    if name == "JOB_DEFINITION":
        if value.startswith("arn:"):
            return job.definition.arn == value
        return (
            job.definition.name.startswith(value[:-1])
            if value.endswith("*")
            else job.definition.name == value
        )
    raise BatchClientError(f"ListJobs filter {name!r} is not emulated locally (JOB_NAME, JOB_DEFINITION)")


def _name_value_list(items: Any) -> dict[str, str]:
    out = {}
    for item in items or []:
        name = item.get("Name", item.get("name"))
        value = item.get("Value", item.get("value", ""))
        if name:
            out[str(name)] = str(value)
    return out


class LocalBatch:
    """Job queues and definitions of a template, a Batch API on a loopback port, jobs as processes."""

    def __init__(
        self,
        *,
        region: str,
        account_id: str,
        entrypoint: list[str],
        job_env: dict[str, str],
        bin_dirs: list[str] | None = None,
        work_dir: str | Path | None = None,
    ) -> None:
        self.region, self.account_id = region, account_id
        self.entrypoint = list(entrypoint)
        self.job_env = dict(job_env)
        self.bin_dirs = list(bin_dirs) if bin_dirs else [str(Path(sys.executable).parent)]
        # a directory of our own making (jobs' logs and working directories) goes with stop()
        self._own_work_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="shelfwise-batch-"))
        self.queues: dict[str, JobQueue] = {}  # by name and by ARN
        self.definitions: dict[str, JobDefinition] = {}  # by name, name:1 and ARN
        self.jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------------ template resources
    def add_queue(self, name: str) -> JobQueue:
        queue = JobQueue(name, f"arn:aws:batch:{self.region}:{self.account_id}:job-queue/{name}")
        self.queues[name] = self.queues[queue.arn] = queue
        return queue

    def add_definition(self, name: str, props: dict[str, Any]) -> JobDefinition:
        container = props.get("ContainerProperties") or {}
        timeout = (props.get("Timeout") or {}).get("AttemptDurationSeconds")
        arn = f"arn:aws:batch:{self.region}:{self.account_id}:job-definition/{name}:1"
        definition = JobDefinition(
            name=name,
            arn=arn,
            command=[str(c) for c in container.get("Command") or []],
            environment=_name_value_list(container.get("Environment")),
            timeout_seconds=float(timeout) if timeout else None,
        )
        for key in (name, f"{name}:1", arn):
            self.definitions[key] = definition
        return definition

    # ------------------------------------------------------------------ the API
    def submit(self, request: dict[str, Any]) -> dict[str, Any]:
        name = request.get("jobName")
        if not isinstance(name, str) or not JOB_NAME.match(name):
            raise BatchClientError(
                f"jobName {name!r}: up to 128 letters, digits, hyphens and underscores, starting alphanumeric"
            )
        queue = self.queues.get(str(request.get("jobQueue")))
        if queue is None:
            raise BatchClientError(f"job queue {request.get('jobQueue')!r} does not exist")
        definition = self.definitions.get(str(request.get("jobDefinition")))
        if definition is None:
            raise BatchClientError(f"job definition {request.get('jobDefinition')!r} does not exist")
        overrides = request.get("containerOverrides") or {}
        command = [str(c) for c in overrides.get("command") or definition.command]
        job_id = str(uuid.uuid4())
        env = {
            **self.job_env,
            **definition.environment,
            **_name_value_list(overrides.get("environment")),
            "AWS_BATCH_JOB_ID": job_id,
            "AWS_BATCH_JQ_NAME": queue.name,
            "AWS_BATCH_JOB_ATTEMPT": "1",
        }
        env["PATH"] = os.pathsep.join([*self.bin_dirs, env.get("PATH") or os.environ.get("PATH", "")])
        job = Job(
            job_id=job_id,
            name=name,
            queue=queue,
            definition=definition,
            argv=[*self.entrypoint, *command],
            environment=env,
            log_path=self.work_dir / f"{job_id}.log",
            created_at=time.time(),
        )
        with self._lock:
            self.jobs[job_id] = job
        threading.Thread(target=self._run, args=(job,), name=f"batch-{job_id[:8]}", daemon=True).start()
        return {"jobArn": job.arn, "jobName": name, "jobId": job_id}

    def _run(self, job: Job) -> None:
        cwd = self.work_dir / job.job_id
        cwd.mkdir(parents=True, exist_ok=True)
        env = {**job.environment, "HOME": str(cwd), "TMPDIR": str(cwd)}
        try:
            with open(job.log_path, "wb") as log:
                executable = _which(job.argv[0], env["PATH"]) if job.argv else None
                if executable is None:
                    raise FileNotFoundError(f"{job.argv[:1]} not found on {self.bin_dirs}")
                job.process = subprocess.Popen(
                    [executable, *job.argv[1:]], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT
                )
                job.status, job.started_at = "RUNNING", time.time()
                try:
                    job.exit_code = job.process.wait(timeout=job.definition.timeout_seconds)
                except subprocess.TimeoutExpired:
                    job.process.kill()
                    job.process.wait()
                    job.exit_code = None
                    job.reason = "Job attempt duration exceeded timeout"
            if job.status == "RUNNING" and job.reason != "Terminated":
                ok = job.exit_code == 0
                job.status = "SUCCEEDED" if ok else "FAILED"
                if not ok and not job.reason:
                    job.reason = f"Essential container in task exited (exit code {job.exit_code})"
        except OSError as exc:  # CannotStartContainerError, in Batch's words
            job.status, job.reason = "FAILED", f"CannotStartContainerError: {exc}"
        finally:
            if job.status not in TERMINAL:
                job.status = "FAILED"
            job.stopped_at = time.time()
            job.done.set()

    def describe(self, request: dict[str, Any]) -> dict[str, Any]:
        ids = request.get("jobs")
        if not isinstance(ids, list) or len(ids) > 100:
            raise BatchClientError("jobs must be a list of at most 100 job ids")
        return {"jobs": [self.jobs[i].describe() for i in ids if i in self.jobs]}

    def list(self, request: dict[str, Any]) -> dict[str, Any]:
        queue = self.queues.get(str(request.get("jobQueue")))
        if request.get("jobQueue") is not None and queue is None:
            raise BatchClientError(f"job queue {request.get('jobQueue')!r} does not exist")
        filters = request.get("filters") or []
        if len(filters) > 1:
            raise BatchClientError("only one filter can be used at a time")
        jobs = [j for j in self.jobs.values() if queue is None or j.queue is queue]
        if filters:  # jobStatus is ignored: jobs in every state, newest first
            jobs = sorted((j for j in jobs if _filter_matches(filters[0], j)), key=lambda j: -j.created_at)
        else:
            wanted = request.get("jobStatus") or "RUNNING"
            jobs = [j for j in jobs if j.status == wanted]
        return {"jobSummaryList": [j.summary() for j in jobs]}

    def terminate(self, request: dict[str, Any]) -> dict[str, Any]:
        job = self.jobs.get(str(request.get("jobId")))
        if job is None:
            raise BatchClientError(f"job {request.get('jobId')!r} does not exist")
        if job.status not in TERMINAL:
            job.reason = "Terminated"
            job.status = "FAILED"
            if job.process is not None:
                with contextlib.suppress(OSError):
                    job.process.kill()
        return {}

    def wait(self, timeout: float = 600.0) -> list[Job]:
        """Wait until every submitted job has ended (or ``timeout``); returns the jobs."""
        deadline = time.monotonic() + timeout
        for job in list(self.jobs.values()):
            job.done.wait(max(0.0, deadline - time.monotonic()))
        return list(self.jobs.values())

    # ------------------------------------------------------------------ the server

    def start(self) -> str:
        """Serve the API on a free loopback port; returns its URL (for ``AWS_ENDPOINT_URL_BATCH``)."""
        batch = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                operation = ROUTES.get(self.path.split("?")[0].rstrip("/").lower())
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                    if operation is None:
                        raise BatchClientError(f"{self.path} is not emulated locally")
                    if not isinstance(body, dict):
                        raise BatchClientError("the request body must be a JSON object")
                    status, answer = 200, getattr(batch, operation)(body)
                except (BatchClientError, ValueError) as exc:
                    status, answer = 400, {"__type": "ClientException", "message": str(exc)}
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status != 200:
                    self.send_header("x-amzn-ErrorType", "ClientException")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, name="local-batch", daemon=True).start()
        return self.url

    @property
    def url(self) -> str:
        assert self._server is not None, "local Batch not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        for job in self.jobs.values():
            if job.process is not None and job.process.poll() is None:
                with contextlib.suppress(OSError):
                    job.process.kill()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._own_work_dir:
            for job in self.jobs.values():
                if job.process is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        job.process.wait(timeout=10)
            shutil.rmtree(self.work_dir, ignore_errors=True)


def _which(program: str, path: str) -> str | None:
    if os.sep in program:
        return program
    for d in path.split(os.pathsep):
        candidate = Path(d) / program
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def image_entrypoint(template_path: Path) -> list[str]:
    """ENTRYPOINT of the ``Dockerfile`` beside the template (empty when there is none)."""
    from shelfwise_local.dockerfile import Dockerfile

    dockerfile = template_path.parent / "Dockerfile"
    return Dockerfile.read(dockerfile).entrypoint if dockerfile.exists() else []


class BatchJobs(RuntimeBase):
    """The runtime's part for AWS Batch (and ECR, its image store): the template's job queues and
    definitions served by a :class:`LocalBatch`, compute environments and repositories by name."""

    batch: LocalBatch | None
    batch_bin_dirs: list[str] | None

    def _start_batch(self) -> None:
        """Start the local Batch API (before the stack is created: queues register with it)."""
        self.batch = LocalBatch(
            region=self.region,
            account_id=self.account_id,
            entrypoint=image_entrypoint(self.template_path),
            job_env={
                "AWS_ENDPOINT_URL": self.endpoint_url,
                "AWS_DEFAULT_REGION": self.region,
                "AWS_REGION": self.region,
                "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
                "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
                "PATH": os.environ.get("PATH", ""),
            },
            bin_dirs=self.batch_bin_dirs,
        )
        self.batch.start()

    def _stop_batch(self) -> None:
        if self.batch is not None:
            self.batch.stop()

    def _local_batch(self) -> LocalBatch:
        assert self.batch is not None, "runtime not started"
        return self.batch

    def _create_aws_batch_computeenvironment(self, lid: str, props: dict[str, Any]) -> Resource:
        name = props.get("ComputeEnvironmentName") or physical_id(self.stack_name, lid)
        arn = f"arn:aws:batch:{self.region}:{self.account_id}:compute-environment/{name}"
        return Resource(lid, "AWS::Batch::ComputeEnvironment", arn, {"ComputeEnvironmentArn": arn})

    def _create_aws_batch_jobqueue(self, lid: str, props: dict[str, Any]) -> Resource:
        queue = self._local_batch().add_queue(props.get("JobQueueName") or physical_id(self.stack_name, lid))
        return Resource(lid, "AWS::Batch::JobQueue", queue.arn, {"JobQueueArn": queue.arn})

    def _create_aws_batch_jobdefinition(self, lid: str, props: dict[str, Any]) -> Resource:
        name = props.get("JobDefinitionName") or physical_id(self.stack_name, lid)
        definition = self._local_batch().add_definition(name, props)
        return Resource(
            lid, "AWS::Batch::JobDefinition", definition.arn, {"JobDefinitionArn": definition.arn}
        )

    def _create_aws_ecr_repository(self, lid: str, props: dict[str, Any]) -> Resource:
        # Known by name: a job runs the image's recipe from this checkout, not a pulled image.
        name = props.get("RepositoryName") or physical_id(self.stack_name, lid, lower=True)
        uri = f"{self.account_id}.dkr.ecr.{self.region}.amazonaws.com/{name}"
        arn = f"arn:aws:ecr:{self.region}:{self.account_id}:repository/{name}"
        return Resource(lid, "AWS::ECR::Repository", name, {"Arn": arn, "RepositoryUri": uri}, emulated=False)

    def batch_jobs(self) -> list[Job]:
        """Every job submitted so far (status, command, environment, log)."""
        return list(self._local_batch().jobs.values())

    def wait_for_batch(self, timeout: float = 600.0) -> list[Job]:
        """Wait for every submitted job to end, then deliver what they caused (their events)."""
        jobs = self._local_batch().wait(timeout)
        self.pump()
        return jobs
