"""Folder data (images, audio): class folders scanned into manifest rows with each file's facts,
and the per-file decode check validate runs, in worker processes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from pipeline.core.errors import DataError
from pipeline.core.parallel import map_files
from pipeline.data.image_files import scan_class_folders

if TYPE_CHECKING:
    from pipeline.core.params import PrepareParams
    from pipeline.modalities.base import Modality


def scan_files(modality: Modality, root: Path, prepare: PrepareParams, facts: Callable[[tuple[str, str]], dict],
               desc: str) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """Rows of every `modality` file under root's class folders, with `facts(root, rel)` of each
    (read in `prepare.workers` processes); (rows, classes, skipped files)."""
    exts = modality.file_extensions(prepare)
    rows, classes, skipped = scan_class_folders(root, prepare, exts)
    if not rows:
        raise DataError(
            f"{root} holds no {modality.noun} (looked for {', '.join(exts)}). "
            f"Put them in class sub-folders, {root}/<class>/<file>, or point data.path elsewhere")
    todo = [(str(root), r["path"]) for r in rows if r["error"] is None]
    found = iter(map_files(facts, todo, prepare.workers, desc))
    for r in rows:
        r["id"] = r["path"]
        if r["error"] is None:
            r.update(next(found))
    return rows, classes, skipped


def decode_files(manifest: pd.DataFrame, root: str, check: Callable[[tuple[str, str, Any]], str | None],
                 arg: Any, workers: int, desc: str, meanwhile: Callable[[], Any] | None = None) -> pd.Series:
    """Per row, `check((root, path, arg))`: None when the file decodes, else why; rows that already
    failed (an error from prepare) are not decoded."""
    todo = manifest.index[manifest["error"].isna() & manifest["path"].notna()]
    items = [(root, manifest.at[i, "path"], arg) for i in todo]
    result = pd.Series([None] * len(manifest), index=manifest.index, dtype=object)
    result.loc[todo] = list(map_files(check, items, workers, desc, meanwhile))
    return result
