"""prepare: scan raw data (class folders of images or audio, or a table of texts) into a manifest.

One row per example: id, path or text, label, sha256 of the content, split, and facts per
modality (the modality's `scan` reads them). Splits come from each example's content hash and the seed, never from its position,
so adding examples never moves an old one between splits; split folders, when given, win.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.core.artifacts import MANIFEST, PREPARE_SUMMARY, SPLITS, Workspace
from pipeline.core.config import save_resolved
from pipeline.core.errors import DataError
from pipeline.core.io import write_json_atomic, write_parquet_atomic
from pipeline.core.params import DataParams, Params, PrepareParams, SplitFractions
from pipeline.modalities.registry import resolve

MANIFEST_COLUMNS = [
    "id", "modality", "path", "text", "label", "sha256", "split", "split_source",
    "bytes", "width", "height", "mode", "format", "n_chars", "n_tokens", "seconds", "sample_rate", "channels",
    "row", "error",
]


@dataclass(frozen=True)
class PrepareResult:
    manifest: pd.DataFrame
    modality: str
    data_root: str
    classes: list[str]
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        m = self.manifest
        counts = m.groupby(["label", "split"]).size().unstack(fill_value=0)
        return {
            "modality": self.modality,
            "data_root": self.data_root,
            "rows": len(m),
            "rows_with_errors": int(m["error"].notna().sum()),
            "classes": self.classes,
            "counts": {lbl: {s: int(counts.loc[lbl].get(s, 0)) for s in SPLITS}
                       for lbl in counts.index},
            "skipped_files": self.skipped[:100],
            "seconds": round(self.seconds, 3),
        }


def assign_split(key: str, seed: int, fractions: SplitFractions,
                 allowed: tuple[str, ...] = SPLITS) -> str:
    """Split for one example from its content hash: uniform in [0, 1) per (seed, key)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    weights = {s: getattr(fractions, s) for s in allowed}
    total = sum(weights.values())
    if total == 0:  # a split folder is given and the others have zero share
        return allowed[0]
    acc = 0.0
    for split in allowed:
        acc += weights[split] / total
        if u < acc:
            return split
    return allowed[-1]


def _finish_rows(rows: list[dict[str, Any]], prepare: PrepareParams, modality: str,
                 given_by: str = "folder") -> pd.DataFrame:
    given = {r["split"] for r in rows if r["split"]}
    # Folder splits are kept; a split with no folder is carved from train/ by hash.
    carve = ("train", *[s for s in SPLITS if s not in given and s != "train"])
    for r in rows:
        key = r.get("sha256") or f"id:{r['id']}"
        if r["split"] is None:
            r["split"], r["split_source"] = assign_split(key, prepare.seed, prepare.split), "hash"
        elif r["split"] == "train" and len(carve) > 1:
            r["split"] = assign_split(key, prepare.seed, prepare.split, carve)
            r["split_source"] = given_by if r["split"] == "train" else "hash"
        else:
            r["split_source"] = given_by
        r["modality"] = modality
    frame = pd.DataFrame(rows).reindex(columns=MANIFEST_COLUMNS)
    for col in ("bytes", "width", "height", "n_chars", "n_tokens", "sample_rate", "channels", "row"):
        frame[col] = frame[col].astype("Int64")
    frame["seconds"] = frame["seconds"].astype("Float64")
    return frame


# ---------------------------------------------------------------- stage


def prepare_data(data_path: Path, data: DataParams, prepare: PrepareParams) -> PrepareResult:
    """Pure core: scan `data_path` and return the manifest (no files written)."""
    start = time.perf_counter()
    if data_path.is_symlink() and not data_path.exists():
        raise DataError(f"data path '{data_path}' is a symbolic link to nothing (a loop, or its target is gone); "
                        "point data.path at the data itself")
    if not data_path.exists():
        raise DataError(f"data path '{data_path}' does not exist; set data.path in params.yaml "
                        "(or run `graft demo-data` to generate the demo datasets)")
    kind = resolve(data_path, data.modality, prepare)
    if kind.folder_data and not data_path.is_dir():
        raise DataError(f"{data_path} is a file, but {kind.noun} are read from a folder of class sub-folders; "
                        "point data.path at the folder, or set data.modality: text for a table of texts")
    if not kind.folder_data and data_path.is_dir():
        raise DataError(f"{data_path} is a folder; {kind.noun} are one CSV/TSV/Parquet/JSONL file. "
                        "Point data.path at the file, or set data.modality: image or audio for class folders")
    rows, classes, skipped = kind.scan(data_path, data, prepare)
    manifest = _finish_rows(rows, prepare, kind.name, given_by="folder" if kind.folder_data else "column")
    return PrepareResult(manifest, kind.name, str(data_path), classes, skipped,
                         time.perf_counter() - start)


def run_prepare(params: Params, ws: Workspace) -> PrepareResult:
    """Stage entry: scan ws.data; write manifest.parquet, prepare.json and the resolved params."""
    out = ws.prepare
    result = prepare_data(ws.data, params.data, params.prepare)
    write_parquet_atomic(out / MANIFEST, result.manifest)
    write_json_atomic(out / PREPARE_SUMMARY, result.summary())
    save_resolved(params, out, "data", "prepare")
    return result
