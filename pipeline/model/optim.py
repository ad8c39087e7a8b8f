"""Which parameters train, and how fast: optimiser, schedule, freezing and LoRA adapters.

Discriminative learning rates: each layer group's rate is lr * layer_decay**(depth from the
top), via timm's create_optimizer_v2(layer_decay=...) for timm backbones and the same
`lr_scale` parameter groups for transformers; the head runs at head_lr. timm's cosine
scheduler (with warm-up) updates every step and applies each group's lr_scale.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pipeline.core.errors import GraftError
from pipeline.core.params import TrainParams
from pipeline.model.backbones import Backbone, Classifier


def _no_decay(name: str, p: nn.Parameter) -> bool:
    return p.ndim <= 1 or name.endswith(".bias")


def build_optimizer(clf: Classifier, backbone: Backbone, tp: TrainParams, lora: bool) -> torch.optim.Optimizer:
    for p in clf.parameters():
        p.requires_grad_(True)  # every group is in the optimiser; freezing only withholds grads
    head = {"params": list(clf.head.parameters()), "lr": tp.lr, "lr_scale": tp.head_lr / tp.lr,
            "weight_decay": 0.0}
    if lora:
        params = [p for n, p in clf.backbone.named_parameters() if "lora_" in n]
        opt = torch.optim.AdamW([{"params": params, "lr": tp.lr, "weight_decay": tp.weight_decay}],
                                lr=tp.lr)
    elif backbone.build.get("library") == "timm":  # timm's own layer decay over its group matcher
        from timm.optim import create_optimizer_v2

        opt = create_optimizer_v2(clf.backbone, opt="adamw", lr=tp.lr, weight_decay=tp.weight_decay,
                                  layer_decay=tp.layer_decay)
    else:
        groups = backbone.layer_groups()
        named = dict(clf.backbone.named_parameters())
        param_groups: list[dict[str, Any]] = []
        for depth, names in enumerate(reversed(groups)):
            scale = tp.layer_decay**depth
            for decay in (True, False):
                ps = [named[n] for n in names if _no_decay(n, named[n]) != decay]
                if ps:
                    param_groups.append({"params": ps, "lr": tp.lr, "lr_scale": scale,
                                         "weight_decay": tp.weight_decay if decay else 0.0})
        opt = torch.optim.AdamW(param_groups, lr=tp.lr)
    opt.add_param_group(head)
    return opt


def build_scheduler(opt: torch.optim.Optimizer, tp: TrainParams, steps_per_epoch: int) -> Any:
    from timm.scheduler import CosineLRScheduler

    total = max(1, tp.epochs * steps_per_epoch)
    sched = CosineLRScheduler(opt, t_initial=total, lr_min=tp.lr * 0.01,
                              warmup_t=int(tp.warmup_epochs * steps_per_epoch),
                              warmup_lr_init=tp.lr * 0.01, warmup_prefix=True, t_in_epochs=False)
    sched.step_update(0)
    return sched


def trainable_groups(strategy: str, n_groups: int, epoch: int, tp: TrainParams) -> int:
    """How many backbone layer groups, counted from the top, train in this epoch."""
    if strategy == "full":
        return n_groups
    if strategy == "partial":
        return min(n_groups, tp.partial_groups)
    if strategy == "gradual_unfreeze":
        return min(n_groups, epoch // tp.unfreeze_every)  # epoch 0 trains the head alone
    return 0  # lora and linear_probe: the backbone's own weights stay frozen


def apply_freeze(clf: Classifier, backbone: Backbone, strategy: str, epoch: int, tp: TrainParams) -> int:
    """Set requires_grad for this epoch; frozen BatchNorm layers stay in eval mode. Returns #groups."""
    if strategy == "lora":
        for n, p in clf.backbone.named_parameters():
            p.requires_grad_("lora_" in n)
        k = 0
    else:
        groups = backbone.layer_groups()
        k = trainable_groups(strategy, len(groups), epoch, tp)
        live = {n for names in groups[len(groups) - k:] for n in names} if k else set()
        for n, p in clf.backbone.named_parameters():
            p.requires_grad_(n in live)
    clf.head.requires_grad_(True)
    clf.train()
    for module in clf.backbone.modules():
        # Frozen layers never update their running statistics; with batchnorm: frozen the
        # trained ones keep them too (only their affine weights learn): statistics from small
        # batches were seen to drag fine-tunes below the frozen probe.
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and (tp.batchnorm == "frozen" or not any(
                p.requires_grad for p in module.parameters(recurse=False))):
            module.eval()
    return k


def wrap_lora(clf: Classifier, backbone: Backbone, tp: TrainParams) -> None:
    from peft import LoraConfig, get_peft_model

    names = {n.split(".")[-1] for n, m in clf.backbone.named_modules() if isinstance(m, nn.Linear)}
    targets = sorted(names & {"query", "value", "q_lin", "v_lin", "q_proj", "v_proj", "qkv"})
    if not targets:
        raise GraftError(f"LoRA: no attention projections (query/value/qkv) found in {backbone.name}; "
                         "choose another strategy (select.strategy)")
    cfg = LoraConfig(r=tp.lora.r, lora_alpha=tp.lora.alpha, lora_dropout=tp.lora.dropout,
                     target_modules=targets)
    if hasattr(clf.backbone, "encoder"):  # a pooling wrapper around a transformers encoder
        clf.backbone.encoder = get_peft_model(clf.backbone.encoder, cfg)
    else:
        clf.backbone = get_peft_model(clf.backbone, cfg)


def unwrap_lora(clf: Classifier, backbone: Backbone) -> None:
    if hasattr(clf.backbone, "encoder"):
        clf.backbone.encoder = clf.backbone.encoder.merge_and_unload()
    else:
        clf.backbone = clf.backbone.merge_and_unload()
