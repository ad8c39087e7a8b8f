"""ingest_flow: new labelled batches from the inbox become a new data version, then a retraining.

Each batch is validated alone with the dataset's suite; accepted rows are merged into
data.path and `dvc add` records the new data version; rejected batches are moved to
inbox/rejected with their report and the dataset is not touched. When anything was merged,
training_flow runs (through its deployment when this flow runs as one).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task

from flows.common import RETRY, enter_workspace, markdown, transient_only
from flows.steps import ingest_all
from flows.training import trigger_training


@task(name="ingest-batches", **RETRY, retry_condition_fn=transient_only)
def ingest_task(params_file: str, batch: str | None) -> list[dict[str, Any]]:
    return [r.to_dict() for r in ingest_all(params_file, batch)]


@flow(name="ingest-flow", log_prints=True)
def ingest_flow(params_file: str = "params.yaml", batch: str | None = None, train: bool = True) -> dict[str, Any]:
    """Validate and merge pending inbox batches (or `batch`); retrain when data was added."""
    enter_workspace()
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
