"""train: fine-tune the selected backbone with the selected strategy.

Every strategy starts from a linear probe fitted on cached frozen features (LP-FT): the head
begins where the frozen features already lead, so tuning the backbone does not start by
undoing a random head. `linear_probe` stops there; the others then train backbone groups
(`partial`, `full`, `gradual_unfreeze`) or LoRA adapters (`lora`) with AdamW, warm-up and
cosine decay, label smoothing, class weights, gradient clipping and early stopping on
validation macro-F1. Each epoch is seeded from (seed, epoch) and checkpointed, so `resume`
continues a killed run to the same result.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from pipeline.core.artifacts import (
    CHECKPOINTS,
    HISTORY,
    LEADERBOARD,
    MODEL,
    SPLITS,
    TRAIN_METRICS,
    Workspace,
    require,
)
from pipeline.core.config import save_resolved
from pipeline.core.errors import GraftError
from pipeline.core.io import write_atomic, write_json_atomic
from pipeline.core.params import Params, TrainParams
from pipeline.model.backbones import Backbone, Classifier, load_backbone, save_backbone_config
from pipeline.model.distributed import Dist, init_distributed
from pipeline.model.features import embed_frame
from pipeline.model.loaders import make_loader, resolve_device
from pipeline.model.metrics import better, classification_metrics, predict_logits
from pipeline.model.optim import (
    apply_freeze,
    build_optimizer,
    build_scheduler,
    unwrap_lora,
    wrap_lora,
)
from pipeline.model.probe import EpochLog, WeightedCrossEntropy, class_weights, fit_probe_head
from pipeline.model.trained import dataset_labels, encode_labels, load_validated


@dataclass(frozen=True)
class TrainResult:
    model_dir: Path
    strategy: str
    best_epoch: int
    epochs_run: int
    history: list[dict[str, float]]
    val: dict[str, float]
    test: dict[str, float]
    probe_val: dict[str, float]
    seconds: float


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------- fine-tuning


def _ckpt_paths(out: Path) -> tuple[Path, Path]:
    return out / CHECKPOINTS / "last.safetensors", out / CHECKPOINTS / "last_state.pt"


def _save_weights(path: Path, module: nn.Module) -> None:
    """The module's state dict as safetensors, written atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    write_atomic(path, lambda p: save_file(tensors, str(p)))


def _save_checkpoint(out: Path, clf: Classifier, state: dict[str, Any]) -> None:
    weights, meta = _ckpt_paths(out)
    _save_weights(weights, clf)
    write_atomic(meta, lambda p: torch.save(state, p))


def _train_epoch(clf: nn.Module, loader: Any, opt: torch.optim.Optimizer, sched: Any, loss_fn: nn.Module,
                 tp: TrainParams, device: torch.device, step: int, desc: str, mixup: Any,
                 dist: Dist) -> tuple[float, int]:
    total, seen = 0.0, 0
    amp = device.type == "cuda"
    bar = tqdm(loader, desc=desc, unit="batch", disable=None if dist.main else True, leave=False)
    for inputs, y in bar:
        inputs = tuple(t.to(device, non_blocking=True) for t in inputs)
        y = y.to(device)
        if mixup is not None:
            x, y = mixup(inputs[0], y)
            inputs = (x,)
        if amp and inputs[0].ndim == 4:
            inputs = (inputs[0].contiguous(memory_format=torch.channels_last),)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(clf(*inputs).float(), y)
        loss.backward()
        if tp.grad_clip:
            nn.utils.clip_grad_norm_([p for p in clf.parameters() if p.grad is not None], tp.grad_clip)
        opt.step()
        step += 1
        sched.step_update(step)
        total += loss.item() * len(y)
        seen += len(y)
        bar.set_postfix(loss=f"{total / seen:.4f}")
    return dist.mean(total, seen), step


