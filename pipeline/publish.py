"""gate + promote: judge the challenger against the champion, register it, promote if blessed.

The champion is re-scored on the challenger's test split (same examples), so change bounds and
the paired bootstrap compare like with like. Everything happens under the registry lock; the
champion pointer changes only for a blessed challenger, in one atomic replacement.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from sklearn.metrics import accuracy_score, f1_score

from pipeline.data import make_loader
from pipeline.errors import GraftError
from pipeline.evaluate import predict_probs, summary_metrics
from pipeline.export import load_trained, test_split
from pipeline.gate import GateDecision, decide, paired_bootstrap
from pipeline.io import copy_atomic, write_json_atomic
from pipeline.params import Params, section_dict
from pipeline.registry import Registry

_METRIC_FNS = {"macro_f1": lambda y, p: f1_score(y, p, average="macro", zero_division=0),
               "accuracy": accuracy_score}


def _read(path: Path, stage: str) -> dict[str, Any]:
    if not path.exists():
        raise GraftError(f"{path} does not exist; run `graft {stage}` first")
    return json.loads(path.read_text(encoding="utf-8"))


def challenger_metrics(evaluate_dir: Path, export_dir: Path) -> tuple[dict[str, float], bool, dict[str, Any]]:
    metrics = {k: v for k, v in _read(evaluate_dir / "metrics.json", "evaluate").items() if isinstance(v, float)}
    exported = _read(export_dir / "export.json", "export")
    metrics["latency_ms_b1"] = exported["latency_ms"]["onnx_b1"]["p50"]
    metrics["latency_ms_b32"] = exported["latency_ms"]["onnx_b32"]["p50"]
    metrics["size_mb"] = exported["size_mb"]
    return metrics, bool(exported["passed"]), exported


def score_champion(registry: Registry, test: pd.DataFrame, root: Path) -> tuple[str, dict[str, float], np.ndarray] | None:
    """The champion's metrics and predictions on this test split, or None without a champion."""
    name = registry.champion()
    if name is None:
        return None
    clf, info, view = load_trained(registry.get(name).path / "model")
    labels = info["labels"]
    y = test["label"].map({lbl: i for i, lbl in enumerate(labels)})
    if y.isna().any():
        raise GraftError(f"the champion {name} does not know the labels {sorted(set(test['label']) - set(labels))}; "
                         "the change bounds cannot compare them: set gate.change: {} for this run")
    y = y.astype(int).to_numpy()
    probs = predict_probs(clf, make_loader(view, test, y.tolist(), root, batch_size=32))
    return name, summary_metrics(y, probs, len(labels)), probs.argmax(1)


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""


def data_version() -> str | None:
    """The DVC hash of the raw data (data/raw.dvc), when the workspace has one."""
    path = Path("data/raw.dvc")
    if not path.exists():
        return None
    return yaml.safe_load(path.read_text())["outs"][0].get("md5")


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def model_card(version_hint: str, info: dict[str, Any], decision: GateDecision, metrics: dict[str, float],
               exported: dict[str, Any], params: Params, champion: str | None) -> str:
    rows = "\n".join(f"| {c.name} | {'-' if c.value is None else f'{c.value:.4g}'} | {c.bound} | "
                     f"{'pass' if c.passed else '**fail**'} |" for c in decision.criteria)
    metric_rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in sorted(metrics.items()))
    p = exported["parity"]
    return f"""# Model card: {version_hint}

**Status:** {decision.status}. {' '.join(decision.reasons)}

## Lineage
- Data version (DVC md5 of data/raw): {data_version() or 'not tracked'}
- Code (git commit): {git_commit() or 'unknown'}
- Base checkpoint: {info['name']} from {info['source']}
- Transfer strategy: {info['strategy']}
- Labels: {', '.join(info['labels'])}
- Compared with champion: {champion or 'none (first model)'}

## Test metrics
| metric | value |
|---|---|
{metric_rows}

## Gate
| criterion | value | bound | result |
|---|---|---|---|
{rows}

## ONNX parity
max |logit difference| {p['max_abs_diff_logits']:.2e}, top-1 agreement {p['top1_agreement']:.2%} over
{p['examples']} test examples ({exported['provider']}).

## Params
```yaml
{yaml.safe_dump(section_dict(params, 'select', 'train', 'gate'), sort_keys=False)}```
"""


