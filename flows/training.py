"""training_flow: `graft run` as a Prefect flow, one task per stage of the stage table.

Each stage is a task named after it, with retries for transient failures (disk, network, a
busy registry or DVC lock); data, params and model errors fail at once, and a rejected gate is
a normal result. Pending inbox batches are ingested first, so a retraining learns from every
labelled example that has arrived. The registry lock is held for the whole run; at the end the
data and pipeline outputs are pushed to the DVC remote, and the leaderboard, metrics, gate and
summary become artifacts.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.states import Cancelled

from flows.common import RETRY, enter_workspace, markdown, table, transient_only
from flows.steps import (
    RunSummary,
    dvc_up_to_date,
    ingest_all,
    push,
    read_summary,
    run_stage,
    via_dvc,
)
from pipeline.core.artifacts import LEADERBOARD, Workspace
from pipeline.core.config import load_params
from pipeline.release.registry import Registry, RegistryBusy
from pipeline.stages import STAGES


def _stage(name: str, params_file: str, dvc_mode: bool, up_to_date: bool = False) -> str:
    if up_to_date:
        return f"{name}: up to date (dvc status)"
    p = load_params(params_file)
    logger = get_run_logger()

    def epoch(_e: int, row: dict[str, float]) -> None:
        what = "probe setting" if "C" in row else "epoch"  # the linear probe logs one row per (C, weighting)
        logger.info("%s %d: %s", what, int(row["epoch"]) + 1,
                    ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch"))

    run_stage(name, p, Workspace.from_params(p, params_file), dvc_mode=dvc_mode, on_epoch=epoch)
    return name


TASKS = {s.name: task(name=s.name, description=s.help, **RETRY, retry_condition_fn=transient_only)(_stage)
         for s in STAGES}


@task(name="ingest-pending", **RETRY, retry_condition_fn=transient_only)
def ingest_pending(params_file: str) -> list[dict[str, Any]]:
    return [r.to_dict() for r in ingest_all(params_file)]


@task(name="dvc-status", **RETRY, retry_condition_fn=transient_only)
def dvc_status() -> bool:
    return dvc_up_to_date()


@task(name="dvc-push", **RETRY, retry_condition_fn=transient_only)
def dvc_push(data_path: str) -> str:
    return push(data_path)


def _artifacts(ws: Workspace, summary: RunSummary) -> None:
    g = summary.gate
    board = ws.select / LEADERBOARD
    if board.exists():
        rows = json.loads(board.read_text(encoding="utf-8")).get("leaderboard", [])
        table("leaderboard", [{k: v for k, v in r.items() if not isinstance(v, (dict, list))} for r in rows],
              "Candidate backbones: frozen-feature probe scores, size, latency")
    table("test-metrics", [{"metric": k, "value": round(v, 5)} for k, v in sorted(g.test_metrics.items())],
          f"Test metrics of {g.version}")
    markdown("gate-decision", f"# Gate: {g.version} is {g.status}\n\n{g.decision.to_markdown()}",
             "The evaluation gate against the champion")
    markdown("run-summary", f"# graft run\n\n- version: {g.version} ({g.status})\n"
             f"- champion: {g.champion} (was {g.previous_champion})\n"
             f"- model: {g.model} ({g.strategy})\n- via: {summary.via}"
             f"{'' if summary.ran else ' (nothing changed: the last decision stands)'}\n"
             f"- data version: {g.data_version or 'not tracked'}\n", "What the training flow did")


@flow(name="training-flow", log_prints=True)
def training_flow(params_file: str = "params.yaml", reason: str = "manual", ingest: bool = True) -> Any:
    """Ingest pending batches, run the stages, gate/register/promote, push to the DVC remote.
    Returns the run summary, or a Cancelled state named Skipped when the registry is busy."""
    enter_workspace()
    logger = get_run_logger()
    logger.info("training because: %s", reason)
    p = load_params(params_file)
    ws = Workspace.from_params(p, params_file)
    if ingest:
        for batch in ingest_pending(params_file):
            logger.info("batch %s: %s", batch["batch"], "; ".join(batch["reasons"]))
    dvc_mode = via_dvc(params_file)
    with ExitStack() as held:
        try:
            held.enter_context(Registry(p.paths.registry).lock())
        except RegistryBusy as exc:  # another training run (or `graft run`) is at work: a clear state, not a crash
            logger.warning("not run: %s", exc)
            return Cancelled(name="Skipped", message=f"not run: {exc}")
        up_to_date = dvc_mode and dvc_status()
        for name, stage_task in TASKS.items():
            stage_task(name, params_file, dvc_mode, up_to_date)
        summary = read_summary(ws, "dvc repro" if dvc_mode else "in-process", ran=not up_to_date)
    out = {**summary.to_dict(), "reason": reason, "dvc_push": dvc_push(p.data.path)}
    _artifacts(ws, summary)
    g = summary.gate
    logger.info("%s: %s; champion %s", g.version, g.status, g.champion)
    return out


def trigger_training(params_file: str, reason: str, ingest: bool = True) -> dict[str, Any]:
    """Run training_flow: through its deployment when this run is deployed, else as a subflow.

    ingest: let the training run ingest pending inbox batches first (False when the caller just did)."""
    from prefect.runtime import deployment

    if deployment.id:  # served by `graft worker`: the deployment runs it, with its own retries
        from prefect.deployments import run_deployment

        run = run_deployment("training-flow/graft-training", parameters={"params_file": params_file, "reason": reason,
                                                                        "ingest": ingest},
                             timeout=0, as_subflow=False)
        return {"triggered": "deployment", "flow_run_id": str(run.id), "reason": reason}
    summary = training_flow(params_file=params_file, reason=reason, ingest=ingest)
    return {"triggered": "subflow", "version": summary["version"], "status": summary["status"],
            "champion": summary["champion"], "reason": reason}
