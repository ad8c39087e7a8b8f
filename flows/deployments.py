"""graft's Prefect deployments: served from one process by `graft worker`, or registered on a
Prefect server's work pools by `graft deploy` and run there by `graft worker --pool NAME`.

    graft-training    training_flow, cron schedule.training_cron (weekly), pool schedule.training_pool
    graft-monitoring  monitoring_flow, every schedule.monitoring_minutes (hourly), pool schedule.monitoring_pool
    graft-ingest      ingest_flow, every schedule.ingest_minutes (5 minutes), pool schedule.ingest_pool

One machine (`graft worker`): `flow.serve` in one process, against PREFECT_API_URL or a local
Prefect server it starts (graft/worker.py). A team (`graft deploy`): each deployment names its
work pool and its flow by module path (`flows.training.training_flow`), so the code is the graft
package installed on the worker's machine, and the workspace (params.yaml, data, outputs) is the
folder the worker was started in (GRAFT_WORKSPACE, see flows/common.py). At most one training
run per deployment at a time: a concurrency limit of 1 (the next one waits in the queue).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flows.ingest import ingest_flow
from flows.monitoring import monitoring_flow
from flows.training import training_flow
from pipeline.core.config import load_params

TRAINING = "graft-training"


def deployments(params_file: str = "params.yaml", to_pools: bool = False) -> list[Any]:
    """The three deployments; `to_pools`: for `graft deploy` (module-path entrypoints, work pools,
    training's concurrency limit)."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.deployments.runner import EntrypointType

    s = load_params(params_file).schedule
    args = {"params_file": params_file}

    def on(pool: str, **extra: Any) -> dict[str, Any]:
        return {"entrypoint_type": EntrypointType.MODULE_PATH, "work_pool_name": pool, **extra} if to_pools else {}

    one_at_a_time = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)
    return [
        training_flow.to_deployment(name=TRAINING, cron=s.training_cron, parameters={**args, "reason": "schedule"},
                                    description="weekly retraining", tags=["graft"],
                                    **on(s.training_pool, concurrency_limit=one_at_a_time)),
        monitoring_flow.to_deployment(name="graft-monitoring", interval=timedelta(minutes=s.monitoring_minutes),
                                      parameters=args, description="drift monitoring", tags=["graft"],
                                      **on(s.monitoring_pool)),
        ingest_flow.to_deployment(name="graft-ingest", interval=timedelta(minutes=s.ingest_minutes),
                                  parameters=args, description="new labelled data from the inbox", tags=["graft"],
                                  **on(s.ingest_pool)),
    ]


def main(params_file: str = "params.yaml") -> None:
    """Serve the deployments from this process against PREFECT_API_URL (`graft worker`)."""
    from prefect import serve

    serve(*deployments(params_file))


@dataclass(frozen=True)
class Registered:
    name: str  # flow/deployment
    pool: str
    schedule: str
    pool_created: bool


def register(params_file: str = "params.yaml") -> list[Registered]:
    """Create the work pools that are missing (process type) and apply every deployment to the
    server at PREFECT_API_URL (`graft deploy`); applying again updates them in place."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    out = []
    created: set[str] = set()
    with get_client(sync_client=True) as client:
        for d in deployments(params_file, to_pools=True):
            pool = d.work_pool_name
            try:
                client.read_work_pool(pool)
            except ObjectNotFound:
                client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
                created.add(pool)
            d.apply(work_pool_name=pool)
            when = next((str(getattr(s.schedule, "cron", None) or getattr(s.schedule, "interval", ""))
                         for s in d.schedules or []), "none")
            out.append(Registered(f"{d.flow_name}/{d.name}", pool, when, pool in created))
    return out
