"""The torch side of images: timm backbones, the dataset over image files, the exported module."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from pipeline.core.inputs import open_image
from pipeline.model.backbone import (
    Backbone,
    TwoOutputs,
    UnsupportedCandidate,
    WeightsNotFound,
    display_name,
    hint,
)


class ImageRows(Dataset):
    def __init__(self, paths: list[str], targets: list[int], root: Path, transform: Callable[[Any], Any]):
        self.paths, self.targets, self.root, self.transform = paths, targets, root, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(open_image(self.root / self.paths[i], self.paths[i])), self.targets[i]


def collate_images(batch: list[tuple[torch.Tensor, int]]) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    xs, ys = zip(*batch, strict=True)
    return (torch.stack(xs),), torch.tensor(ys)


class ImageIO(TwoOutputs):
    """The classifier as exported: pixels -> (logits, embedding)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return super().forward(x)


def _timm_groups(module: nn.Module) -> list[list[str]]:
    from timm.models import group_parameters

    groups = group_parameters(module, module.group_matcher(coarse=True))
    return [groups[k] for k in sorted(groups)]


def load_timm(name: str, weights: str | Path | None, pretrained: bool = True) -> Backbone:
    import timm

    kwargs: dict[str, Any] = {}
    arch, source = name, "hub cache"
    if isinstance(weights, Path) and weights.is_dir():
        cfg_file = weights / "config.json"
        if not cfg_file.exists():
            raise WeightsNotFound(f"{weights} has no config.json; timm reads a model folder through it "
                                  "(or point weights at the .safetensors file)")
        kwargs = json.loads(cfg_file.read_text()).get("model_args", {})
        arch, source = f"local-dir:{weights}", str(weights)
    elif isinstance(weights, Path):
        if weights.suffix not in (".safetensors", ".pth", ".pt", ".bin"):
            raise UnsupportedCandidate(f"{weights}: graft reads .safetensors (or .pth/.bin with "
                                       "weights_only=True); convert the file first")
        kwargs = {"pretrained_cfg_overlay": {"file": str(weights)}}
        source = str(weights)
    if not timm.is_model(name.split(".")[0]) and not arch.startswith("local-dir:"):
        close = timm.list_models(f"*{name.split('.')[0][:6]}*")[:5]
        raise UnsupportedCandidate(f"'{name}' is not a timm model name; similar names: {close}. "
                                   "models of other kinds of data need data.modality set")
    try:
        if not pretrained:
            torch.manual_seed(0)  # the same "scratch" network in select and train, run after run
        model = timm.create_model(arch, pretrained=pretrained, num_classes=0, **kwargs)
    except (RuntimeError, OSError, ValueError) as exc:
        if weights is None:
            raise WeightsNotFound(f"timm model '{name}': pretrained weights are not in the cache "
                                  f"and the hub cannot be reached ({type(exc).__name__}); {hint(name)}") from None
        raise WeightsNotFound(f"timm model '{name}': cannot load weights from {weights}: {exc}") from None
    model.eval()
    data_cfg = timm.data.resolve_model_data_config(model)
    build = {"library": "timm", "architecture": model.default_cfg.get("architecture", name.split(".")[0]),
             "model_args": {k: v for k, v in kwargs.items() if k != "pretrained_cfg_overlay"}}
    # the pooled output's width: models with a conv head after pooling (MobileNetV3) say so in
    # head_hidden_size; num_features is the width before that head
    dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
    return Backbone(display_name(name, pretrained), "image", model, dim,
                    source if pretrained else "random initialisation",
                    {k: (list(v) if isinstance(v, tuple) else v) for k, v in data_cfg.items()}, build=build,
                    grouper=_timm_groups)
