"""7. Fine-tuning throughput (samples/s), full strategy: graft's training step vs. a plain
PyTorch loop as in timm's train.py (model.train(), AdamW, cross-entropy, backward, step).

Same model (MobileNetV2, ImageNet weights from ../shared), same batch size, same precision
(fp32 on CPU; bf16 autocast + channels-last on a GPU, both sides), same data loader (timm's
training transform on the demo shapes), the same number of steps after the same warm-up.
graft's step adds layer-wise learning rates, class-weighted label smoothing, gradient clipping,
the per-step cosine schedule and BatchNorm statistics kept frozen. Goal: at least 1.0x.

    .venv/bin/python -m bench.finetune [--steps 12] [--batch 16]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench.common import MOBILENET, record
from pipeline.core.config import parse_params
from pipeline.data.demo import make_image_demo
from pipeline.data.prepare import prepare_data
from pipeline.model.backbones import Classifier, load_backbone
from pipeline.model.device import autocast_dtype, grad_scaler, resolve_device
from pipeline.model.distributed import Dist
from pipeline.model.finetune import _train_epoch
from pipeline.model.loaders import make_loader
from pipeline.model.optim import apply_freeze, build_optimizer, build_scheduler
from pipeline.model.probe import WeightedCrossEntropy, class_weights


def _loader(backbone, frame, targets, root, batch, n_batches):
    loader = make_loader(backbone, frame, targets, root, batch_size=batch, train=True,
                         generator=torch.Generator().manual_seed(0), drop_last=True)
    return list(itertools.islice(iter(loader), n_batches))  # decoded once: both sides time the model only


def plain_loop(clf: nn.Module, batches, device) -> float:
    """timm train.py's inner loop, without its extras."""
    clf.train()
    opt = torch.optim.AdamW(clf.parameters(), lr=1e-4, weight_decay=0.01)
    loss_fn = nn.CrossEntropyLoss()
    amp = device.type == "cuda"
    start = time.perf_counter()
    for inputs, y in batches:
        x, y = inputs[0].to(device), y.to(device)
        if amp:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(clf(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if amp:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def graft_steps(clf, backbone, batches, tp, device, n) -> float:
    apply_freeze(clf, backbone, "full", 0, tp)
    opt = build_optimizer(clf, backbone, tp, False)
    sched = build_scheduler(opt, tp, len(batches))
    ys = np.concatenate([y.numpy() for _, y in batches])
    loss_fn = WeightedCrossEntropy(class_weights(ys, n).to(device), tp.label_smoothing).to(device)
    start = time.perf_counter()
    _train_epoch(clf, batches, opt, sched, loss_fn, tp, device, 0, "bench", None, Dist(), grad_scaler(device))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def run(steps: int = 12, batch: int = 16, warmup: int = 2, repeats: int = 3) -> dict:
    work = Path(tempfile.mkdtemp(prefix="graft-bench-ft-"))
    root = make_image_demo(work / "imgs", per_class=40)
    p = parse_params({"train": {"batch_size": batch}})
    tp = p.train
    device = resolve_device(tp.device)
    frame = prepare_data(root, p.data, p.prepare).manifest
    labels = sorted(frame["label"].unique())
    weights = str(MOBILENET) if MOBILENET.exists() else None
    backbone = load_backbone("mobilenetv2_100", weights, "image", pretrained=weights is not None)
    base_clf = Classifier(backbone.module, backbone.dim, len(labels))
    batches = _loader(backbone, frame, frame["label"].map(labels.index).tolist(), root, batch, steps + warmup)
    ours_s, base_s = [], []
    for _ in range(repeats):
        plain = copy.deepcopy(base_clf).to(device)
        if device.type == "cuda":
            plain = plain.to(memory_format=torch.channels_last)
        plain_loop(plain, batches[:warmup], device)
        base_s.append(plain_loop(plain, batches[warmup:], device))
        ours = copy.deepcopy(base_clf).to(device)
        if device.type == "cuda":
            ours = ours.to(memory_format=torch.channels_last)
        bb = copy.copy(backbone)
        bb.module = ours.backbone
        graft_steps(ours, bb, batches[:warmup], tp, device, len(labels))
        ours_s.append(graft_steps(ours, bb, batches[warmup:], tp, device, len(labels)))
    samples = steps * batch
    b, o = samples / float(np.median(base_s)), samples / float(np.median(ours_s))
    where = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU"
    return record(f"finetune_{device.type}", f"7. Fine-tuning throughput, MobileNetV2 full, batch {batch}, {where}",
                  baseline="plain PyTorch loop (timm train.py style)", ours="graft training step",
                  goal=">= 1.0x", baseline_value=b, ours_value=o, unit="samples/s", ratio=o / b,
                  ratio_label="x the plain loop", goal_met=o / b >= 1.0,
                  details={"steps": steps, "warmup": warmup, "repeats": repeats, "batch": batch,
                           "precision": (f"graft: {autocast_dtype(device)} autocast, channels-last; plain: bf16 autocast"
                                         if device.type == "cuda" else "fp32"),
                           "runs_s": {"graft": ours_s, "plain": base_s}})


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch", type=int, default=16)
    a = ap.parse_args()
    run(a.steps, a.batch)
