"""Classification metrics shared by train and evaluate."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score
from torch import nn
from torch.utils.data import DataLoader


def classification_metrics(y_true: np.ndarray, logits: np.ndarray, num_classes: int) -> dict[str, float]:
    pred = logits.argmax(1)
    loss = float(nn.functional.cross_entropy(torch.from_numpy(logits).float(),
                                             torch.from_numpy(y_true).long()))
    return {"loss": loss, "accuracy": float(accuracy_score(y_true, pred)),
            "macro_f1": float(f1_score(y_true, pred, average="macro", labels=list(range(num_classes)),
                                       zero_division=0))}


def better(a: dict[str, float], b: dict[str, float] | None) -> bool:
    """Is `a` better than `b`: higher macro-F1, ties broken by lower loss."""
    return b is None or (a["macro_f1"], -a["loss"]) > (b["macro_f1"], -b["loss"])


@torch.inference_mode()
def predict_logits(model: nn.Module, loader: DataLoader, device: torch.device,
                   amp: bool = False) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    outs, ys = [], []
    for inputs, y in loader:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            outs.append(model(*(t.to(device) for t in inputs)).float().cpu())
        ys.append(y)
    return torch.cat(outs).numpy(), torch.cat(ys).numpy()
