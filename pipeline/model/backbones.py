"""Pretrained backbones, whatever the kind of data: one factory that asks the modality (timm for
images, transformers for text and audio) and the saved architecture rebuilt offline.
Preprocessing comes from the model's own config (timm data config, tokenizer, feature extractor).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.modalities.registry import get_modality
from pipeline.model.backbone import (  # noqa: F401  (the names every stage imports from here)
    Backbone,
    Classifier,
    UnsupportedCandidate,
    WeightsNotFound,
    display_name,
    resolve_weights,
)


def load_backbone(name: str, weights: str | None, modality: str, base: Path = Path("."),
                  max_length: int = 128, pretrained: bool = True, manifest: pd.DataFrame | None = None) -> Backbone:
    """Load a candidate's backbone for `modality` (pretrained unless told not), or raise a clear
    error. `manifest` (the validated data) lets a modality fit its preprocessing to the data
    (audio: the encoder's window)."""
    kind = get_modality(modality)
    resolved = resolve_weights(weights, base)
    return kind.load_backbone(name, resolved, max_length, pretrained, manifest=manifest)


def save_backbone_config(backbone: Backbone, folder: Path) -> dict[str, Any]:
    """What rebuild_classifier needs: the architecture (no weights) and the preprocessing."""
    folder.mkdir(parents=True, exist_ok=True)
    get_modality(backbone.modality).save_backbone(backbone, folder)
    return {"name": backbone.name, "modality": backbone.modality, "dim": backbone.dim,
            "preprocess": backbone.preprocess, "build": backbone.build, "source": backbone.source}


def rebuild_classifier(folder: Path, info: dict[str, Any], num_classes: int) -> tuple[Classifier, Any]:
    """The architecture of a saved model, offline, without its pretrained weights."""
    return get_modality(info["modality"]).rebuild(folder, info, num_classes)
