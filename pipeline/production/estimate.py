"""How accurate is the champion on production traffic that has no labels? (label-free estimates)

The exported logits are calibrated (temperature scaling fitted on val is folded into the head),
so each production row's probabilities say how likely each class is to be its true one. Two
estimators read them (`monitor.estimator`):

- `cbpe`, confidence-based performance estimation (NannyML's CBPE, here for any classifier):
  every row's true class is drawn from its probabilities, many times; each draw gives a realised
  accuracy and macro-F1, whose mean is the estimate and whose 2.5-97.5% range is the sampling
  interval (the expected confusion matrix is the mean of the drawn ones).
- `atc`, average thresholded confidence (Garg et al., ICLR 2022) with their negative-entropy
  score: the score threshold at which the share of the reference's held-out rows above it equals
  their accuracy; the estimate is the share of current rows above it. Its macro-F1 is cbpe's (atc
  estimates accuracy only). With fewer than ATC_MIN_ERRORS misclassified reference rows the
  threshold sits at the few least confident rows (a reference at 100% puts it at the minimum, so
  every less confident row counts as wrong: the demo's shifted traffic, 0.86 true, was estimated
  0.31), and cbpe is used instead, saying so.

Both are checked on the champion's held-out reference, which has labels: fitted on its val rows,
compared with the truth on its test rows. That gap (the estimator's error on data like the
training data) widens the interval on both sides. bench/estimate.py measures the estimators on
real data with and without shift (220 windows of sms_spam, trec_qc, clothing_small): mean
absolute error cbpe 0.054 (clean windows 0.019, shifted 0.059), atc with the max-confidence
score fitted on val 0.044, atc with negative entropy fitted on every held-out row 0.037 (clean
0.014, shifted 0.041): under shift the calibrated probabilities are overconfident, which the
threshold partly absorbs. atc is the default.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

ESTIMATORS = ("cbpe", "atc")
ATC_MIN_ERRORS = 10  # fewer misclassified reference rows: atc's threshold is the few least confident rows


@dataclass(frozen=True)
class PerformanceEstimate:
    method: str
    records: int
    accuracy: float
    accuracy_low: float
    accuracy_high: float
    macro_f1: float | None
    macro_f1_low: float | None
    macro_f1_high: float | None
    reference_accuracy: float | None  # the truth on the reference's test rows
    reference_estimate: float | None  # the estimator on the same rows (fitted on val)
    threshold: float | None = None  # atc's score threshold
    note: str = ""  # why the estimator asked for was not used

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        f1 = (f", macro-F1 {self.macro_f1:.3f} [{self.macro_f1_low:.3f}, {self.macro_f1_high:.3f}]"
              if self.macro_f1 is not None else "")
        check = (f"; on the reference's test rows {self.reference_estimate:.3f} estimated vs "
                 f"{self.reference_accuracy:.3f} true" if self.reference_accuracy is not None else "")
        return (f"estimated accuracy {self.accuracy:.3f} [{self.accuracy_low:.3f}, {self.accuracy_high:.3f}]{f1} "
                f"({self.method}, {self.records} records, no labels{check})" + (f"; {self.note}" if self.note else ""))


def probabilities(frame: pd.DataFrame, labels: list[str]) -> np.ndarray:
    """(n, classes) probabilities of a log or reference frame; rows logged before probabilities
    were (or by another model) get their confidence on the predicted class and the rest spread evenly."""
    k = len(labels)
    index = {c: i for i, c in enumerate(labels)}
    out = np.empty((len(frame), k), dtype=np.float64)
    probs = frame["probs"].to_numpy() if "probs" in frame else [None] * len(frame)
    for row, (p, pred, conf) in enumerate(zip(probs, frame["pred"], frame["confidence"], strict=True)):
        if p is not None and not (np.isscalar(p) and pd.isna(p)) and len(p) == k:
            out[row] = np.asarray(p, dtype=np.float64)
        else:
            out[row] = (1.0 - float(conf)) / max(k - 1, 1)
            out[row, index.get(str(pred), 0)] = float(conf)
    return out / out.sum(axis=1, keepdims=True)


def _draws(probs: np.ndarray, pred: np.ndarray, draws: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Realised (accuracy, macro-F1) for `draws` label draws from the probabilities."""
    rng = np.random.default_rng(seed)
    cum = probs.cumsum(axis=1)
    k = probs.shape[1]
    acc, f1 = np.empty(draws), np.empty(draws)
    for d in range(draws):
        y = np.minimum((rng.random((len(probs), 1)) > cum).sum(axis=1), k - 1)
        acc[d] = float((y == pred).mean())
        tp = np.bincount(pred[y == pred], minlength=k)
        n_true, n_pred = np.bincount(y, minlength=k), np.bincount(pred, minlength=k)
        denom = n_true + n_pred
        present = denom > 0
        f1[d] = float(np.mean(2 * tp[present] / denom[present]))
    return acc, f1


