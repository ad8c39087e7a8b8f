"""11. Label-free performance estimates on real data, with and without shift.

The champion is trained with defaults (a linear probe: fine-tuning on 2 cores takes tens of
minutes) on 70% of each real dataset (bench.drift_alarms' split, by content hash); windows of the held-back 30% are scored with the served model, and each window's
true accuracy (its labels) is compared with the estimates the monitor makes without labels:
cbpe and atc (pipeline/production/estimate.py). Shifts keep every label valid: images -
brightness 70/40/20%, blur radius 1/2/4, rotation 15/45/90 degrees; texts - typos in 10/30% of
characters, accented vowels (a language-like vocabulary shift), 30% of words dropped, and a
label-prior shift (windows drawn with the classes equally likely).

Triggers, against the oracle (the window's true accuracy is more than 5 points below the
champion's test accuracy): the estimated-drop trigger (estimate more than
monitor.max_estimated_drop below the test accuracy), the drift-only trigger (the monitor's
drift rule) and both together. Baseline: the champion's test accuracy taken as the estimate
for every window (what a user knows without an estimator). Goal: mean absolute error at most 0.03.

    .venv/bin/python -m bench.estimate [--windows 10] [--datasets sms trec clothing]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageEnhance, ImageFilter

from bench.common import record
from bench.drift_alarms import (
    _accents,
    _new_rule,
    _records,
    _sms,
    _trec,
    trained_on_images,
    trained_on_texts,
)
from pipeline.core.params import MonitorParams
from pipeline.modalities.registry import get_modality
from pipeline.production.estimate import ESTIMATORS, estimate_performance
from pipeline.production.reference import load_reference

DROP = 0.05
POOLS = Path(tempfile.gettempdir()) / "graft-bench-estimate-pools"


def _typos(text: str, rate: float, seed: int) -> str:
    rng = random.Random(seed)
    chars = list(text)
    for i, c in enumerate(chars):
        if c.isalpha() and rng.random() < rate:
            chars[i] = rng.choice("abcdefghijklmnopqrstuvwxyz")
    return "".join(chars)


def _drop_words(text: str, rate: float, seed: int) -> str:
    rng = random.Random(seed)
    words = text.split()
    kept = [w for w in words if rng.random() >= rate]
    return " ".join(kept or words[:1])


def _balanced(pool: pd.DataFrame, labels: list[str], size: int, rng: np.random.Generator) -> pd.DataFrame:
    """A window with the classes equally likely (a label-prior shift)."""
    per = max(1, size // len(labels))
    parts = [pool[pool["label"] == c].sample(n=min(per, int((pool["label"] == c).sum())),
                                             random_state=int(rng.integers(1 << 30))) for c in labels]
    return pd.concat(parts).reset_index(drop=True)


def _evaluate(name: str, modality: str, model_dir: Path, reference: pd.DataFrame, labels: list[str],
              pools: dict[str, pd.DataFrame], size: int, windows: int) -> dict[str, Any]:
    """model_dir: the champion's registry onnx/ folder (its version's summary holds the test accuracy)."""
    version = model_dir.parent
    test_acc = float(json.loads((version / "status.json").read_text())["summary"]["test"]["accuracy"])
    keep = POOLS / name  # the scored pools, to study other estimators without scoring again
    keep.mkdir(parents=True, exist_ok=True)
    for kind, pool in pools.items():
        pool.drop(columns=["embedding"]).to_parquet(keep / f"{kind}.parquet")
    reference.drop(columns=["embedding"]).to_parquet(keep / "reference.parquet")
    (keep / "meta.json").write_text(json.dumps({"labels": labels, "test_accuracy": test_acc, "modality": modality}))
    mp, features = MonitorParams(), get_modality(modality).feature_names
    rng = np.random.default_rng(0)
    rows = []
    for kind, pool in pools.items():
        for w in range(windows):
            if kind == "label prior: classes equal":
                window = _balanced(pool, labels, size, rng)
            else:
                window = pool.iloc[np.sort(rng.choice(len(pool), min(size, len(pool)), replace=False))]
            window = window.reset_index(drop=True)
            truth = float(window["correct"].mean())
            est = {m: estimate_performance(reference, window, labels, m, seed=w) for m in ESTIMATORS}
            drift, _ = _new_rule(reference, window, features, mp)
            rows.append({"kind": kind, "truth": truth, "drift": bool(drift),
                         **{m: e.accuracy for m, e in est.items()},
                         **{f"{m}_covered": e.accuracy_low <= truth <= e.accuracy_high for m, e in est.items()}})
        k = [r for r in rows if r["kind"] == kind]
        print(f"  {name} {kind}: true {np.mean([r['truth'] for r in k]):.3f}, "
              + ", ".join(f"{m} {np.mean([r[m] for r in k]):.3f}" for m in ESTIMATORS)
              + f", drift {sum(r['drift'] for r in k)}/{len(k)}", flush=True)
    return {"dataset": name, "modality": modality, "window_size": size, "test_accuracy": test_acc,
            "reference_rows": len(reference), "windows": rows}


def _scores(rows: list[dict[str, Any]], test_acc: dict[str, float], max_drop: float) -> dict[str, Any]:
    """MAE per estimator and the triggers' precision and recall against the oracle."""
    out: dict[str, Any] = {}
    for m in ["test accuracy", *ESTIMATORS]:
        err = [abs((test_acc[r["dataset"]] if m == "test accuracy" else r[m]) - r["truth"]) for r in rows]
        out[f"mae_{m}"] = float(np.mean(err))
        out[f"mae_{m}_clean"] = float(np.mean([e for e, r in zip(err, rows, strict=True) if r["kind"] == "clean"]))
        out[f"mae_{m}_shifted"] = float(np.mean([e for e, r in zip(err, rows, strict=True) if r["kind"] != "clean"]))
        if m != "test accuracy":
            out[f"coverage_{m}"] = float(np.mean([r[f"{m}_covered"] for r in rows]))
    oracle = [test_acc[r["dataset"]] - r["truth"] > DROP for r in rows]
    triggers = {"drift only": [r["drift"] for r in rows]}
    for m in ESTIMATORS:
        drop = [test_acc[r["dataset"]] - r[m] > max_drop for r in rows]
        triggers[f"estimated drop ({m})"] = drop
        triggers[f"drift and estimated drop ({m})"] = [a and b for a, b in zip(drop, triggers["drift only"], strict=True)]
    for name, fired in triggers.items():
        tp = sum(f and o for f, o in zip(fired, oracle, strict=True))
        out[f"trigger: {name}"] = {"fired": int(sum(fired)), "precision": tp / sum(fired) if sum(fired) else None,
                                   "recall": tp / sum(oracle) if sum(oracle) else None}
    out["oracle_windows"] = int(sum(oracle))
    return out