def fine_tune(clf: Classifier, backbone: Backbone, strategy: str, frames: dict[str, pd.DataFrame],
              targets: dict[str, list[int]], root: Path, n: int, tp: TrainParams, out: Path,
              resume: bool, log: EpochLog | None,
              probe_val: dict[str, float]) -> tuple[list[dict[str, float]], dict[str, float], int]:
    """Train from the probe-initialised `clf`; an epoch must beat the probe's val score to be
    kept (best_epoch -1 means none did: the probe head on frozen features is returned)."""
    dist = init_distributed(tp.device)
    device = resolve_device(tp.device)
    if device.type == "cuda" and dist.world > 1:
        device = torch.device("cuda", dist.local_rank)
    lora = strategy == "lora"
    if lora:
        wrap_lora(clf, backbone, tp)
    clf.to(device)
    if device.type == "cuda" and backbone.modality == "image":
        clf.to(memory_format=torch.channels_last)
    ytr = np.array(targets["train"])
    weight = class_weights(ytr, n).to(device) if tp.class_weighting else None
    mixup = None
    if backbone.modality == "image" and (tp.mixup or tp.cutmix):
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
                               drop_last=mixup is not None)  # timm's Mixup needs even batches
    val_loader = make_loader(backbone, frames["val"], targets["val"], root, batch_size=tp.batch_size,
                             workers=tp.workers)
    opt = build_optimizer(clf, backbone, tp, lora)
    sched = build_scheduler(opt, tp, len(train_loader))
    state: dict[str, Any] = {"epoch": -1, "step": 0, "best": probe_val, "best_epoch": -1, "stale": 0,
                             "history": []}
    weights_path, state_path = _ckpt_paths(out)
    best_path = out / "checkpoints" / "best.safetensors"
    if dist.main and not (resume and state_path.exists()):  # the probe-initialised model is the bar
        _save_weights(best_path, clf)
    dist.barrier()
    if resume and state_path.exists():
        clf.load_state_dict(load_file(str(weights_path), device=str(device)))
        saved = torch.load(state_path, map_location=device, weights_only=True)
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        state = saved["progress"]
        sched.step_update(state["step"])
    for epoch in range(state["epoch"] + 1, tp.epochs):
        if state["stale"] >= tp.patience:
            break
        seed_everything(tp.seed * 1_000_003 + epoch)  # augmentation, dropout and shuffling per epoch
        gen.manual_seed(tp.seed * 1_000_003 + epoch)
        k = apply_freeze(clf, backbone, strategy, epoch, tp)
        model: nn.Module = clf
        if dist.world > 1:  # re-wrapped each epoch: the trainable set may change (gradual unfreezing)
            from torch.nn.parallel import DistributedDataParallel

            train_loader.sampler.set_epoch(epoch)
            model = DistributedDataParallel(clf, device_ids=[device.index] if device.type == "cuda" else None,
                                            find_unused_parameters=True)
        train_loss, state["step"] = _train_epoch(model, train_loader, opt, sched, loss_fn, tp, device,
                                                 state["step"], f"epoch {epoch + 1}/{tp.epochs}", mixup, dist)
        logits, yv = predict_logits(clf, val_loader, device, amp=device.type == "cuda")
        val = classification_metrics(yv, logits, n)
        row = {"epoch": epoch, "train_loss": train_loss, "trainable_groups": k,
               "lr": opt.param_groups[-1]["lr"] / opt.param_groups[-1].get("lr_scale", 1.0),
               **{f"val_{m}": v for m, v in val.items()}}
        state["history"].append(row)
        if log and dist.main:
            log(epoch, row)
        improved = better(val, state["best"])  # every process sees the same val: same decision
        if improved:
            state.update(best=val, best_epoch=epoch, stale=0)
        else:
            state["stale"] += 1
        state["epoch"] = epoch
        if dist.main:
            if improved:
                _save_weights(best_path, clf)
            _save_checkpoint(out, clf, {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                        "progress": state})
        dist.barrier()
    clf.load_state_dict(load_file(str(best_path), device=str(device)))
    if lora:
        unwrap_lora(clf, backbone)
    return state["history"], state["best"], state["best_epoch"]


# ---------------------------------------------------------------- stage


