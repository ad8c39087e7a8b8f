"""graft's Prefect deployments, served by `graft worker`.

    graft-training    training_flow, cron params.schedule.training_cron (weekly by default)
    graft-monitoring  monitoring_flow, every params.schedule.monitoring_minutes (hourly)
    graft-ingest      ingest_flow, every params.schedule.ingest_minutes (5 minutes)

With PREFECT_API_URL set they run against that server (`prefect server start`, or Prefect
Cloud). Without it a local Prefect server is started first (graft/worker.py): Prefect's
per-process temporary server runs no scheduler, so schedules would never fire there.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flows.ingest import ingest_flow
from flows.monitoring import monitoring_flow
from flows.training import training_flow
from pipeline.core.config import load_params


def deployments(params_file: str = "params.yaml") -> list[Any]:
    s = load_params(params_file).schedule
    args = {"params_file": params_file}
    return [
        training_flow.to_deployment(name="graft-training", cron=s.training_cron, parameters={**args, "reason": "schedule"},
                                    description="weekly retraining", tags=["graft"]),
        monitoring_flow.to_deployment(name="graft-monitoring", interval=timedelta(minutes=s.monitoring_minutes),
                                      parameters=args, description="drift monitoring", tags=["graft"]),
        ingest_flow.to_deployment(name="graft-ingest", interval=timedelta(minutes=s.ingest_minutes),
                                  parameters=args, description="new labelled data from the inbox", tags=["graft"]),
    ]


def main(params_file: str = "params.yaml") -> None:
    """Serve the deployments against PREFECT_API_URL (graft worker sets it when it is unset)."""
    from prefect import serve

    serve(*deployments(params_file))

