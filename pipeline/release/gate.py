"""gate: judge the challenger against the champion, register it, promote it when blessed.

The champion is re-scored on the challenger's test split (same examples), so change bounds and
the paired bootstrap compare like with like. Everything happens under the registry lock; the
champion pointer changes only for a blessed challenger, in one atomic replacement. Writes
gate.json (the decision) and run-summary.json (what a run produced) into the gate's folder.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score

from pipeline.core.artifacts import (
    EVAL_METRICS,
    EVALUATION,
    EXPORT_REPORT,
    GATE_DECISION,
    MODEL,
    PREDICTIONS,
    RUN_SUMMARY,
    Workspace,
    require,
)
from pipeline.core.io import copy_atomic, write_json_atomic
from pipeline.core.lineage import DataVersion, data_version
from pipeline.core.params import Params
from pipeline.modalities.text import VOCABULARY
from pipeline.model.evaluate import predict_probs, summary_metrics
from pipeline.model.loaders import make_loader
from pipeline.model.metrics import paired_bootstrap
from pipeline.model.trained import encode_labels, load_trained, test_split
from pipeline.production.reference import REFERENCE
from pipeline.release.card import model_card
from pipeline.release.decision import GateDecision, decide
from pipeline.release.registry import Registry

_METRIC_FNS = {"macro_f1": lambda y, p: f1_score(y, p, average="macro", zero_division=0),
               "accuracy": accuracy_score}


@dataclass(frozen=True)
class ChampionScore:
    """The champion re-scored on the challenger's test split."""

    name: str
    metrics: dict[str, float]
    pred: np.ndarray


@dataclass(frozen=True)
class GateResult:
    version: str
    status: str  # blessed | rejected | needs_approval | unchanged
    promoted: bool
    champion: str | None
    previous_champion: str | None
    decision: GateDecision
    test_metrics: dict[str, float]
    model: str
    strategy: str
    champion_metrics: dict[str, float] | None = None
    interval: tuple[float, float] | None = None
    parity: dict[str, Any] | None = None
    data_version: DataVersion | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["gate"] = {**self.decision.to_dict(), "champion": self.previous_champion,
                     "champion_metrics": self.champion_metrics, "interval": self.interval}
        del d["decision"]
        d["data_version"] = self.data_version.to_dict() if self.data_version else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GateResult:
        gate = d["gate"]
        interval = gate.get("interval")
        return cls(d["version"], d["status"], d["promoted"], d["champion"], d["previous_champion"],
                   GateDecision.from_dict(gate), d["test_metrics"], d["model"], d["strategy"],
                   gate.get("champion_metrics"), tuple(interval) if interval else None, d.get("parity"),
                   DataVersion(**d["data_version"]) if d.get("data_version") else None)


def challenger_metrics(ws: Workspace) -> tuple[dict[str, float], dict[str, Any]]:
    """evaluate's test metrics plus export's latency and size; and export's report."""
    metrics = json.loads(require(ws.evaluate / EVAL_METRICS, "evaluate").read_text(encoding="utf-8"))
    metrics = {k: v for k, v in metrics.items() if isinstance(v, float)}
    exported = json.loads(require(ws.export / EXPORT_REPORT, "export").read_text(encoding="utf-8"))
    metrics["latency_ms_b1"] = exported["latency_ms"]["onnx_b1"]["p50"]
    metrics["latency_ms_b32"] = exported["latency_ms"]["onnx_b32"]["p50"]
    metrics["size_mb"] = exported["size_mb"]
    return metrics, exported


def score_champion(registry: Registry, test: pd.DataFrame, root: Path) -> ChampionScore | None:
    """The champion's metrics and predictions on this test split, or None without a champion."""
    name = registry.champion()
    if name is None:
        return None
    clf, info, view = load_trained(registry.local(name, MODEL))
    labels = info["labels"]
    y = encode_labels(test["label"], labels, f"the test split (scored by the champion {name}; "
                                              "set gate.change.macro_f1: null to skip the comparison)")
    probs = predict_probs(clf, make_loader(view, test, y.tolist(), root, batch_size=32))
    return ChampionScore(name, summary_metrics(y, probs, len(labels)), probs.argmax(1))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""


