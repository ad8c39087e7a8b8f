"""12. Label audit on real data: 5% of the training labels flipped at random.

clothing_small (MobileNetV2) and trec_qc (all-MiniLM-L6-v2): 5% of the examples (seeded) get a
random other label; prepare, validate and select run as `graft run` does (select's label audit
included). On the rows the audit examines (train and val), k = the number flipped there: the
precision and recall of the audit's k lowest-ranked labels (the out-of-fold probability of the
given label; at k, precision equals recall), and of cleanlab's own flagged set.

Baseline: the same probe fitted on all the (noisy) rows and ranking them by its in-sample
probability of the given label (what ranking by training loss does). Goal: precision and recall
at k at least 0.8 on each dataset.

    .venv/bin/python -m bench.audit [--datasets clothing trec]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.common import MINILM, MOBILENET, record
from bench.drift_alarms import CLOTHING, TREC

FLIP = 0.05


def _flip(labels: list[str], seed: int = 0) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    classes = sorted(set(labels))
    idx = rng.choice(len(labels), round(FLIP * len(labels)), replace=False)
    out = list(labels)
    for i in idx:
        out[i] = rng.choice([c for c in classes if c != labels[i]])
    return out, idx


def _select(work: Path, params: dict[str, Any]) -> Any:
    """prepare, validate and select in-process, as `graft run` runs them; select's result."""
    import yaml

    from flows.steps import run_stage, with_inferred_labels
    from pipeline.core.artifacts import Workspace
    from pipeline.core.config import load_params

    (work / "params.yaml").write_text(yaml.safe_dump(params))
    cwd = Path.cwd()
    os.chdir(work)
    try:
        p = load_params("params.yaml")
        ws = Workspace.from_params(p, "params.yaml")
        for stage in ("prepare", "validate"):
            p = with_inferred_labels(stage, p, run_stage(stage, p, ws))
        return run_stage("select", p, ws), pd.read_parquet(ws.validate / "manifest.parquet"), p
    finally:
        os.chdir(cwd)


def _in_sample_ranking(work: Path, manifest: pd.DataFrame, p: Any, chosen: Any, labels: list[str]) -> list[str]:
    """The baseline: the probe fitted on every examined row, ranking them by its own probability of the given label."""
    from pipeline.model.backbones import load_backbone
    from pipeline.model.features import embed_frame
    from pipeline.model.probe import logistic_probe, standardise
    from pipeline.model.trained import encode_labels

    rows = manifest[manifest["split"].isin(["train", "val"])].reset_index(drop=True)
    backbone = load_backbone(chosen.candidate or chosen.name, chosen.weights, str(rows["modality"].iloc[0]),
                             max_length=p.train.max_length, pretrained=chosen.pretrained)
    x = embed_frame(backbone, rows, work / p.data.path, work / p.paths.cache, batch_size=p.select.batch_size)
    y = encode_labels(rows["label"], labels, "the examined rows")
    mu, scale = standardise(x)
    model = logistic_probe(p.train.probe_c[len(p.train.probe_c) // 2], False, p.train).fit((x - mu) / scale, y)
    probs = model.predict_proba((x - mu) / scale)
    given = probs[np.arange(len(y)), np.searchsorted(model.classes_, y)]
    return rows["id"].astype(str).to_numpy()[np.argsort(given, kind="stable")].tolist()


def _measure(name: str, work: Path, params: dict[str, Any], flipped: Callable[[pd.DataFrame], pd.Series]
             ) -> dict[str, Any]:
    """`flipped(manifest)`: which validated rows carry a flipped label."""
    start = time.perf_counter()
    result, manifest, p = _select(work, params)
    audit = result.audit
    examined = set(audit.quality["id"])
    wrong = set(manifest.loc[flipped(manifest), "id"].astype(str)) & examined
    k = len(wrong)
    top = set(audit.quality["id"].head(k))
    flagged = set(audit.issues["id"])
    labels = sorted(manifest["label"].unique())
    base_top = set(_in_sample_ranking(work, manifest, p, result.chosen, labels)[:k])
    out = {"dataset": name, "examined": len(examined), "flipped_examined": k,
           "at_k": len(top & wrong) / k, "baseline_at_k": len(base_top & wrong) / k,
           "flagged": len(flagged), "flagged_precision": len(flagged & wrong) / max(len(flagged), 1),
           "flagged_recall": len(flagged & wrong) / k, "model": result.chosen.name,
           "seconds": round(time.perf_counter() - start, 1)}
    print(f"  {name}: at k={k}: audit {out['at_k']:.3f}, in-sample baseline {out['baseline_at_k']:.3f}; "
          f"cleanlab flagged {len(flagged)} (precision {out['flagged_precision']:.3f}, recall "
          f"{out['flagged_recall']:.3f})", flush=True)
    return out


def clothing() -> dict[str, Any]:
    files = sorted(CLOTHING.glob("*/*.jpg"))
    labels = [f.parent.name for f in files]
    noisy, idx = _flip(labels)
    work = Path(tempfile.mkdtemp(prefix="graft-bench-audit-clothing-"))
    names = set()
    for i, (f, label) in enumerate(zip(files, noisy, strict=True)):
        (work / "data" / label).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, work / "data" / label / f"{f.parent.name}_{f.name}")  # the true class in the name
        if i in set(idx.tolist()):
            names.add(f"{f.parent.name}_{f.name}")
    return _measure("clothing_small", work, {
        "data": {"path": "data"},
        "select": {"candidates": [{"name": "mobilenetv2_100", "weights": str(MOBILENET)}]},
        "paths": {"cache": str(work / "cache")}}, lambda m: m["path"].map(lambda x: Path(x).name in names))


def trec() -> dict[str, Any]:
    frame = pd.read_csv(TREC)[["text", "label"]].drop_duplicates("text").reset_index(drop=True)
    noisy, idx = _flip(frame["label"].tolist())
    work = Path(tempfile.mkdtemp(prefix="graft-bench-audit-trec-"))
    (work / "data").mkdir()
    frame.assign(label=noisy).to_csv(work / "data" / "trec.csv", index=False)
    texts = set(frame["text"].iloc[idx])
    return _measure("trec_qc", work, {
        "data": {"path": "data/trec.csv"},
        "select": {"candidates": [{"name": MINILM[0], "weights": MINILM[1]}]},
        "paths": {"cache": str(work / "cache")}}, lambda m: m["text"].isin(texts))


def run(datasets: tuple[str, ...] = ("clothing", "trec")) -> list[dict]:
    results = [clothing() if d == "clothing" else trec() for d in datasets]
    worst = min(min(r["at_k"], r["flagged_precision"]) for r in results)
    base = float(np.mean([r["baseline_at_k"] for r in results]))
    ours = float(np.mean([r["at_k"] for r in results]))
    return [record(
        "label_audit",
        f"12. Label audit: {FLIP:.0%} of labels flipped ({', '.join(r['dataset'] for r in results)}); "
        "precision = recall at k = the number flipped among the audited rows",
        baseline="in-sample probe ranking (the training loss)", ours="cleanlab on out-of-fold probe probabilities",
        goal="precision and recall at k >= 0.8 on each dataset", baseline_value=base, ours_value=ours,
        unit="precision at k (mean)", ratio=ours / base if base else float("inf"), ratio_label="x",
        goal_met=bool(min(r["at_k"] for r in results) >= 0.8),
        details={"datasets": results, "worst": worst})]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["clothing", "trec"], choices=["clothing", "trec"])
    run(tuple(ap.parse_args().datasets))
