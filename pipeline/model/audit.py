"""Label audit: which training labels look wrong? Confident learning (cleanlab) on out-of-fold
probabilities of the chosen model's probe.

select embeds every train and val example with the chosen backbone for its full probe (the
embeddings are cached); here the same logistic regression (the C and class weighting the probe
chose) is cross-validated over them, so every example gets probabilities from a model that never
saw it. cleanlab's `find_label_issues` (prune by noise rate: its estimate of how many labels of
each class are wrong, from the confident joint) flags examples, ranked by self-confidence (the
out-of-fold probability of the given label, lowest first). Each gets the suggested label (the
out-of-fold prediction). `validate.label_issues`: warn (list them in the leaderboard and
label_issues.csv), quarantine (and train without the flagged training rows), off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.params import TrainParams
from pipeline.model.probe import logistic_probe, standardise

LABEL_ISSUES = "label_issues.csv"
COLUMNS = ["id", "split", "label", "suggested", "label_probability", "rank"]


@dataclass(frozen=True)
class LabelAudit:
    mode: str  # warn | quarantine
    examined: int
    issues: pd.DataFrame  # COLUMNS, worst first
    folds: int
    quality: pd.DataFrame | None = None  # every examined row: id, split, label_probability (lowest first)

    def summary(self) -> dict[str, Any]:
        top = self.issues.head(20)
        return {"mode": self.mode, "examined": self.examined, "flagged": len(self.issues), "folds": self.folds,
                "method": "cleanlab find_label_issues (prune_by_noise_rate) on out-of-fold probe probabilities",
                "top": top.to_dict(orient="records")}

    def markdown(self) -> str:
        head = (f"**Label audit** ({self.mode}): {len(self.issues)} of {self.examined} train/val labels look wrong "
                f"(cleanlab confident learning on {self.folds}-fold out-of-fold probabilities"
                + ("; the flagged training rows are left out of training" if self.mode == "quarantine" else "")
                + f"; all of them in {LABEL_ISSUES})")
        if self.issues.empty:
            return head + "\n"
        rows = "\n".join(f"| {r.rank} | {r.id} | {r.split} | {r.label} | {r.suggested} | {r.label_probability:.3f} |"
                         for r in self.issues.head(20).itertuples())
        return (f"{head}\n\n| rank | id | split | label | suggested | P(label) |\n|---|---|---|---|---|---|\n"
                f"{rows}\n")


def out_of_fold_probabilities(x: np.ndarray, y: np.ndarray, n: int, c: float, weighted: bool, tp: TrainParams,
                              folds: int = 5) -> tuple[np.ndarray, int]:
    """(rows, n) probabilities, each from the probe fitted on the other folds; and the folds used."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    present = np.unique(y)
    folds = max(2, min(folds, int(np.bincount(y)[present].min())))
    mu, scale = standardise(x)
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=tp.seed)
    probs = cross_val_predict(logistic_probe(c, weighted, tp), (x - mu) / scale, y, cv=split, method="predict_proba")
    out = np.zeros((len(y), n))
    out[:, present] = probs
    return out, folds


def audit_labels(frame: pd.DataFrame, x: np.ndarray, y: np.ndarray, labels: list[str], c: float, weighted: bool,
                 tp: TrainParams, mode: str) -> LabelAudit:
    """Flag the rows of `frame` (train and val, with their features x and encoded labels y) whose
    labels confident learning calls wrong."""
    from cleanlab.filter import find_label_issues

    present = np.unique(y)
    if len(present) < 2 or np.bincount(y)[present].min() < 2:
        return LabelAudit(mode, len(y), pd.DataFrame(columns=COLUMNS), 0, None)
    probs, folds = out_of_fold_probabilities(x, y, len(labels), c, weighted, tp)
    remap = np.full(len(labels), -1)
    remap[present] = np.arange(len(present))  # cleanlab wants the classes that occur, numbered densely
    sub = probs[:, present] / np.clip(probs[:, present].sum(1, keepdims=True), 1e-12, None)
    # n_jobs=1: cleanlab's default forks a process pool, which deadlocks when the caller has threads
    # (a Prefect flow run does): seen hanging training_flow's select task
    ranked = find_label_issues(remap[y], sub, return_indices_ranked_by="self_confidence", n_jobs=1)
    issues = pd.DataFrame({
        "id": frame["id"].to_numpy()[ranked].astype(str), "split": frame["split"].to_numpy()[ranked],
        "label": [labels[i] for i in y[ranked]], "suggested": [labels[i] for i in probs[ranked].argmax(1)],
        "label_probability": probs[ranked, y[ranked]].round(4), "rank": np.arange(1, len(ranked) + 1)})
    given = probs[np.arange(len(y)), y]
    order = np.argsort(given, kind="stable")
    quality = pd.DataFrame({"id": frame["id"].to_numpy()[order].astype(str), "split": frame["split"].to_numpy()[order],
                            "label_probability": given[order]})
    return LabelAudit(mode, len(y), issues, folds, quality)