def negative_entropy(probs: np.ndarray) -> np.ndarray:
    """atc's score per row (Garg et al.'s ATC-NE): sum p log p, 0 for a certain row."""
    return (probs * np.log(np.clip(probs, 1e-12, 1.0))).sum(axis=1)


def _correct(frame: pd.DataFrame) -> np.ndarray:
    """Per labelled row (a reference's): was the model's prediction its label?"""
    return (frame["pred"].astype(str) == frame["label"].astype(str)).to_numpy()


def _atc_threshold(frame: pd.DataFrame, labels: list[str]) -> float:
    """The score threshold whose share of `frame`'s rows above it is their accuracy."""
    if not len(frame):
        return -np.inf
    return float(np.quantile(negative_entropy(probabilities(frame, labels)), 1.0 - _correct(frame).mean()))


def _reference_check(reference: pd.DataFrame, labels: list[str], method: str,
                     draws: int, seed: int) -> tuple[float | None, float | None]:
    """(truth, estimate) on the reference's test rows, the estimator fitted on its val rows."""
    if "label" not in reference or "split" not in reference:
        return None, None
    val, test = reference[reference["split"] == "val"], reference[reference["split"] == "test"]
    if len(test) < 10 or (method == "atc" and len(val) < 10):
        return None, None
    truth = float(_correct(test).mean())
    if method == "atc":
        t = _atc_threshold(val, labels)
        return truth, float((negative_entropy(probabilities(test, labels)) > t).mean())
    p = probabilities(test, labels)
    return truth, float(_draws(p, p.argmax(1), draws, seed)[0].mean())


def estimate_performance(reference: pd.DataFrame, current: pd.DataFrame, labels: list[str], method: str = "cbpe",
                         draws: int = 200, seed: int = 0) -> PerformanceEstimate:
    """The champion's accuracy and macro-F1 on `current` (log rows: pred, confidence, probs) with an
    interval, from its probabilities alone; `reference` (held-out rows with labels) fits atc and
    measures the estimator's own error."""
    if method not in ESTIMATORS:
        raise ValueError(f"unknown estimator {method!r}: one of {ESTIMATORS}")
    note = ""
    if method == "atc":
        errors = int((~_correct(reference)).sum()) if "label" in reference else 0
        if errors < ATC_MIN_ERRORS:  # its threshold would be an extreme order statistic of a few rows
            method, note = "cbpe", (f"atc needs at least {ATC_MIN_ERRORS} misclassified reference rows to place its "
                                    f"threshold and the reference has {errors}: cbpe instead")
    probs = probabilities(current, labels)
    index = {c: i for i, c in enumerate(labels)}
    pred = np.array([index.get(str(c), 0) for c in current["pred"]], dtype=np.int64)
    acc_draws, f1_draws = _draws(probs, pred, draws, seed)
    ref_truth, ref_est = _reference_check(reference, labels, method, draws, seed)
    slack = abs(ref_truth - ref_est) if ref_truth is not None and ref_est is not None else 0.0
    threshold = None
    if method == "atc":
        threshold = _atc_threshold(reference, labels)  # a reference without labels fell back to cbpe above
        accuracy = float((negative_entropy(probs) > threshold).mean())
        half = 1.96 * np.sqrt(accuracy * (1 - accuracy) / max(len(current), 1))
        low, high = accuracy - half, accuracy + half
    else:
        accuracy = float(acc_draws.mean())
        low, high = np.quantile(acc_draws, [0.025, 0.975])

    def clip(x: float) -> float:
        return float(min(1.0, max(0.0, x)))

    f1_low, f1_high = np.quantile(f1_draws, [0.025, 0.975])
    return PerformanceEstimate(method=method, records=len(current), accuracy=accuracy,
                               accuracy_low=clip(low - slack), accuracy_high=clip(high + slack),
                               macro_f1=float(f1_draws.mean()), macro_f1_low=clip(f1_low - slack),
                               macro_f1_high=clip(f1_high + slack), reference_accuracy=ref_truth,
                               reference_estimate=ref_est, threshold=threshold, note=note)
