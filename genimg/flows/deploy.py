"""`genimg deploy`: the retrain flow as a scheduled deployment on a Prefect server.

Creates or updates (same name → same deployment) the deployment of `retrain` with a cron
schedule in a process work pool, created if missing. A Prefect worker on a machine where genimg
is installed (a wheel or a checkout) runs the scheduled flow runs: `prefect worker start --pool
genimg-process`. The entrypoint is a module of the package (`genimg.flows.retrain:retrain`), so
no source tree is needed; the flow runs start in the folder `genimg deploy` ran in, as with
`prefect deploy`. `infra/prefect/prefect.yaml` declares the same deployment for `prefect deploy`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from genimg.errors import GenimgError
from genimg.flows.retrain import retrain
from genimg.flows.settings import load_retrain_config

if TYPE_CHECKING:
    from uuid import UUID

    from prefect.client.schemas.objects import DeploymentSchedule
    from prefect.deployments.runner import RunnerDeployment

DEPLOYMENT = "genimg-retrain"
WORK_POOL = "genimg-process"
CRON = "0 3 * * *"
# A module the wheel carries: a file path (pipelines/retrain.py) exists only in a checkout.
ENTRYPOINT = "genimg.flows.retrain:retrain"


def deploy_retrain(
    cron: str = CRON,
    work_pool: str = WORK_POOL,
    name: str = DEPLOYMENT,
    config_path: str | None = None,
    timezone: str = "UTC",
    working_dir: Path | None = None,
) -> dict[str, Any]:
    """Create or update the deployment; flow runs start in `working_dir` (default: this folder)."""
    api_url = os.environ.get("PREFECT_API_URL")
    if not api_url:
        raise GenimgError(
            "genimg deploy needs a Prefect server: set PREFECT_API_URL (e.g. http://prefect:4200/api); "
            "schedules do not run on Prefect's temporary local server"
        )
    from prefect.schedules import Cron

    try:
        schedule = Cron(cron, timezone=timezone)
    except ValueError as exc:
        raise GenimgError(f"invalid --cron {cron!r}: {exc}") from exc
    if config_path is not None:
        load_retrain_config(config_path)  # a bad config fails now, not at 3 a.m.
    ensure_work_pool(work_pool, api_url)
    working_dir = (working_dir or Path.cwd()).resolve()
    # to_deployment and apply dispatch on the caller (Prefect's async_dispatch), typed value or
    # coroutine: outside an event loop, as here, they run their sync implementation and return the value.
    deployment = cast(
        "RunnerDeployment",
        retrain.to_deployment(
            name,
            schedule=schedule,
            parameters={"config_path": config_path},
            work_pool_name=work_pool,
            tags=["genimg"],
            description="genimg retrain: ingest, train, evaluate, register, promote",
            # The process worker starts flow runs here: a relative GENIMG_HOME (./.genimg) means this folder.
            job_variables={"working_dir": str(working_dir)},
        ),
    )
    deployment.entrypoint = ENTRYPOINT
    # The flow run's folder itself: Prefect copies a deployment's path into the run's folder first.
    deployment._path = str(working_dir)
    deployment_id = cast("UUID", deployment.apply(work_pool_name=work_pool))
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        stored = client.read_deployment(deployment_id)
    return {
        "deployment_id": str(deployment_id),
        "name": f"retrain/{stored.name}",
        "work_pool": stored.work_pool_name,
        "schedules": [cron_schedule(s) for s in stored.schedules],
        "entrypoint": stored.entrypoint,
        "parameters": stored.parameters,
        "api_url": api_url,
    }


def cron_schedule(deployment_schedule: DeploymentSchedule) -> dict[str, Any]:
    """One schedule of the deployment, as `deploy_retrain` reports it: the Cron it was given."""
    from prefect.client.schemas.schedules import CronSchedule

    schedule = deployment_schedule.schedule
    assert isinstance(schedule, CronSchedule), f"expected the deployment's cron schedule, got {schedule!r}"
    return {"cron": schedule.cron, "timezone": schedule.timezone, "active": deployment_schedule.active}


def ensure_work_pool(name: str, api_url: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    try:
        with get_client(sync_client=True) as client:
            try:
                client.read_work_pool(name)
            except ObjectNotFound:
                client.create_work_pool(WorkPoolCreate(name=name, type="process"))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GenimgError(f"cannot reach the Prefect server at {api_url}: {first}") from exc


__all__ = ["deploy_retrain"]
