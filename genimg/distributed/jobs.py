"""A genimg command run as a Ray Job on a cluster's head (`JobSubmissionClient`).

The job lives on the cluster, not in the process that submitted it: that process only follows
the job's status and logs. If it dies (a Prefect worker restarted, a laptop closed), running the
same command again with the same run name attaches to the job still running — or picks up the
result of the one that finished — instead of starting the training a second time. A job that
failed or was stopped is submitted anew; the command carries `--resume`, so it continues from the
run's latest checkpoint.

The command prints one JSON object (`--json`); it is read back from the job's logs.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from genimg.distributed.cluster import AUTH_HINT
from genimg.errors import GenimgError, without_userinfo
from genimg.store import default_store_uri
from genimg.tracking.runs import experiment_name, tracking_uri

# Submitter-side settings the job needs to see the same store and tracking server. Credentials
# are not forwarded: a job's runtime_env is shown in the dashboard. Nodes bring their own
# (instance role, Kubernetes Secret, ~/.aws), as they do for Ray Train's checkpoint uploads.
FORWARDED_ENV = (
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "MLFLOW_S3_ENDPOINT_URL",
    "GENIMG_FLOW_RUN_ID",
)
RUN_NAME_KEY = "genimg_run_name"
ACTIVE = ("PENDING", "RUNNING")


@dataclass(frozen=True)
class RayJobsTarget:
    """Where and how to submit: the dashboard address (http://head:8265), the command that runs
    genimg on the cluster, and a runtime_env merged over the forwarded settings."""

    address: str
    entrypoint: str = "genimg"
    runtime_env: dict[str, Any] = field(default_factory=dict)
    forward_env: tuple[str, ...] = ()
    poll_seconds: float = 2.0


@dataclass
class JobOutcome:
    submission_id: str
    status: str
    attached: bool  # True when an earlier submission of this run was followed instead
    payload: dict[str, Any]


def job_runtime_env(target: RayJobsTarget, submission_id: str) -> dict[str, Any]:
    # A job's runtime_env is shown in Ray's dashboard: the tracking URI goes without credentials
    # in it; the cluster gives MLflow its own (MLFLOW_TRACKING_USERNAME / _PASSWORD or _TOKEN).
    env = {
        "GENIMG_STORE": default_store_uri(),
        "MLFLOW_TRACKING_URI": without_userinfo(tracking_uri()),
        "MLFLOW_EXPERIMENT_NAME": experiment_name(),
        "GENIMG_RAY_JOB": submission_id,
    }  # tags the job's MLflow runs
    for name in (*FORWARDED_ENV, *target.forward_env):
        if os.environ.get(name):
            env[name] = os.environ[name]
    runtime_env = dict(target.runtime_env)
    runtime_env["env_vars"] = {**env, **(target.runtime_env.get("env_vars") or {})}
    return runtime_env


def client_for(address: str) -> Any:
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = f"; if {AUTH_HINT}" if "auth" in str(exc).lower() else ""
        raise GenimgError(f"cannot reach the Ray Jobs API at {address}: {first}{hint}") from exc


def last_json_object(logs: str) -> dict[str, Any] | None:
    for line in reversed(logs.splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    return None


def run_genimg_job(
    target: RayJobsTarget,
    args: list[str],
    run_name: str,
    *,
    resume_args: tuple[str, ...] = ("--resume",),
    on_log: Callable[[str], None] | None = None,
    timeout_s: float | None = None,
) -> JobOutcome:
    """Run `genimg ARGS --json` as a Ray Job (or follow the one already running for `run_name`)
    and return its JSON output; a submission after a failed or stopped one adds `resume_args`.
    Raises GenimgError naming the job when it does not succeed."""
    client = client_for(target.address)
    earlier = sorted(
        (job for job in client.list_jobs() if (job.metadata or {}).get(RUN_NAME_KEY) == run_name and job.submission_id),
        key=lambda job: job.start_time or 0,
    )
    current = next((job for job in reversed(earlier) if str(job.status.value) in ACTIVE + ("SUCCEEDED",)), None)
    if current is not None:
        submission_id, attached = current.submission_id, True
    else:
        submission_id, attached = f"genimg-{run_name}-{len(earlier) + 1}", False
        command = shlex.join([*shlex.split(target.entrypoint), *args, *(resume_args if earlier else ()), "--json"])
        client.submit_job(
            entrypoint=command,
            submission_id=submission_id,
            runtime_env=job_runtime_env(target, submission_id),
            metadata={RUN_NAME_KEY: run_name},
        )
    status, logs = follow(client, submission_id, target.poll_seconds, on_log, timeout_s)
    if status != "SUCCEEDED":
        # One line: Ray's message (its first line; the rest repeats the logs) and the job's
        # last log line, which for genimg is its own one-line error.
        message = (client.get_job_info(submission_id).message or "").strip().splitlines()
        last_line = next((line.strip() for line in reversed(logs.splitlines()) if line.strip()), "")
        raise GenimgError(
            f"Ray job {submission_id} on {target.address} ended {status}: "
            f"{message[0] if message else 'no message'}" + (f"; last log line: {last_line}" if last_line else "")
        )
    payload = last_json_object(logs)
    if payload is None:
        raise GenimgError(
            f"Ray job {submission_id} succeeded but printed no JSON result (entrypoint {target.entrypoint!r})"
        )
    return JobOutcome(submission_id, status, attached, payload)


def follow(
    client: Any, submission_id: str, poll_seconds: float, on_log: Callable[[str], None] | None, timeout_s: float | None
) -> tuple[str, str]:
    """Poll the job until it ends, passing each new log line on; returns (status, all logs)."""
    started = time.monotonic()
    shown = 0
    while True:
        status = str(client.get_job_status(submission_id).value)
        logs = client.get_job_logs(submission_id)
        new = logs[shown:]
        if status in ACTIVE:
            new = new[: new.rfind("\n") + 1]  # a line still being written comes with the next poll
        if on_log is not None:
            for line in new.splitlines():
                on_log(line)
        shown += len(new)
        if status not in ACTIVE:
            return status, logs
        if timeout_s is not None and time.monotonic() - started > timeout_s:
            raise GenimgError(
                f"Ray job {submission_id} still {status} after {timeout_s:.0f} s; it goes on on the cluster"
            )
        time.sleep(poll_seconds)


__all__ = ["JobOutcome", "RayJobsTarget", "run_genimg_job"]
