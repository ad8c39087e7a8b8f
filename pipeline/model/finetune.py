"""Fine-tuning: the epoch loop every strategy but `linear_probe` runs, from the probe-initialised model.

AdamW with layer-wise decayed learning rates, warm-up and cosine decay, label smoothing, class
weights, gradient clipping and early stopping on validation macro-F1; an epoch is kept only when it
beats the frozen probe's val score. Each epoch is seeded from (seed, epoch) and checkpointed, so
`graft train --resume` continues a killed run to the same result; DistributedDataParallel when
launched with torchrun.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from pipeline.core.artifacts import CHECKPOINTS
from pipeline.core.io import write_atomic
from pipeline.core.params import TrainParams
from pipeline.core.progress import progress
from pipeline.model.backbones import Backbone, Classifier
from pipeline.model.device import autocast_dtype, grad_scaler, resolve_device
from pipeline.model.distributed import Dist, init_distributed
from pipeline.model.loaders import make_loader
from pipeline.model.metrics import better, classification_metrics, predict_logits, vouched_gain
from pipeline.model.optim import (
    apply_freeze,
    build_optimizer,
    build_scheduler,
    unwrap_lora,
    wrap_lora,
)
from pipeline.model.probe import EpochLog, WeightedCrossEntropy, class_weights


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _ckpt_paths(out: Path) -> tuple[Path, Path]:
    return out / CHECKPOINTS / "last.safetensors", out / CHECKPOINTS / "last_state.pt"


def save_weights(path: Path, module: nn.Module) -> None:
    """The module's state dict as safetensors, written atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    write_atomic(path, lambda p: save_file(tensors, str(p)))


def _save_checkpoint(out: Path, clf: Classifier, state: dict[str, Any]) -> None:
    weights, meta = _ckpt_paths(out)
    save_weights(weights, clf)
    write_atomic(meta, lambda p: torch.save(state, p))


def _train_epoch(clf: nn.Module, loader: Any, opt: torch.optim.Optimizer, sched: Any, loss_fn: nn.Module,
                 tp: TrainParams, device: torch.device, step: int, desc: str, mixup: Any,
                 dist: Dist, scaler: torch.amp.GradScaler) -> tuple[float, int]:
    total, seen = torch.zeros((), dtype=torch.float64, device=device), 0  # summed on the device: no sync a step
    dtype = autocast_dtype(device)
    for inputs, y in progress(loader, desc=desc, unit="batch", disable=not dist.main):
        inputs = tuple(t.to(device, non_blocking=True) for t in inputs)
        y = y.to(device, non_blocking=True)
        if mixup is not None:
            x, y = mixup(inputs[0], y)
            inputs = (x,)
        if device.type == "cuda" and inputs[0].ndim == 4:
            inputs = (inputs[0].contiguous(memory_format=torch.channels_last),)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = loss_fn(clf(*inputs).float(), y)
        scaler.scale(loss).backward()
        if tp.grad_clip:
            scaler.unscale_(opt)  # clip the true gradients, not the float16-scaled ones
            nn.utils.clip_grad_norm_([p for p in clf.parameters() if p.grad is not None], tp.grad_clip)
        scaler.step(opt)
        scaler.update()
        step += 1
        sched.step_update(step)
        total += loss.detach().double() * len(y)
        seen += len(y)
    return dist.mean(float(total), seen), step


def _snapshot(clf: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in clf.state_dict().items()}


