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
CRASH_WATCH = "graft: flow runs whose process died"


def heartbeat_seconds(crashed_after: float) -> int:
    """Each flow run's heartbeat (PREFECT_FLOWS_HEARTBEAT_FREQUENCY, set by `graft worker --pool`):
    at least two beats fit in schedule.crashed_after_seconds, so one late beat is no crash; Prefect
    accepts no beat faster than every 30 s."""
    return max(30, int(crashed_after // 3))


def crash_watch(crashed_after: float) -> Any:
    """The automation that marks a flow run CRASHED when its heartbeats stop (its worker or its
    machine died mid-run): without it such a run stays RUNNING on the server for ever."""
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture

    final = ["Completed", "Failed", "Cancelled", "Crashed"]
    return Automation(
        name=CRASH_WATCH, description="graft deploy: a flow run whose heartbeats stop is marked crashed",
        trigger=EventTrigger(match={"prefect.resource.id": "prefect.flow-run.*"},
                             after={"prefect.flow-run.heartbeat"},
                             expect={"prefect.flow-run.heartbeat", *(f"prefect.flow-run.{s}" for s in final)},
                             for_each={"prefect.resource.id"}, posture=Posture.Proactive, threshold=1,
                             within=timedelta(seconds=crashed_after)),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message=f"no heartbeat for {crashed_after:g} s: the run's process died")])


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
        for old in client.read_automations_by_name(CRASH_WATCH):  # applying again replaces it
            client.delete_automation(old.id)
    crash_watch(load_params(params_file).schedule.crashed_after_seconds).create()
    return out
