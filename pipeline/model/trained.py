"""A trained model read back from train's `model/` folder, its test split, and label encoding.

evaluate, export and the gate all start from here, so they read the same model the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from safetensors.torch import load_file

from pipeline.core.artifacts import MANIFEST, MODEL, require
from pipeline.core.errors import DataError
from pipeline.model.backbones import Backbone, Classifier, rebuild_classifier


def encode_labels(labels: pd.Series, classes: list[str], where: str = "the data") -> np.ndarray:
    """Class indices of `labels` in the order of `classes`; an unknown label is an error naming it."""
    index = {c: i for i, c in enumerate(classes)}
    encoded = labels.map(index)
    if encoded.isna().any():
        unknown = sorted(set(labels[encoded.isna()].astype(str)))
        raise DataError(f"{where} has labels {unknown} that the model does not know (it knows {classes}); "
                        "retrain with them in validate.labels, or remove those rows")
    return encoded.astype(int).to_numpy()


def dataset_labels(params_labels: list[str], manifest: pd.DataFrame) -> list[str]:
    """The class list: validate.labels (frozen by the first validate run), else the manifest's."""
    return list(params_labels) or sorted(manifest["label"].unique())


def load_validated(validated_dir: str | Path) -> pd.DataFrame:
    return pd.read_parquet(require(Path(validated_dir) / MANIFEST, "validate"))


def load_trained(model_dir: Path) -> tuple[Classifier, dict[str, Any], Backbone]:
    """A trained model from train's model/ folder, offline, with a Backbone view for the loaders."""
    info = json.loads(require(model_dir / "model.json", "train").read_text(encoding="utf-8"))
    clf, tokenizer = rebuild_classifier(model_dir, info, info["num_classes"])
    clf.load_state_dict(load_file(str(model_dir / "model.safetensors")))
    clf.eval()
    view = Backbone(info["name"], info["modality"], clf.backbone, info["dim"], info["source"],
                    info["preprocess"], tokenizer, info["build"])
    return clf, info, view


def test_split(validated_dir: str | Path) -> pd.DataFrame:
    manifest = load_validated(validated_dir)
    return manifest[manifest["split"] == "test"].reset_index(drop=True)


def trained_and_test(train_dir: str | Path, validated_dir: str | Path) -> tuple[Classifier, dict[str, Any], Backbone, pd.DataFrame]:
    """train's model and validate's test split: what evaluate and export both start from."""
    return (*load_trained(Path(train_dir) / MODEL), test_split(validated_dir))
