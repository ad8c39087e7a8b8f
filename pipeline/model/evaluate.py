"""evaluate: the trained model on the held-out test split.

Accuracy, macro-F1, per-class precision/recall/F1, the confusion matrix (table and PNG),
one-vs-rest ROC-AUC, expected calibration error with a reliability plot, the same metrics per
declared slice, and behavioural checks: predictions should not change under a horizontal flip or
a small brightness change (images), or extra whitespace or different casing (text).
Predictions are saved so the gate can compare challenger and champion example by example.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import (
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

from pipeline.core.artifacts import EVAL_METRICS, EVALUATION, PREDICTIONS, Workspace
from pipeline.core.config import save_resolved
from pipeline.core.errors import GraftError
from pipeline.core.io import write_atomic, write_json_atomic, write_parquet_atomic
from pipeline.core.params import Params
from pipeline.modalities.registry import get_modality
from pipeline.model.backbones import Backbone, Classifier
from pipeline.model.inference import softmax
from pipeline.model.loaders import make_loader
from pipeline.model.metrics import classification_metrics, expected_calibration_error
from pipeline.model.trained import encode_labels, trained_and_test


@dataclass(frozen=True)
class EvaluationResult:
    metrics: dict[str, float]
    per_class: dict[str, dict[str, float]]
    confusion: list[list[int]]
    slices: dict[str, dict[str, dict[str, float]]]
    behaviour: dict[str, float]
    reliability: list[dict[str, float]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summary_metrics(y: np.ndarray, probs: np.ndarray, n: int, bins: int = 15) -> dict[str, float]:
    logits = np.log(np.clip(probs, 1e-12, 1.0))
    out = classification_metrics(y, logits, n)
    out["ece"] = expected_calibration_error(probs, y, bins)[0]
    present = np.unique(y)
    if len(present) < 2:
        out["roc_auc"] = float("nan")
    elif n == 2:
        out["roc_auc"] = float(roc_auc_score(y, probs[:, 1]))
    else:
        cols = probs[:, present] / probs[:, present].sum(1, keepdims=True)
        out["roc_auc"] = float(roc_auc_score(y, cols, multi_class="ovr", labels=present))
    return out


@torch.inference_mode()
def predict_probs(clf: Classifier, loader: Any) -> np.ndarray:
    clf.eval()
    return torch.cat([torch.softmax(clf(*inputs), 1) for inputs, _ in loader]).numpy()


def slice_values(frame: pd.DataFrame, column: str, modality: str) -> pd.Series:
    kind = get_modality(modality)
    if column in kind.derived_slices:
        return kind.derived_slice(frame, column)
    if column not in frame.columns:
        raise GraftError(f"evaluate.slices names '{column}', which is neither a manifest column "
                         f"({', '.join(frame.columns)}) nor one of {kind.name}'s "
                         f"{', '.join(kind.derived_slices) or '(none)'}")
    return frame[column].astype(str)


def behavioural_checks(clf: Classifier, view: Backbone, frame: pd.DataFrame, root: Path,
                       base_pred: np.ndarray) -> dict[str, float]:
    """Share of test predictions unchanged under perturbations that should not matter."""
    kind = get_modality(view.modality)
    template = make_loader(view, frame, [0] * len(frame), root, batch_size=32)
    out = {}
    for name, op in kind.perturbations().items():
        loader = torch.utils.data.DataLoader(kind.perturbed(view, frame, root, op), batch_size=32,
                                             collate_fn=template.collate_fn)
        out[name] = float((predict_probs(clf, loader).argmax(1) == base_pred).mean())
    return out


def _plots(out: Path, confusion: np.ndarray, labels: list[str], reliability: list[dict[str, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    side = max(3.6, 1.2 + 0.6 * len(labels))
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), v in np.ndenumerate(confusion):
        ax.text(j, i, str(v), ha="center", va="center",
                color="white" if v > confusion.max() / 2 else "black")
    ax.set_title("confusion matrix (test)")
    fig.tight_layout()
    write_atomic(out / "confusion.png", lambda p: fig.savefig(p, format="png", dpi=120))
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.plot([b["confidence"] for b in reliability], [b["accuracy"] for b in reliability], "o-", label="model")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title("reliability (test)")
    ax.legend()
    fig.tight_layout()
    write_atomic(out / "reliability.png", lambda p: fig.savefig(p, format="png", dpi=120))
    plt.close(fig)


def evaluate_model(clf: Classifier, view: Backbone, labels: list[str], test: pd.DataFrame, root: Path,
                   slices: list[str], bins: int) -> tuple[EvaluationResult, np.ndarray]:
    n = len(labels)
    y = encode_labels(test["label"], labels, "the test split")
    probs = predict_probs(clf, make_loader(view, test, y.tolist(), root, batch_size=32))
    pred = probs.argmax(1)
    metrics = summary_metrics(y, probs, n, bins)
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=list(range(n)), zero_division=0)
    per_class = {lbl: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
                 for i, lbl in enumerate(labels)}
    confusion = confusion_matrix(y, pred, labels=list(range(n)))
    by_slice: dict[str, dict[str, dict[str, float]]] = {}
    for column in slices:
        values = slice_values(test, column, view.modality).to_numpy()
        by_slice[column] = {str(v): {"count": int((values == v).sum()),
                                     "accuracy": float((pred[values == v] == y[values == v]).mean()),
                                     # over the labels present in the slice: an absent class is no error
                                     "macro_f1": float(f1_score(y[values == v], pred[values == v], average="macro",
                                                                zero_division=0))}
                            for v in sorted(set(values))}
    behaviour = behavioural_checks(clf, view, test, root, pred)
    _, reliability = expected_calibration_error(probs, y, bins)
    return EvaluationResult(metrics, per_class, confusion.tolist(), by_slice, behaviour, reliability), probs


def run_evaluate(params: Params, ws: Workspace) -> EvaluationResult:
    """Stage entry: metrics.json (DVC metrics), confusion and reliability PNGs, predictions."""
    out = ws.evaluate
    clf, info, view, test = trained_and_test(ws.train, ws.validate)
    labels = info["labels"]
    ev = params.evaluate
    result, probs = evaluate_model(clf, view, labels, test, ws.data, ev.slices, ev.ece_bins)
    t = float(info.get("calibration", {}).get("temperature", 1.0))  # the head divides its logits by t
    y = encode_labels(test["label"], labels, "the test split")
    uncalibrated = softmax(np.log(np.clip(probs, 1e-30, 1.0)) * t)
    result.metrics["ece_uncalibrated"] = expected_calibration_error(uncalibrated, y, ev.ece_bins)[0]
    write_json_atomic(out / EVAL_METRICS, {**result.metrics, "behaviour": result.behaviour})
    write_json_atomic(out / EVALUATION, result.to_dict())
    preds = pd.DataFrame({"id": test["id"], "sha256": test["sha256"], "label": test["label"],
                          "pred": [labels[i] for i in probs.argmax(1)], "confidence": probs.max(1)})
    for i, lbl in enumerate(labels):
        preds[f"p_{lbl}"] = probs[:, i]
    write_parquet_atomic(out / PREDICTIONS, preds)
    _plots(out, np.array(result.confusion), labels, result.reliability)
    save_resolved(params, out, "evaluate")
    return result
