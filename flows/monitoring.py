"""monitoring_flow: drift of production against the champion's training data; retrain on drift.

Runs the monitor stage (Evidently) on the production log's window. On a drift decision that
is not in its cooldown, training_flow is triggered (its deployment when this flow is deployed,
a subflow otherwise) and the reasons are recorded: in the flow's artifacts, in the monitor's
drift.json / history.jsonl, and as the training run's `reason`.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task

from flows.common import RETRY, enter_workspace, markdown, table, transient_only
from flows.training import trigger_training
from pipeline.core.config import load_params
from pipeline.production.monitor import DriftResult, run_monitor


@task(name="monitor", **RETRY, retry_condition_fn=transient_only)
def monitor_task(params_file: str) -> DriftResult:
    p = load_params(params_file)
    return run_monitor(p, p.paths.monitor)


@flow(name="monitoring-flow", log_prints=True)
def monitoring_flow(params_file: str = "params.yaml", retrain: bool = True) -> dict[str, Any]:
    """Drift report and label-free performance estimate on the production log; triggers
    training_flow when monitor.trigger says so (drift by default)."""
    enter_workspace()
    logger = get_run_logger()
    r = monitor_task(params_file)
    logger.info("%s: %s (%d current records); %s", r.champion, r.decision, r.current_records, "; ".join(r.reasons))
    table("drift-columns", [{"column": c, **v} for c, v in r.columns.items()]
          + ([{"column": "embedding", **r.embedding}] if r.embedding else []), f"Drift per column, {r.champion}")
    markdown("drift-decision", f"# Monitor: {r.decision}\n\nchampion {r.champion}, {r.current_records} current vs "
             f"{r.reference_records} reference records\n\n" + "\n".join(f"- {x}" for x in r.reasons)
             + (f"\n\nreport: {r.report_html}" if r.report_html else "")
             + (f"\n\nperformance without labels: {r.performance_html}" if r.performance_html else ""), "Drift decision")
    if r.performance:
        keys = ("method", "records", "accuracy", "accuracy_low", "accuracy_high", "macro_f1", "test_accuracy",
                "estimated_drop", "harmful")
        table("performance-estimate", [{k: r.performance.get(k) for k in keys}],
              f"Estimated performance without labels, {r.champion}")
    out: dict[str, Any] = {"drift": r.to_dict(), "training": None}
    if r.trigger and retrain:
        out["training"] = trigger_training(params_file, "monitor: " + "; ".join(r.reasons))
    return out