def text_dataset(name: str, frame: pd.DataFrame, windows: int, size: int = 300) -> dict:
    _work, predictor, pool = trained_on_texts(f"estimate-{name}", frame, "linear_probe")
    texts, labels = pool["text"].tolist(), pool["label"].tolist()

    def scored(inputs: list[str]) -> pd.DataFrame:
        out = _records(predictor, inputs, [True] * len(pool), labels)
        out["label"] = labels
        return out

    clean = scored(texts)
    pools = {"clean": clean,
             "typos 10%": scored([_typos(t, 0.1, i) for i, t in enumerate(texts)]),
             "typos 30%": scored([_typos(t, 0.3, i) for i, t in enumerate(texts)]),
             "accented vowels": scored([_accents(t) for t in texts]),
             "30% of words dropped": scored([_drop_words(t, 0.3, i) for i, t in enumerate(texts)]),
             "label prior: classes equal": clean}
    return _evaluate(name, "text", predictor.dir, load_reference(predictor.dir), predictor.labels, pools, size,
                     windows)


def image_dataset(windows: int, size: int = 100) -> dict:
    _work, predictor, pool = trained_on_images("estimate-clothing", "linear_probe")
    labels = [p.parent.name for p in pool]
    images = [Image.open(p).convert("RGB") for p in pool]

    def scored(inputs: list[Image.Image]) -> pd.DataFrame:
        out = _records(predictor, inputs, [True] * len(pool), labels)
        out["label"] = labels
        return out

    pools = {"clean": scored(images)}
    for f in (0.7, 0.4, 0.2):
        pools[f"brightness {int(f * 100)}%"] = scored([ImageEnhance.Brightness(i).enhance(f) for i in images])
    for r in (1, 2, 4):
        pools[f"blur radius {r}"] = scored([i.filter(ImageFilter.GaussianBlur(r)) for i in images])
    for a in (15, 45, 90):
        pools[f"rotated {a} degrees"] = scored([i.rotate(a, expand=True) for i in images])
    return _evaluate("clothing_small", "image", predictor.dir, load_reference(predictor.dir), predictor.labels,
                     pools, size, windows)


