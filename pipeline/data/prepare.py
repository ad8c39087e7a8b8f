"""prepare: scan raw data (image class folders or a text table) into a manifest.

One row per example: id, path or text, label, sha256 of the content, split, and facts per
modality. Splits come from each example's content hash and the seed, never from its position,
so adding examples never moves an old one between splits; split folders, when given, win.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.core.artifacts import MANIFEST, PREPARE_SUMMARY, SPLIT_FOLDERS, SPLITS, Workspace
from pipeline.core.config import save_resolved
from pipeline.core.errors import DataError
from pipeline.core.inputs import is_blank
from pipeline.core.io import write_json_atomic, write_parquet_atomic
from pipeline.core.parallel import map_files
from pipeline.core.params import DataParams, Params, PrepareParams, SplitFractions
from pipeline.core.progress import progress
from pipeline.data.image_files import image_facts, scan_image_folder
from pipeline.data.tables import ROW_ERRORS, read_table

MANIFEST_COLUMNS = [
    "id", "modality", "path", "text", "label", "sha256", "split", "split_source",
    "bytes", "width", "height", "mode", "format", "n_chars", "n_tokens", "row", "error",
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


def detect_modality(path: Path, data: DataParams) -> str:
    if data.modality != "auto":
        return data.modality
    return "image" if path.is_dir() else "text"


# ---------------------------------------------------------------- images


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
    for col in ("bytes", "width", "height", "n_chars", "n_tokens", "row"):
        frame[col] = frame[col].astype("Int64")
    return frame


def prepare_images(root: Path, prepare: PrepareParams) -> tuple[pd.DataFrame, list[str], list[str]]:
    rows, classes, skipped = scan_image_folder(root, prepare)
    if not rows:
        raise DataError(
            f"{root} holds no image files (looked for {', '.join(prepare.image_extensions)}). "
            f"Put images in class sub-folders, {root}/<class>/<image>, or point data.path elsewhere"
        )
    todo = [(str(root), r["path"]) for r in rows if r["error"] is None]
    facts = iter(map_files(image_facts, todo, prepare.workers, "hashing images"))
    for r in rows:
        r["id"] = r["path"]
        if r["error"] is None:
            r.update(next(facts))
    return _finish_rows(rows, prepare, "image"), classes, skipped


# ---------------------------------------------------------------- text


def _split_value(value: Any, column: str) -> tuple[str | None, str | None]:
    """A split column's cell: (split, None), (None, None) when empty, or (None, error)."""
    if value is None or (isinstance(value, float) and pd.isna(value)) or not str(value).strip():
        return None, None
    split = SPLIT_FOLDERS.get(str(value).strip().lower())
    if split is None:
        return None, (f"{column} is {str(value)!r}, not one of train, val, test; fix the value, "
                      "or set data.split_column: '' to split every row by hash")
    return split, None


def _text_row(i: int, text: Any, label: Any, read_error: str | None = None) -> dict[str, Any]:
    text = text if isinstance(text, str) else ""  # the reader turned every non-string into a row error
    label = label.strip() if isinstance(label, str) else ""
    raw = text.encode("utf-8", "surrogateescape")
    error = read_error
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        error = error or (f"text is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start}); "
                          "re-save the file as UTF-8 or set data.encoding to its encoding")
        text = raw.decode("utf-8", "replace")
    if text and is_blank(text):
        error = error or "text is only whitespace: fill it in or remove the row"
    if not label:
        error = error or "empty label; fill in the label or remove the row"
    return {"id": f"row-{i}", "row": i, "text": text, "label": label, "split": None, "error": error,
            "sha256": hashlib.sha256(raw).hexdigest(), "n_chars": len(text),
            "n_tokens": len(text.split())}


def prepare_text(path: Path, data: DataParams, prepare: PrepareParams) -> tuple[pd.DataFrame, list[str]]:
    frame = read_table(path, data)
    if frame.empty:
        raise DataError(f"{path} has no data rows; add rows of {data.text_column},{data.label_column}")
    texts, labels = frame[data.text_column].tolist(), frame[data.label_column].tolist()
    read_errors = frame.attrs.get(ROW_ERRORS, {})
    rows = [_text_row(i + 1, t, lbl, read_errors.get(i)) for i, (t, lbl) in
            enumerate(progress(zip(texts, labels, strict=True), total=len(texts), desc="hashing rows", unit="row"))]
    if data.split_column and data.split_column in frame.columns and data.split_column not in (
            data.text_column, data.label_column):
        for r, value in zip(rows, frame[data.split_column].tolist(), strict=True):
            r["split"], error = _split_value(value, data.split_column)
            r["error"] = r["error"] or error
    manifest = _finish_rows(rows, prepare, "text", given_by="column")
    classes = sorted({r["label"] for r in rows if r["label"]})
    return manifest, classes


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
    modality = detect_modality(data_path, data)
    if modality == "image":
        if not data_path.is_dir():
            raise DataError(f"{data_path} is a file, but images are read from a folder of class "
                            "sub-folders; point data.path at the folder, or set data.modality: text")
        manifest, classes, skipped = prepare_images(data_path, prepare)
    else:
        if data_path.is_dir():
            raise DataError(f"{data_path} is a folder; text data is one CSV/TSV/Parquet/JSONL file. "
                            "Point data.path at the file, or set data.modality: image")
        manifest, classes = prepare_text(data_path, data, prepare)
        skipped = []
    return PrepareResult(manifest, modality, str(data_path), classes, skipped,
                         time.perf_counter() - start)


def run_prepare(params: Params, ws: Workspace) -> PrepareResult:
    """Stage entry: scan ws.data; write manifest.parquet, prepare.json and the resolved params."""
    out = ws.prepare
    result = prepare_data(ws.data, params.data, params.prepare)
    write_parquet_atomic(out / MANIFEST, result.manifest)
    write_json_atomic(out / PREPARE_SUMMARY, result.summary())
    save_resolved(params, out, "data", "prepare")
    return result
