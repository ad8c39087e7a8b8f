"""9. Model quality on real data, and the int8 decision: graft with defaults vs frozen features +
logistic regression, side by side on the same test split.

For each real dataset in ../shared/data, graft's stages run as a user runs them (`graft prepare
... export` with a params file that names only the data and the candidate). The baseline is the
hand-made model the issue measured: the same pretrained backbone frozen, scikit-learn's
LogisticRegression (default C, standardised features) on every example graft could learn from
(train + val), scored on graft's test split. Quality rows: the test metric of each, the goal from
the issue. int8 rows: the same runs' int8 decision (accuracy vs fp32 on test, speed-up at batch 1),
the goal being "within 1 point, 99% agreement and 1.3x faster, or not shipped".

One seed per dataset (a run takes 5-20 minutes on 2 CPU cores); the JSON keeps every figure.

    .venv/bin/python -m bench.quality [--only clothing_small trec_qc sms_spam]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bench.common import MINILM, MOBILENET, SHARED, SMS, record
from pipeline.model.backbones import load_backbone
from pipeline.model.features import embed_frame

DATA = SHARED / "data"
DATASETS: dict[str, dict[str, Any]] = {
    "clothing_small": {"data": {"path": str(DATA / "clothing_small")}, "metric": "accuracy", "goal": 0.85,
                       "candidate": {"name": "mobilenetv2_100", "weights": str(MOBILENET)}},
    "trec_qc": {"data": {"path": str(DATA / "trec_qc" / "trec_qc.csv")}, "metric": "accuracy", "goal": 0.96,
                "candidate": {"name": MINILM[0], "weights": MINILM[1]}},
    "sms_spam": {"data": {"path": str(SMS), "format": "tsv", "header": False, "columns": ["label", "text"]},
                 "metric": "macro_f1", "goal": 0.97, "candidate": {"name": MINILM[0], "weights": MINILM[1]}},
}
STAGES = ["prepare", "validate", "select", "train", "evaluate", "export"]


def graft_run(work: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """graft's stages with defaults, as a user runs them; returns the figures they wrote."""
    params = {"data": spec["data"], "select": {"candidates": [spec["candidate"]]}, "validate": {"labels": []}}
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    seconds = {}
    for stage in STAGES:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "graft.cli", stage, "--params", "params.yaml"], cwd=work, check=True)
        seconds[stage] = round(time.perf_counter() - start, 1)
    read = lambda *p: json.loads((work / "outputs").joinpath(*p).read_text())  # noqa: E731
    return {"evaluation": read("evaluate", "evaluation.json")["metrics"], "train": read("train", "metrics.json"),
            "select": {k: v for k, v in read("select", "leaderboard.json").items() if k != "leaderboard"},
            "export": read("export", "export.json"), "seconds": seconds}


def baseline(work: Path, spec: dict[str, Any]) -> dict[str, float]:
    """Frozen backbone + LogisticRegression on train + val, scored on graft's test split."""
    m = pd.read_parquet(work / "outputs" / "validate" / "manifest.parquet")
    cand = spec["candidate"]
    backbone = load_backbone(cand["name"], cand["weights"], str(m["modality"].iloc[0]), max_length=128)
    root = Path(spec["data"]["path"])
    fit, test = m[m["split"].isin(["train", "val"])], m[m["split"] == "test"]
    x_fit, x_test = (embed_frame(backbone, f, root, work / "cache") for f in (fit, test))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(x_fit, fit["label"])
    pred = model.predict(x_test)
    return {"accuracy": float(accuracy_score(test["label"], pred)),
            "macro_f1": float(f1_score(test["label"], pred, average="macro")),
            "train_examples": len(fit), "test_examples": len(test)}


def run_one(name: str) -> list[dict[str, Any]]:
    spec = DATASETS[name]
    if not Path(spec["data"]["path"]).exists() or not MOBILENET.exists():
        print(f"{spec['data']['path']} (or the MobileNetV2 weights) not found: {name} skipped")
        return []
    work = Path(tempfile.mkdtemp(prefix=f"graft-bench-quality-{name}-"))
    ours = graft_run(work, spec)
    base = baseline(work, spec)
    metric, goal = spec["metric"], spec["goal"]
    value = ours["evaluation"][metric]
    details = {"graft": ours, "baseline": base, "workspace": str(work)}
    rows = [record(f"quality_{name}", f"9. Quality, {name} test {metric}",
                   baseline="frozen features + logistic regression (train+val)", ours="graft defaults",
                   goal=f">= {goal}", baseline_value=base[metric], ours_value=value, unit=metric,
                   ratio=value / base[metric], ratio_label="x the baseline", goal_met=value >= goal,
                   details=details)]
    q, lat = ours["export"].get("int8"), ours["export"]["latency_ms"]
    if q:
        held = q["shipped"] or bool(q["reasons"])  # shipped within the bounds, or refused with a reason
        rows.append(record(
            f"quality_{name}_int8", f"9. int8 ({q['method'].split(':')[0]}), {name}, batch 1",
            baseline="fp32 onnxruntime", ours="int8 onnxruntime", unit="ms p50",
            goal="<= 1 point lost, >= 99% agreement, >= 1.3x; else not shipped",
            baseline_value=lat["onnx_b1"]["p50"], ours_value=lat["onnx_int8_b1"]["p50"], ratio=q["speedup_b1"],
            ratio_label="x fp32" + (" (shipped)" if q["shipped"] else " (not shipped)"),
            goal_met=held and (not q["shipped"] or q["speedup_b1"] >= 1.3),
            details={**q, "accuracy_drop_points": round((q["accuracy_fp32"] - q["accuracy_int8"]) * 100, 2)}))
    return rows


def run(only: list[str] | None = None) -> list[dict[str, Any]]:
    return [row for name in (only or DATASETS) for row in run_one(name)]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=list(DATASETS))
    run(ap.parse_args().only)
