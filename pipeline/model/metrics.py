"""Classification metrics shared by train and evaluate."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score
from torch import nn
from torch.utils.data import DataLoader

from pipeline.model.device import autocast_dtype


def classification_metrics(y_true: np.ndarray, logits: np.ndarray, num_classes: int) -> dict[str, float]:
    pred = logits.argmax(1)
    loss = float(nn.functional.cross_entropy(torch.from_numpy(logits).float(),
                                             torch.from_numpy(y_true).long()))
    return {"loss": loss, "accuracy": float(accuracy_score(y_true, pred)),
            "macro_f1": float(f1_score(y_true, pred, average="macro", labels=list(range(num_classes)),
                                       zero_division=0))}


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int) -> tuple[float, list[dict[str, float]]]:
    """ECE over equal-width confidence bins, and the bins for a reliability plot."""
    conf, pred = probs.max(1), probs.argmax(1)
    edges = np.linspace(0, 1, bins + 1)
    ece, table = 0.0, []
    for lo, hi in itertools.pairwise(edges):
        mask = (conf > lo) & (conf <= hi)
        if mask.any():
            acc, avg = float((pred[mask] == y[mask]).mean()), float(conf[mask].mean())
            ece += mask.mean() * abs(acc - avg)
            table.append({"low": float(lo), "high": float(hi), "count": int(mask.sum()),
                          "accuracy": acc, "confidence": avg})
    return float(ece), table


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """Temperature scaling (Guo et al. 2017): the T > 0 minimising the NLL of softmax(logits / T)
    on held-out data. Dividing the head's weights and bias by T changes no prediction, only the
    confidence; T > 1 softens an over-confident model."""
    from scipy.optimize import minimize_scalar

    if (logits.argmax(1) == y).all():  # no error to calibrate against: NLL falls forever as T -> 0
        return 1.0
    z = torch.from_numpy(logits).double()
    t = torch.from_numpy(y).long()

    def nll(log_t: float) -> float:
        return float(nn.functional.cross_entropy(z / np.exp(log_t), t))

    res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(res.x)) if res.success and nll(res.x) < nll(0.0) else 1.0


def better(a: dict[str, float], b: dict[str, float] | None) -> bool:
    """Is `a` better than `b`: higher macro-F1, ties broken by lower loss."""
    return b is None or (a["macro_f1"], -a["loss"]) > (b["macro_f1"], -b["loss"])


@torch.inference_mode()
def predict_logits(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Logits and targets over `loader` on `device`, under the device's autocast (none on the CPU)."""
    model.eval()
    outs, ys = [], []
    dtype = autocast_dtype(device)
    for inputs, y in loader:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            outs.append(model(*(t.to(device) for t in inputs)).float().cpu())
        ys.append(y)
    return torch.cat(outs).numpy(), torch.cat(ys).numpy()


def paired_bootstrap(y: np.ndarray, pred_new: np.ndarray, pred_old: np.ndarray,
                     metric: Callable[[np.ndarray, np.ndarray], float], samples: int, confidence: float,
                     seed: int) -> tuple[float, float]:
    """Percentile interval of metric(new) - metric(old), resampling the examples jointly."""
    rng = np.random.default_rng(seed)
    n = len(y)
    diffs = np.empty(samples)
    for i in range(samples):
        idx = rng.integers(0, n, n)
        diffs[i] = metric(y[idx], pred_new[idx]) - metric(y[idx], pred_old[idx])
    alpha = (1 - confidence) / 2
    return float(np.quantile(diffs, alpha)), float(np.quantile(diffs, 1 - alpha))


def vouched_gain(y: np.ndarray, new_logits: np.ndarray, old_logits: np.ndarray, n: int, confidence: float,
                 seed: int) -> dict[str, Any]:
    """The macro-F1 gain of `new` over `old` on the same held-out rows, with its paired-bootstrap
    interval at `confidence`; `significant` when the interval's lower end is above 0 (always, with
    confidence 0). How train decides whether val vouches for a fine-tune or a test-time view."""
    def f1(a: np.ndarray, b: np.ndarray) -> float:
        return float(f1_score(a, b, average="macro", labels=list(range(n)), zero_division=0))

    new, old = new_logits.argmax(1), old_logits.argmax(1)
    gain = f1(y, new) - f1(y, old)
    if not confidence:
        return {"gain": gain, "interval": None, "confidence": 0.0, "significant": True, "val_examples": len(y)}
    lo, hi = paired_bootstrap(y, new, old, f1, 1000, confidence, seed)
    return {"gain": gain, "interval": [lo, hi], "confidence": confidence, "significant": lo > 0,
            "val_examples": len(y)}