def _backfill_reference(version_onnx: Path, exported_model: Path) -> None:
    """A champion registered before drift references existed gets the one its identical retrain made."""
    for name in (REFERENCE, VOCABULARY):
        src, dst = exported_model / name, version_onnx / name
        if src.exists() and not dst.exists():
            copy_atomic(src, dst)


def _unchanged(registry: Registry, current: str, ws: Workspace) -> GateResult:
    _backfill_reference(registry.local(current, "onnx"), ws.export / MODEL)
    summary = registry.get(current).summary
    decision = GateDecision("unchanged", [], [f"the trained model is identical to the champion {current}: "
                                              "nothing to gate"])
    return GateResult(current, "unchanged", False, current, current, decision, challenger_metrics(ws)[0],
                      summary.get("model", ""), summary.get("strategy", ""), data_version=data_version(ws.data))


def gate_challenger(params: Params, ws: Workspace, registry: Registry) -> GateResult:
    """Core, under the registry lock the caller holds: decide, register, promote when blessed."""
    current = registry.champion()
    if current and _sha256(ws.train / MODEL / "model.safetensors") == _sha256(
            registry.local(current, MODEL) / "model.safetensors"):
        return _unchanged(registry, current, ws)
    metrics, exported = challenger_metrics(ws)
    evaluation = json.loads(require(ws.evaluate / EVALUATION, "evaluate").read_text(encoding="utf-8"))
    slices = {f"{col}={val}": m for col, values in evaluation["slices"].items() for val, m in values.items()}
    test = test_split(ws.validate)
    preds = pd.read_parquet(require(ws.evaluate / PREDICTIONS, "evaluate"))
    info = json.loads(require(ws.train / MODEL / "model.json", "train").read_text(encoding="utf-8"))
    g = params.gate
    champ = score_champion(registry, test, ws.data) if current and (any(c is not None for c in g.change.values()) or g.require_significant) else None
    interval = None
    if champ is not None and g.primary in _METRIC_FNS:
        y = encode_labels(test["label"], info["labels"], "the test split")
        new = encode_labels(preds["pred"], info["labels"], "evaluate's predictions")
        interval = paired_bootstrap(y, new, champ.pred, _METRIC_FNS[g.primary], g.bootstrap.samples,
                                    g.bootstrap.confidence, g.bootstrap.seed)
    # a champion without change bounds is still a champion: not the first-run policy
    champion_metrics = champ.metrics if champ else ({} if current else None)
    decision = decide(metrics, champion_metrics, g, interval=interval, slices=slices,
                      parity_passed=bool(exported["passed"]))
    data = data_version(ws.data)
    gate_record = {**decision.to_dict(), "champion": current,
                   "champion_metrics": champ.metrics if champ else None, "interval": interval}
    write_json_atomic(ws.gate / GATE_DECISION, gate_record)
    files = {MODEL: ws.train / MODEL, "onnx": ws.export / MODEL, EVAL_METRICS: ws.evaluate / EVAL_METRICS,
             EVALUATION: ws.evaluate / EVALUATION, EXPORT_REPORT: ws.export / EXPORT_REPORT,
             GATE_DECISION: ws.gate / GATE_DECISION}
    card = model_card(registry.next_name(), info, decision, metrics, exported, params, current, data)
    version = registry.register(files, decision.status, {"test": metrics, "strategy": info["strategy"],
                                                         "model": info["name"]}, card)
    if decision.blessed:
        registry.promote(version.name)
    return GateResult(version.name, decision.status, decision.blessed, registry.champion(), current, decision,
                      metrics, info["name"], info["strategy"], champ.metrics if champ else None, interval,
                      exported["parity"], data)


def run_gate(params: Params, ws: Workspace) -> GateResult:
    """Stage entry: gate under the registry lock (shared with a `graft run` that holds it);
    writes gate.json and run-summary.json."""
    with Registry(params.paths.registry).lock() as registry:
        result = gate_challenger(params, ws, registry)
    if result.status == "unchanged":
        write_json_atomic(ws.gate / GATE_DECISION, {**result.decision.to_dict(), "champion": result.champion,
                                                     "champion_metrics": None, "interval": None})
    write_json_atomic(ws.gate / RUN_SUMMARY, result.to_dict())
    return result