def _backfill_reference(version_onnx: Path, export_dir: Path) -> None:
    """A champion registered before drift references existed gets the one its identical retrain made."""
    for name in ("reference.parquet", "vocabulary.json"):
        src, dst = export_dir / name, version_onnx / name
        if src.exists() and not dst.exists():
            copy_atomic(src, dst)


def publish(params: Params, validated_dir: Path, train_dir: Path, evaluate_dir: Path, export_dir: Path,
            out_dir: Path, locked: Registry | None = None) -> dict[str, Any]:
    """Gate the challenger, register it and promote it when blessed. Returns the run summary.

    `locked`: a registry whose lock the caller already holds (a whole `graft run`)."""
    if locked is None:
        with Registry(params.paths.registry).lock() as registry:
            return publish(params, validated_dir, train_dir, evaluate_dir, export_dir, out_dir, registry)
    registry = locked
    current = registry.champion()
    if current and _sha256(train_dir / "model" / "model.safetensors") == _sha256(
            registry.get(current).path / "model" / "model.safetensors"):
        _backfill_reference(registry.get(current).path / "onnx", export_dir)
        return {"version": current, "status": "unchanged", "promoted": False, "champion": current,
                "previous_champion": current, "gate": {"criteria": [], "reasons": [
                    f"the trained model is identical to the champion {current}: nothing to gate"]},
                "test_metrics": challenger_metrics(evaluate_dir, export_dir)[0],
                "model": registry.get(current).summary.get("model", ""),
                "strategy": registry.get(current).summary.get("strategy", ""),
                "parity": None, "data_version": data_version()}
    metrics, parity_ok, exported = challenger_metrics(evaluate_dir, export_dir)
    evaluation = _read(evaluate_dir / "evaluation.json", "evaluate")
    slices = {f"{col}={val}": m for col, values in evaluation["slices"].items() for val, m in values.items()}
    test = test_split(validated_dir)
    preds = pd.read_parquet(evaluate_dir / "predictions.parquet")
    info = _read(train_dir / "model" / "model.json", "train")
    compare = bool(params.gate.change) or params.gate.require_significant
    champ = score_champion(registry, test, Path(params.data.path)) if current and compare else None
    # a champion without change bounds is still a champion: not the first-run policy
    champion_metrics = champ[1] if champ else ({} if current else None)
    interval = None
    if champ is not None and params.gate.primary in _METRIC_FNS:
        labels = info["labels"]
        y = test["label"].map(labels.index).to_numpy()
        new = preds["pred"].map(labels.index).to_numpy()
        b = params.gate.bootstrap
        interval = paired_bootstrap(y, new, champ[2], _METRIC_FNS[params.gate.primary], b.samples,
                                    b.confidence, b.seed)
    decision = decide(metrics, champion_metrics, params.gate, interval=interval,
                      slices=slices, parity_passed=parity_ok)
    gate_record = {**decision.to_dict(), "champion": current,
                   "champion_metrics": champ[1] if champ else None, "interval": interval}
    write_json_atomic(out_dir / "gate.json", gate_record)
    files = {"model": train_dir / "model", "onnx": export_dir, "metrics.json": evaluate_dir / "metrics.json",
             "evaluation.json": evaluate_dir / "evaluation.json", "gate.json": out_dir / "gate.json"}
    card = model_card(registry.next_name(), info, decision, metrics, exported, params, current)
    summary = {"test": metrics, "strategy": info["strategy"], "model": info["name"]}
    version = registry.register(files, decision.status, summary, card)
    promoted = False
    if decision.blessed:
        registry.promote(version.name)
        promoted = True
    return {"version": version.name, "status": decision.status, "promoted": promoted,
            "champion": registry.champion(), "previous_champion": current,
            "gate": gate_record, "test_metrics": metrics, "model": info["name"], "strategy": info["strategy"],
            "parity": exported["parity"], "data_version": data_version()}