def run(windows: int = 10, datasets: tuple[str, ...] = ("sms", "trec", "clothing")) -> list[dict]:
    start = time.perf_counter()
    results = []
    if "sms" in datasets:
        results.append(text_dataset("sms_spam", _sms(), windows))
    if "trec" in datasets:
        results.append(text_dataset("trec_qc", _trec(), windows))
    if "clothing" in datasets:
        results.append(image_dataset(windows))
    max_drop = MonitorParams().max_estimated_drop
    test_acc = {r["dataset"]: r["test_accuracy"] for r in results}
    rows = [{**w, "dataset": r["dataset"]} for r in results for w in r["windows"]]
    scores = _scores(rows, test_acc, max_drop)
    per_dataset = {r["dataset"]: _scores([w for w in rows if w["dataset"] == r["dataset"]], test_acc, max_drop)
                   for r in results}
    method = MonitorParams().estimator
    ours, base = scores[f"mae_{method}"], scores["mae_test accuracy"]
    t = {k: v for k, v in scores.items() if k.startswith("trigger")}

    def pr(name: str) -> str:
        v = t[f"trigger: {name}"]
        return (f"{name}: precision {v['precision'] if v['precision'] is None else round(v['precision'], 2)}, "
                f"recall {v['recall'] if v['recall'] is None else round(v['recall'], 2)}")

    return [record(
        "estimate_accuracy",
        f"11. Label-free accuracy estimate on {len(rows)} windows with and without shift "
        f"({', '.join(test_acc)}); {pr(f'estimated drop ({method})')}; {pr('drift only')}",
        baseline="the champion's test accuracy as every window's estimate",
        ours=f"monitor.estimator={method} (MAE clean {scores[f'mae_{method}_clean']:.3f}, shifted "
             f"{scores[f'mae_{method}_shifted']:.3f}; other: "
             + ", ".join(f"{m} {scores[f'mae_{m}']:.3f}" for m in ESTIMATORS if m != method) + ")",
        goal="mean absolute error <= 0.03", baseline_value=base, ours_value=ours, unit="MAE (accuracy)",
        ratio=base / ours if ours else float("inf"), ratio_label="x smaller error",
        goal_met=bool(ours <= 0.03),
        details={"scores": scores, "per_dataset": per_dataset, "datasets": results, "max_estimated_drop": max_drop,
                 "seconds": round(time.perf_counter() - start, 1)})]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=10)
    ap.add_argument("--datasets", nargs="+", default=["sms", "trec", "clothing"], choices=["sms", "trec", "clothing"])
    a = ap.parse_args()
    run(a.windows, tuple(a.datasets))
