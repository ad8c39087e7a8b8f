"""The drift reference: held-out data as the exported model sees it, stored with the version.

Only examples the model did not train on (val and test): on its training rows a model is more
confident than it will ever be in production, and their words are all in the vocabulary, so a
reference that mixes them in makes healthy traffic look drifted (seen on a real sentiment set:
6 of 10 healthy windows flagged). Built at export with the same Predictor that serves, so
reference and production features are computed identically; the vocabulary (what "out of
vocabulary" means) is the training split's, for both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.errors import GraftError
from pipeline.core.io import write_parquet_atomic
from pipeline.modalities.registry import get_modality
from pipeline.production.predictor import Predictor

REFERENCE = "reference.parquet"
HELD_OUT = ("val", "test")


class MonitorError(GraftError):
    """Monitoring cannot run (no champion, no reference)."""


def build_reference(model_dir: Path, manifest: pd.DataFrame, root: Path, size: int, seed: int = 0,
                    batch_size: int = 32) -> pd.DataFrame:
    """Profile up to `size` held-out examples of the validated data with the exported model; writes
    reference.parquet (and, for text, vocabulary.json from the training split) into model_dir."""

    meta = json.loads((model_dir / "preprocess.json").read_text(encoding="utf-8"))
    kind = get_modality(meta["modality"])
    kind.write_side_files(manifest, model_dir)
    predictor = Predictor(model_dir)
    held = manifest[manifest["split"].isin(HELD_OUT)]
    if held.empty:
        raise GraftError("the validated data has no val or test rows to build the drift reference from; "
                         "check prepare.split and validate.min_per_class")
    rows = held.sample(n=min(size, len(held)), random_state=seed).reset_index(drop=True)
    records: list[dict[str, Any]] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows.iloc[start:start + batch_size]
        preds = predictor.predict_inputs([predictor.read(raw, str(i)) for raw, i in
                                          zip(kind.reference_inputs(chunk, root), chunk["id"], strict=True)])
        records += predictor.records(preds, chunk["id"].astype(str).tolist())
    frame = pd.DataFrame(records)
    frame["split"] = rows["split"].to_numpy()
    frame["label"] = rows["label"].to_numpy()
    for vector in ("embedding", "probs"):
        frame[vector] = [np.asarray(e, dtype=np.float32) for e in frame[vector]]
    write_parquet_atomic(model_dir / REFERENCE, frame)
    return frame


def reference_rows(frame: pd.DataFrame) -> dict[str, int]:
    """How many reference rows each split gave."""
    return {str(k): int(v) for k, v in frame["split"].value_counts().sort_index().items()}


def load_reference(model_dir: Path) -> pd.DataFrame:
    """The version's reference; one exported before references were held-out only keeps its
    held-out rows (its training rows would make healthy traffic look drifted)."""
    path = model_dir / REFERENCE
    if not path.exists():
        raise MonitorError(f"{path} does not exist: this model version was exported without a drift "
                           "reference; re-run `graft export` (or `graft run`, which also adds it to an "
                           "identical champion) to create one")
    frame = pd.read_parquet(path)
    if "split" in frame and frame["split"].isin(HELD_OUT).any():
        frame = frame[frame["split"].isin(HELD_OUT)].reset_index(drop=True)
    return frame
