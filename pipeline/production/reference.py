"""The drift reference: the data as the exported model sees it, stored with the model version.

Built at export with the same Predictor that serves, so reference and production features are
computed identically; monitoring reads it back from the champion's folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.errors import GraftError
from pipeline.core.io import write_json_atomic, write_parquet_atomic
from pipeline.production.predictor import Predictor
from pipeline.production.profile import vocabulary

REFERENCE = "reference.parquet"
VOCABULARY = "vocabulary.json"


class MonitorError(GraftError):
    """Monitoring cannot run (no champion, no reference)."""


def build_reference(model_dir: Path, manifest: pd.DataFrame, root: Path, size: int, seed: int = 0,
                    batch_size: int = 32) -> pd.DataFrame:
    """Profile up to `size` examples of the validated data with the exported model; writes
    reference.parquet (and, for text, vocabulary.json from the training split) into model_dir."""
    from PIL import Image

    if "text" in manifest and manifest["text"].notna().any():
        vocab = vocabulary(manifest.loc[manifest["split"] == "train", "text"].astype(str))
        write_json_atomic(model_dir / VOCABULARY, vocab)
    predictor = Predictor(model_dir)
    rows = manifest.sample(n=min(size, len(manifest)), random_state=seed).reset_index(drop=True)
    records: list[dict[str, Any]] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows.iloc[start:start + batch_size]
        if predictor.modality == "image":
            images = []
            for rel in chunk["path"]:
                with Image.open(root / rel) as im:
                    images.append(im.convert("RGB"))
            preds = predictor.predict_images(images)
        else:
            preds = predictor.predict_texts(chunk["text"].astype(str).tolist())
        records += predictor.records(preds, chunk["id"].astype(str).tolist())
    frame = pd.DataFrame(records)
    frame["split"] = rows["split"].to_numpy()
    frame["label"] = rows["label"].to_numpy()
    frame["embedding"] = [np.asarray(e, dtype=np.float32) for e in frame["embedding"]]
    write_parquet_atomic(model_dir / REFERENCE, frame)
    return frame


def load_reference(model_dir: Path) -> pd.DataFrame:
    path = model_dir / REFERENCE
    if not path.exists():
        raise MonitorError(f"{path} does not exist: this model version was exported without a drift "
                           "reference; re-run `graft export` (or `graft run`, which also adds it to an "
                           "identical champion) to create one")
    return pd.read_parquet(path)