def fine_tune(clf: Classifier, backbone: Backbone, strategy: str, frames: dict[str, pd.DataFrame],
              targets: dict[str, list[int]], root: Path, n: int, tp: TrainParams, out: Path,
              resume: bool, log: EpochLog | None, probe_val: dict[str, float],
              probe_val_logits: np.ndarray) -> tuple[list[dict[str, float]], dict[str, float], int, str,
                                                     dict[str, Any]]:
    """Train from the probe-initialised `clf`; an epoch must beat the probe's val macro-F1 by
    train.min_gain to be kept, and the best one must then show a gain the val set can vouch for
    (metrics.vouched_gain at train.gain_confidence, Bonferroni-corrected for the epochs compared:
    picking the best of several epochs on a small val set flatters it). best_epoch -1 means none
    did: the probe-initialised model is returned. Returns the history, the best val metrics, the
    best epoch, why training stopped and the best epoch's gain over the probe."""
    dist = init_distributed(tp.device)
    device = resolve_device(tp.device)
    if device.type == "cuda" and dist.active:  # torchrun: this process's own GPU
        device = torch.device("cuda", dist.local_rank)
    lora = strategy == "lora"
    if lora:
        wrap_lora(clf, backbone, tp)
    clf.to(device)
    if device.type == "cuda" and backbone.build.get("library") == "timm":  # convolutions over pixels
        clf.to(memory_format=torch.channels_last)
    ytr = np.array(targets["train"])
    weight = class_weights(ytr, n).to(device) if tp.class_weighting else None
    mixup = None
    if backbone.build.get("library") == "timm" and (tp.mixup or tp.cutmix):  # timm mixes pixel batches
        from timm.data import Mixup
        from timm.loss import SoftTargetCrossEntropy

        mixup = Mixup(mixup_alpha=tp.mixup, cutmix_alpha=tp.cutmix, label_smoothing=tp.label_smoothing,
                      num_classes=n)
        loss_fn: nn.Module = SoftTargetCrossEntropy()
    else:
        loss_fn = WeightedCrossEntropy(weight, tp.label_smoothing).to(device)
    gen = torch.Generator()
    train_loader = make_loader(backbone, frames["train"], targets["train"], root,
                               batch_size=max(1, tp.batch_size // dist.world), train=True, augment=tp.augment,
                               generator=gen, workers=tp.workers, seed=tp.seed,
                               shard=(dist.world, dist.rank) if dist.world > 1 else None,
                               drop_last=mixup is not None,  # timm's Mixup needs even batches
                               pin_memory=device.type == "cuda")
    val_loader = make_loader(backbone, frames["val"], targets["val"], root, batch_size=tp.batch_size,
                             workers=tp.workers, pin_memory=device.type == "cuda")
    opt = build_optimizer(clf, backbone, tp, lora)
    sched = build_scheduler(opt, tp, len(train_loader))
    scaler = grad_scaler(device)  # float16 autocast only (GPUs without bfloat16)
    state: dict[str, Any] = {"epoch": -1, "step": 0, "best": probe_val, "best_epoch": -1, "stale": 0,
                             "history": [], "seconds": 0.0, "stopped": f"train.epochs={tp.epochs} run"}
    weights_path, state_path = _ckpt_paths(out)
    best_path = out / "checkpoints" / "best.safetensors"
    # every process keeps the best weights in memory (on other nodes out/ is another disk); rank 0
    # also writes them, for --resume
    probe_weights = best_weights = _snapshot(clf)  # the probe-initialised model is the bar
    best_val_logits: np.ndarray | None = None
    if dist.main and not (resume and state_path.exists()):
        save_weights(best_path, clf)
    dist.barrier()
    if resume and state_path.exists():
        if best_path.exists():
            best_weights = load_file(str(best_path), device="cpu")
        clf.load_state_dict(load_file(str(weights_path), device=str(device)))
        saved = torch.load(state_path, map_location=device, weights_only=True)
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        if saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        state = saved["progress"]
        sched.step_update(state["step"])
    budget = tp.max_minutes * 60
    for epoch in range(state["epoch"] + 1, tp.epochs):
        if state["stale"] >= tp.patience:
            state["stopped"] = f"early stop: {tp.patience} epochs without a better val (train.patience)"
            break
        last = state["history"][-1]["seconds"] if state["history"] else 0.0
        if budget and state["seconds"] + last > budget:
            state["stopped"] = (f"time budget: another epoch (~{last:.0f} s) would pass train.max_minutes="
                                f"{tp.max_minutes:g} after {state['seconds'] / 60:.1f} min")
            break
        seed_everything(tp.seed * 1_000_003 + epoch)  # augmentation, dropout and shuffling per epoch
        gen.manual_seed(tp.seed * 1_000_003 + epoch)
        k = apply_freeze(clf, backbone, strategy, epoch, tp)
        model: nn.Module = clf
        if dist.world > 1:
            train_loader.sampler.set_epoch(epoch)
        if dist.active:  # re-wrapped each epoch: the trainable set may change (gradual unfreezing)
            from torch.nn.parallel import DistributedDataParallel

            model = DistributedDataParallel(clf, device_ids=[device.index] if device.type == "cuda" else None,
                                            find_unused_parameters=True)
        began = time.perf_counter()
        train_loss, state["step"] = _train_epoch(model, train_loader, opt, sched, loss_fn, tp, device,
                                                 state["step"], f"epoch {epoch + 1}/{tp.epochs}", mixup, dist, scaler)
        logits, yv = predict_logits(clf, val_loader, device)
        val = classification_metrics(yv, logits, n)
        took = time.perf_counter() - began
        state["seconds"] += took
        row = {"epoch": epoch, "seconds": round(took, 1), "train_loss": train_loss,
               "trainable_groups": k,
               "lr": opt.param_groups[-1]["lr"] / opt.param_groups[-1].get("lr_scale", 1.0),
               **{f"val_{m}": v for m, v in val.items()}}
        state["history"].append(row)
        if log and dist.main:
            log(epoch, row)
        # every process sees the same val: the same decision. Beating the probe takes a margin.
        improved = better(val, state["best"]) and (
            state["best_epoch"] >= 0 or val["macro_f1"] >= probe_val["macro_f1"] + tp.min_gain)
        if improved:
            state.update(best=val, best_epoch=epoch, stale=0)
            best_weights, best_val_logits = _snapshot(clf), logits
        else:
            state["stale"] += 1
        state["epoch"] = epoch
        if dist.main:
            if improved:
                save_weights(best_path, clf)
            _save_checkpoint(out, clf, {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                        "scaler": scaler.state_dict(), "progress": state})
        dist.barrier()
    clf.load_state_dict({k: v.to(device) for k, v in best_weights.items()})
    best, best_epoch, stopped, gain = state["best"], state["best_epoch"], state["stopped"], {}
    if best_epoch >= 0:
        if best_val_logits is None:  # resumed after the best epoch: its val predictions again
            best_val_logits = predict_logits(clf, val_loader, device)[0]
        # val compared every epoch with the bar: the best of k has k chances at luck (Bonferroni)
        looks = len(state["history"])
        confidence = 1 - (1 - tp.gain_confidence) / looks if tp.gain_confidence else 0.0
        gain = {**vouched_gain(np.array(targets["val"]), best_val_logits, probe_val_logits, n, confidence, tp.seed),
                "epochs_compared": looks}
        if not gain["significant"]:
            clf.load_state_dict({k: v.to(device) for k, v in probe_weights.items()})
            stopped += (f"; epoch {best_epoch + 1}'s val macro-F1 gain over the probe ({gain['gain']:+.3f}) is within "
                        f"val's noise: its {confidence:.1%} paired-bootstrap interval (train.gain_confidence for the "
                        f"best of {looks} epochs) "
                        f"[{gain['interval'][0]:+.3f}, {gain['interval'][1]:+.3f}] reaches 0, so the probe ships")
            best, best_epoch = probe_val, -1
    if lora:
        unwrap_lora(clf, backbone)
    return state["history"], best, best_epoch, stopped, gain
