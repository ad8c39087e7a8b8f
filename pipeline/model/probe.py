"""The linear probe: a head fitted on cached frozen features, where every strategy starts (LP-FT).

The probe is scikit-learn's logistic regression, folded into an `nn.Linear` so the exported
network carries it.

Also the loss every training step uses: label-smoothed cross-entropy weighted per example.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from pipeline.core.params import TrainParams
from pipeline.model.metrics import better, classification_metrics

EpochLog = Callable[[int, dict[str, float]], None]


def class_weights(y: np.ndarray, n: int) -> torch.Tensor:
    counts = np.bincount(y, minlength=n).astype(np.float64)
    return torch.tensor(len(y) / (n * np.maximum(counts, 1)), dtype=torch.float32)


class WeightedCrossEntropy(nn.Module):
    """Label-smoothed cross-entropy with each example weighted by its true class.

    nn.CrossEntropyLoss(weight=w, label_smoothing=e) also weights the smoothing term by every
    class's weight, which pulls majority-class examples towards the minority class; measured
    here it cut a linear probe's validation macro-F1 from 0.94 to 0.74 on SMS spam.
    """

    def __init__(self, weight: torch.Tensor | None, label_smoothing: float):
        super().__init__()
        self.register_buffer("weight", weight)
        self.ce = nn.CrossEntropyLoss(reduction="none", label_smoothing=label_smoothing)

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        losses = self.ce(logits, y)
        if self.weight is None:
            return losses.mean()
        w = self.weight[y]
        return (losses * w).sum() / w.sum()


def standardise(x: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre, and one global scale, not one per dimension: a near-constant feature would otherwise
    get a huge folded weight that explodes as soon as fine-tuning moves the backbone."""
    mu = x.mean(0)
    return mu, float((x - mu).std()) + 1e-8


def logistic_probe(c: float, weighted: bool, tp: TrainParams) -> LogisticRegression:
    """The probe for one (C, class weighting), unfitted: the same model is fitted, refitted and cross-validated."""
    return LogisticRegression(C=c, max_iter=2000, tol=1e-4, class_weight="balanced" if weighted else None,
                              random_state=tp.seed)


def probe_grid(tp: TrainParams) -> list[tuple[float, bool]]:
    """(C, class weighting) pairs the probe chooses from: weighting both ways when it is auto."""
    weights = [True, False] if tp.class_weighting == "auto" else [bool(tp.class_weighting)]
    return [(c, w) for w in weights for c in tp.probe_c]


def _as_head(model: LogisticRegression, mu: np.ndarray, scale: float, n: int) -> nn.Linear:
    """The fitted model as a linear layer over raw features: (x - mu) / scale folded in."""
    coef, bias = model.coef_, model.intercept_
    if coef.shape[0] == 1:  # binary: sklearn keeps one row (the log-odds of class 1)
        coef, bias = np.vstack([-coef / 2, coef / 2]), np.array([-bias[0] / 2, bias[0] / 2])
    full_w, full_b = np.zeros((n, coef.shape[1])), np.full(n, -30.0)  # a class absent from training: never
    full_w[model.classes_], full_b[model.classes_] = coef, bias
    head = nn.Linear(coef.shape[1], n)
    with torch.no_grad():
        w = torch.from_numpy(full_w / scale).float()
        head.weight.copy_(w)
        head.bias.copy_(torch.from_numpy(full_b).float() - w @ torch.from_numpy(mu).float())
    return head


CV_BELOW = 1000  # val examples below which C is chosen by cross-validation on train + val


def fit_probe_head(xtr: np.ndarray, ytr: np.ndarray, xva: np.ndarray, yva: np.ndarray, n: int,
                   tp: TrainParams, log: EpochLog | None = None
                   ) -> tuple[nn.Linear, list[dict[str, float]], dict[str, float], int]:
    """A logistic regression on the cached frozen features (scikit-learn's L-BFGS), its inverse
    regularisation C (train.probe_c) and class weighting chosen together from probe_grid: the
    linear head every strategy starts from.

    They are chosen on val, or, when val has fewer than CV_BELOW examples, by stratified 5-fold
    cross-validation on train + val: on 143 clothing photos val chose C=10 (test 0.75) where the
    folds prefer stronger regularisation. Returns the head fitted on train, one history row per
    (C, weighting) (val metrics of the train-only fit, and the CV score when used), the chosen
    setting's val metrics and its index in probe_grid. On 5,000 sentiment sentences this probe reached 0.78 macro-F1 where 200
    epochs of AdamW on the same features reached 0.62."""
    mu, scale = standardise(xtr)
    xt, xv = (xtr - mu) / scale, (xva - mu) / scale
    grid = probe_grid(tp)
    cv = _cv_scores(np.vstack([xt, xv]), np.r_[ytr, yva], grid, tp) if len(yva) < CV_BELOW else None
    fits, history = [], []
    for i, (c, weighted) in enumerate(grid):
        model = logistic_probe(c, weighted, tp).fit(xt, ytr)
        val = classification_metrics(yva, _logits(model, xv, n), n)
        row = {"epoch": i, "C": c, "class_weighting": weighted, "train_loss": classification_metrics(ytr, _logits(model, xt, n), n)["loss"],
               **{f"val_{k}": v for k, v in val.items()}, **({"cv_macro_f1": cv[i][0]} if cv else {})}
        history.append(row)
        fits.append((model, val))
        if log:
            log(i, row)
    if cv:
        best_i = max(range(len(cv)), key=lambda i: cv[i])
    else:
        best_i = 0
        for i in range(1, len(fits)):
            if better(fits[i][1], fits[best_i][1]):
                best_i = i
    model, best = fits[best_i]
    return _as_head(model, mu, scale, n), history, best, best_i


def _cv_scores(x: np.ndarray, y: np.ndarray, grid: list[tuple[float, bool]], tp: TrainParams
               ) -> list[tuple[float, float]] | None:
    """(mean macro-F1, mean -log loss) per (C, weighting) over stratified folds; None when a class
    is too rare to fold."""
    from sklearn.model_selection import StratifiedKFold, cross_validate

    folds = min(5, int(np.bincount(y).min()))
    if folds < 2:
        return None
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=tp.seed)
    out = []
    for c, weighted in grid:
        res = cross_validate(logistic_probe(c, weighted, tp), x, y, cv=split, scoring=("f1_macro", "neg_log_loss"))
        out.append((float(res["test_f1_macro"].mean()), float(res["test_neg_log_loss"].mean())))
    return out


def refit_probe_head(x: np.ndarray, y: np.ndarray, n: int, c: float, weighted: bool, tp: TrainParams) -> nn.Linear:
    """The chosen probe refitted on every labelled example given (train + val)."""
    mu, scale = standardise(x)
    return _as_head(logistic_probe(c, weighted, tp).fit((x - mu) / scale, y), mu, scale, n)


def _logits(model: LogisticRegression, x: np.ndarray, n: int) -> np.ndarray:
    return _as_head(model, np.zeros(x.shape[1]), 1.0, n)(torch.from_numpy(x).float()).detach().numpy()
