"""ingest_flow: new labelled batches from the inbox become a new data version, then a retraining.

Each batch is validated alone with the dataset's suite; accepted rows are merged into
data.path and `dvc add` records the new data version; rejected batches are moved to
inbox/rejected with their report and the dataset is not touched. When anything was merged,
training_flow runs (through its deployment when this flow runs as one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from flows.common import RETRY, dvc, markdown, tracking_file, transient_only
from pipeline.ingest import ingest_batch, pending
from pipeline.params import load_params


def ingest_all(params_file: str, batch: str | None = None, overrides: list[str] | None = None) -> list[dict[str, Any]]:
    """Ingest `batch`, or every pending inbox batch; `dvc add` the data once if anything merged."""
    p = load_params(params_file, overrides)
    batches = [Path(batch)] if batch else pending(p.paths.inbox)
    results = [ingest_batch(p, b, p.paths.inbox).to_dict() for b in batches]
    if any(r["accepted"] for r in results):
        tracked = tracking_file(p.data.path)
        if tracked is not None:
            dvc("add", str(tracked.with_suffix("")))  # a new data version in data/raw.dvc
    return results


@task(name="ingest-batches", **RETRY, retry_condition_fn=transient_only)
def ingest_task(params_file: str, batch: str | None) -> list[dict[str, Any]]:
    return ingest_all(params_file, batch)


def trigger_training(params_file: str, reason: str, ingest: bool = True) -> dict[str, Any]:
    """Run training_flow: through its deployment when this run is deployed, else as a subflow.

    ingest: let the training run ingest pending inbox batches first (False when this flow just did)."""
    from prefect.runtime import deployment

    if deployment.id:  # served by `graft worker`: the deployment runs it, with its own retries
        from prefect.deployments import run_deployment

        run = run_deployment("training-flow/graft-training", parameters={"params_file": params_file, "reason": reason,
                                                                        "ingest": ingest},
                             timeout=0, as_subflow=False)
        return {"triggered": "deployment", "flow_run_id": str(run.id), "reason": reason}
    from flows.training import training_flow

    summary = training_flow(params_file=params_file, reason=reason, ingest=ingest)
    return {"triggered": "subflow", "version": summary["version"], "status": summary["status"],
            "champion": summary["champion"], "reason": reason}


@flow(name="ingest-flow", log_prints=True)
def ingest_flow(params_file: str = "params.yaml", batch: str | None = None, train: bool = True) -> dict[str, Any]:
    """Validate and merge pending inbox batches (or `batch`); retrain when data was added."""
    logger = get_run_logger()
    results = ingest_task(params_file, batch)
    for r in results:
        logger.info("%s: %s (%s)", r["batch"], "merged" if r["accepted"] else "REJECTED", "; ".join(r["reasons"]))
    accepted = [r for r in results if r["accepted"]]
    if results:
        markdown("ingest", "# Ingest\n\n" + "\n".join(
            f"- **{r['batch']}**: {'merged' if r['accepted'] else 'rejected'}: {'; '.join(r['reasons'])}"
            + (f" (moved to {r['moved_to']})" if r["moved_to"] else "") for r in results), "Inbox batches")
    out: dict[str, Any] = {"batches": results, "training": None}
    if accepted and train:
        rows = sum(r["merged"] for r in accepted)
        out["training"] = trigger_training(params_file, f"new data: {rows} rows from "
                                           + ", ".join(r["batch"] for r in accepted), ingest=False)
    return out