def train_model(manifest: pd.DataFrame, labels: list[str], root: Path, decision: dict[str, Any],
                params: Params, out: Path, resume: bool = False, log: EpochLog | None = None) -> TrainResult:
    """Core: train on the manifest's train split, select on val, report val and test metrics."""
    start = time.perf_counter()
    tp = params.train
    seed_everything(tp.seed)
    chosen = decision["chosen"]
    strategy = decision["strategy"]
    backbone = load_backbone(chosen.get("candidate") or chosen["name"], chosen["weights"],
                             str(manifest["modality"].iloc[0]), max_length=tp.max_length,
                             pretrained=chosen.get("pretrained", True))
    frames = {s: manifest[manifest["split"] == s].reset_index(drop=True) for s in SPLITS}
    for split, frame in frames.items():
        if frame.empty:
            raise GraftError(f"the {split} split is empty; validate should have stopped this run "
                             "(check validate.min_per_class)")
    targets = {s: encode_labels(f["label"], labels, f"the {s} split").tolist() for s, f in frames.items()}
    n = len(labels)
    cache = Path(params.paths.cache)
    feats = {s: embed_frame(backbone, f, root, cache, batch_size=tp.batch_size) for s, f in frames.items()
             if s != "test" or strategy == "linear_probe"}
    head, probe_hist, probe_val, probe_best = fit_probe_head(feats["train"], np.array(targets["train"]), feats["val"],
                                                 np.array(targets["val"]), n, tp,
                                                 log if strategy == "linear_probe" else None)
    clf = Classifier(backbone.module, backbone.dim, n)
    clf.head.load_state_dict(head.state_dict())
    if strategy == "linear_probe":
        history, val, best_epoch = probe_hist, probe_val, probe_best
        with torch.no_grad():
            test = classification_metrics(np.array(targets["test"]), clf.head(torch.from_numpy(feats["test"])).numpy(), n)
    else:
        history, val, best_epoch = fine_tune(clf, backbone, strategy, frames, targets, root, n, tp, out,
                                             resume, log, probe_val)
        device = resolve_device(tp.device)
        loader = make_loader(backbone, frames["test"], targets["test"], root, batch_size=tp.batch_size)
        logits, yt = predict_logits(clf, loader, device, amp=device.type == "cuda")
        test = classification_metrics(yt, logits, n)
    clf.cpu()
    model_dir = out / MODEL
    if init_distributed(tp.device).main:
        info = save_backbone_config(backbone, model_dir)
        _save_weights(model_dir / "model.safetensors", clf)
        write_json_atomic(model_dir / "model.json", {**info, "labels": labels, "num_classes": n,
                                                     "strategy": strategy, "best_epoch": best_epoch})
    return TrainResult(model_dir, strategy, best_epoch, len(history), history, val, test, probe_val,
                       time.perf_counter() - start)


def run_train(params: Params, ws: Workspace, resume: bool = False, log: EpochLog | None = None) -> TrainResult:
    """Stage entry: read validate's manifest and select's decision; write model/ and metrics.json."""
    manifest = load_validated(ws.validate)
    decision = json.loads(require(ws.select / LEADERBOARD, "select").read_text(encoding="utf-8"))
    labels = dataset_labels(params.validate_.labels, manifest)
    if params.select.strategy != "auto":
        decision["strategy"] = params.select.strategy
    out = ws.train
    (out / CHECKPOINTS).mkdir(parents=True, exist_ok=True)  # a declared output, empty for linear_probe
    result = train_model(manifest, labels, ws.data, decision, params, out, resume, log)
    if not init_distributed(params.train.device).main:
        return result
    shipped = ("probe head on frozen features: no fine-tuned epoch beat it on val"
               if result.best_epoch < 0 and result.strategy != "linear_probe" else result.strategy)
    write_json_atomic(out / TRAIN_METRICS, {
        "strategy": result.strategy, "shipped": shipped, "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "val": result.val, "test": result.test, "probe_val": result.probe_val,
        "seconds": round(result.seconds, 1)})
    write_json_atomic(out / HISTORY, result.history)
    save_resolved(params, out, "train")
    if not math.isfinite(result.val["loss"]):
        raise GraftError("training diverged (validation loss is not finite); lower train.lr")
    return result
