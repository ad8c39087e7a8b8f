"""The linear probe: a head fitted on cached frozen features, where every strategy starts (LP-FT).

Also the loss every training step uses: label-smoothed cross-entropy weighted per example.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
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


def fit_probe_head(xtr: np.ndarray, ytr: np.ndarray, xva: np.ndarray, yva: np.ndarray, n: int,
                   tp: TrainParams, log: EpochLog | None = None
                   ) -> tuple[nn.Linear, list[dict[str, float]], dict[str, float], int]:
    """Train a linear head on cached features; centring and scaling are folded into its weights.

    One global scale, not one per dimension: a near-constant feature would otherwise get a huge
    folded weight that explodes as soon as fine-tuning moves the backbone.
    """
    torch.manual_seed(tp.seed)
    mu = xtr.mean(0)
    sd = np.full(xtr.shape[1], float((xtr - mu).std()) + 1e-8, dtype=np.float64)
    xt = torch.from_numpy((xtr - mu) / sd).float()
    xv = torch.from_numpy((xva - mu) / sd).float()
    yt = torch.from_numpy(ytr).long()
    head = nn.Linear(xtr.shape[1], n)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    opt = torch.optim.AdamW(head.parameters(), lr=tp.head_lr, weight_decay=tp.weight_decay)
    loss_fn = WeightedCrossEntropy(class_weights(ytr, n) if tp.class_weighting else None, tp.label_smoothing)
    gen = torch.Generator().manual_seed(tp.seed)
    batch = tp.batch_size
    best, best_state, best_epoch, history, stale = None, None, 0, [], 0
    for epoch in range(tp.probe_epochs):
        head.train()
        total = 0.0
        for idx in torch.randperm(len(yt), generator=gen).split(batch):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(head(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        with torch.no_grad():
            val = classification_metrics(yva, head(xv).numpy(), n)
        row = {"epoch": epoch, "train_loss": total / len(yt), **{f"val_{k}": v for k, v in val.items()}}
        history.append(row)
        if log:
            log(epoch, row)
        if better(val, best):
            best, best_epoch, stale = val, epoch, 0
            best_state = {k: v.clone() for k, v in head.state_dict().items()}
        else:
            stale += 1
            if stale >= max(tp.patience * 10, 20):
                break
    head.load_state_dict(best_state)
    with torch.no_grad():  # fold (x - mu) / sd into the weights: the head then reads raw features
        w = head.weight / torch.from_numpy(sd).float()
        head.bias -= w @ torch.from_numpy(mu).float()
        head.weight.copy_(w)
    return head, history, best, best_epoch
