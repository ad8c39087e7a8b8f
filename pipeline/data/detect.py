"""What a dataset is, read from the data alone: `graft init` writes it into a new params.yaml.

A folder of images or audio clips gives its class folders (under train/ val/ test/ too); a table gives the column
of texts, the column of labels and the label set. Named columns win (`text`, `label`, or those
given); otherwise the label column is the one with the fewest distinct values and the text
column the one with the longest values among the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline.core.errors import DataError
from pipeline.core.params import DataParams, PrepareParams
from pipeline.data.image_files import scan_class_folders
from pipeline.data.tables import ROW_ERRORS, read_frame
from pipeline.modalities.registry import TABLE_KIND, folder_kind

MAX_CLASSES = 1000  # more distinct values than this is not a label column


@dataclass(frozen=True)
class Detected:
    modality: str  # a registered modality: image | text | audio
    labels: list[str]
    text_column: str = "text"
    label_column: str = "label"
    split_column: str | None = None  # present in the table: it sets the splits
    rows: int = 0
    notes: list[str] = field(default_factory=list)


def detect(path: Path, text_column: str | None = None, label_column: str | None = None,
           split_column: str = "split") -> Detected:
    if not path.exists():
        raise DataError(f"{path} does not exist; pass --data a folder of class folders or a CSV/TSV/Parquet/JSONL file")
    if path.is_dir():
        return _class_folders(path)
    return _table(path, text_column, label_column, split_column)


def _class_folders(root: Path) -> Detected:
    """Class folders of the files most common under root: images or audio clips."""
    kind = folder_kind(root)
    rows, classes, _skipped = scan_class_folders(root, PrepareParams(), kind.extensions)
    if not classes:
        raise DataError(f"{root} has no class folders; put each class's files in {root}/<class>/ "
                        f"(or {root}/train/<class>/ ...)")
    files = sum(1 for r in rows if r["error"] is None)
    if not files:
        raise DataError(f"{root}: no image or audio files in its class folders {classes}")
    return Detected(kind.name, classes, rows=files)


def _distinct(series: pd.Series) -> int:
    return series.dropna().astype(str).str.strip().replace("", pd.NA).dropna().nunique()


def _table(path: Path, text_column: str | None, label_column: str | None, split_column: str) -> Detected:
    frame = read_frame(path, DataParams(path=str(path)))
    bad = frame.attrs.get(ROW_ERRORS, {})
    frame = frame.drop(index=frame.index[list(bad)]) if bad else frame
    columns = [str(c) for c in frame.columns]
    if frame.empty:
        raise DataError(f"{path} has no rows")
    for given, flag in ((text_column, "--text-column"), (label_column, "--label-column")):
        if given is not None and given not in columns:
            raise DataError(f"{path} has no column '{given}' (its columns: {', '.join(columns)}); pass {flag} one of them")
    notes: list[str] = []
    split = split_column if split_column in columns else None
    free = [c for c in columns if c != split]
    label = label_column or ("label" if "label" in free else None)
    if label is None:
        counts = {c: _distinct(frame[c]) for c in free}
        usable = [c for c in free if 2 <= counts[c] <= min(MAX_CLASSES, max(2, len(frame) // 2))]
        if not usable:
            raise DataError(f"{path}: no column looks like labels (2 to {MAX_CLASSES} distinct values, repeated); "
                            f"its columns: {', '.join(columns)}; pass --label-column")
        label = min(usable, key=lambda c: counts[c])
        notes.append(f"label column '{label}' ({counts[label]} distinct values)")
    text = text_column or ("text" if "text" in free and label != "text" else None)
    if text is None:
        rest = [c for c in free if c != label]
        if not rest:
            raise DataError(f"{path}: no column left for the texts (its columns: {', '.join(columns)}); "
                            "pass --text-column")
        text = max(rest, key=lambda c: frame[c].dropna().astype(str).str.len().mean() or 0)
        notes.append(f"text column '{text}' (the longest values)")
    labels = sorted(set(frame[label].dropna().astype(str).str.strip()) - {""})
    if len(labels) < 2:
        raise DataError(f"{path}: column '{label}' holds {len(labels)} label(s); a classifier needs at least 2")
    if split:
        notes.append(f"split column '{split}': its train/val/test values set the splits")
    return Detected(TABLE_KIND.name, labels, text, label, split, len(frame), notes)
