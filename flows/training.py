"""training_flow: `graft run` as a Prefect flow, one task per dvc.yaml stage.

Each stage is a task with retries for transient failures (disk, network, a busy registry);
data, params and model errors fail at once, and a rejected gate is a normal result. Pending
inbox batches are ingested first, so a retraining learns from every labelled example that has
arrived. The registry lock is held for the whole run; at the end the data and pipeline outputs
are pushed to the DVC remote, and the leaderboard, metrics, gate and summary become artifacts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from rich.console import Console

from flows.common import RETRY, dvc, dvc_workspace, markdown, table, tracking_file, transient_only
from graft.run import STAGES, publish_run, run_stage, via_dvc
from pipeline.params import Params, load_params
from pipeline.registry import Registry


def _console() -> Console:
    return Console(stderr=True, width=110)


@task(name="ingest-pending", **RETRY, retry_condition_fn=transient_only)
def ingest_pending(params_file: str) -> list[dict[str, Any]]:
    from flows.ingest import ingest_all

    return ingest_all(params_file)


@task(name="dvc-status", **RETRY, retry_condition_fn=transient_only)
def dvc_up_to_date() -> bool:
    """One `dvc status` for the whole pipeline: when nothing changed, no stage needs a process."""
    proc = dvc("status", "--json")
    return json.loads(proc.stdout or "{}") == {}


@task(name="stage", task_run_name="{name}", **RETRY, retry_condition_fn=transient_only)
def stage(name: str, params_file: str, dvc_mode: bool, up_to_date: bool = False) -> str:
    if up_to_date:
        return f"{name}: up to date (dvc status)"
    p = load_params(params_file)
    run_stage(name, p, Path(params_file), _console(), dvc=dvc_mode)
    return name


@task(name="gate-and-register", **RETRY, retry_condition_fn=transient_only)
def gate_and_register(p: Params, registry: Registry, via: str) -> dict[str, Any]:
    return publish_run(p, registry, via)


@task(name="dvc-push", **RETRY, retry_condition_fn=transient_only)
def dvc_push() -> str:
    if not dvc_workspace():
        return "not a DVC workspace: nothing pushed"
    remotes = dvc("remote", "list").stdout.strip()
    if not remotes:
        return "no DVC remote configured: nothing pushed (see infra/dvc-remote.md)"
    lines = dvc("push").stdout.strip().splitlines()
    return lines[-1] if lines else "pushed"


def _artifacts(p: Params, summary: dict[str, Any]) -> None:
    board = Path(p.paths.select) / "leaderboard.json"
    if board.exists():
        rows = json.loads(board.read_text(encoding="utf-8"))
        rows = rows.get("leaderboard", []) if isinstance(rows, dict) else rows
        table("leaderboard", [{k: v for k, v in r.items() if not isinstance(v, (dict, list))} for r in rows],
              "Candidate backbones: frozen-feature probe scores, size, latency")
    metrics = summary.get("test_metrics") or {}
    table("test-metrics", [{"metric": k, "value": round(v, 5)} for k, v in sorted(metrics.items())],
          f"Test metrics of {summary['version']}")
    gate = summary.get("gate") or {}
    rows = "\n".join(f"| {c['name']} | {c.get('value')} | {c.get('bound')} | {'pass' if c.get('passed') else 'FAIL'} |"
                     for c in gate.get("criteria", []))
    markdown("gate-decision", f"# Gate: {summary['version']} is {summary['status']}\n\n"
             + "\n".join(f"- {r}" for r in gate.get("reasons", [])) + "\n\n| criterion | value | bound | result |\n"
             "|---|---|---|---|\n" + rows + "\n", "The evaluation gate against the champion")
    markdown("run-summary", f"# graft run\n\n- version: {summary['version']} ({summary['status']})\n"
             f"- champion: {summary['champion']} (was {summary.get('previous_champion')})\n"
             f"- model: {summary.get('model')} ({summary.get('strategy')})\n- via: {summary.get('via')}\n"
             f"- data version: {summary.get('data_version')}\n", "What the training flow did")


@flow(name="training-flow", log_prints=True)
def training_flow(params_file: str = "params.yaml", reason: str = "manual", ingest: bool = True) -> dict[str, Any]:
    """Ingest pending batches, run the stages, gate/register/promote, push to the DVC remote."""
    logger = get_run_logger()
    logger.info("training because: %s", reason)
    p = load_params(params_file)
    registry = Registry(p.paths.registry)
    if ingest and Path(p.paths.inbox).exists():
        for batch in ingest_pending(params_file):
            logger.info("batch %s: %s", batch["batch"], "; ".join(batch["reasons"]))
    dvc_mode = via_dvc(params_file)
    with registry.lock():
        up_to_date = dvc_mode and dvc_up_to_date()
        for name in STAGES:
            stage(name, params_file, dvc_mode, up_to_date)
        summary = gate_and_register(p, registry, "dvc repro" if dvc_mode else "in-process")
    summary["reason"] = reason
    summary["dvc_push"] = dvc_push() if tracking_file(p.data.path) else "data not DVC-tracked: nothing pushed"
    _artifacts(p, summary)
    logger.info("%s: %s; champion %s", summary["version"], summary["status"], summary["champion"])
    return summary
