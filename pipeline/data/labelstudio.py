"""A labelled Label Studio export in the inbox, turned into a batch in the dataset's own format.

`graft label-queue` writes tasks whose data hold the input (`text`, or `image` / `audio`: a path
under to-label/) and its content hash (`graft_sha256`), labelled with a single-choice `label`. Label
Studio exports them as JSON (a list of tasks, each with its `annotations`) or CSV (a row per
task: the data fields and a `label` column). Either becomes what ingest already merges: a table
with the dataset's columns, or class folders of images or clips (the bytes from the production log's kept
inputs, by hash, or beside the export). Unlabelled and cancelled tasks are skipped and counted.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from pipeline.core.errors import DataError

if TYPE_CHECKING:
    from pipeline.modalities.base import Modality

FindInput = Callable[[str], "tuple[str, bytes] | None"]  # content hash -> (file name, bytes)
CSV_MARKERS = {"annotation_id", "graft_sha256"}


def is_export(path: Path) -> bool:
    """A Label Studio export: a JSON list of tasks with data, or a CSV with its annotation columns."""
    if path.is_dir():
        return False
    if path.suffix.lower() == ".json":
        try:
            tasks = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(tasks, list) and bool(tasks) and all(isinstance(t, dict) and "data" in t for t in tasks)
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8", errors="replace") as fh:
            header = next(csv.reader(fh), [])
        return bool(CSV_MARKERS & set(header)) and "label" in header
    return False


def _choice(task: dict[str, Any], where: str) -> str | None:
    """The label of a task's latest kept annotation; None when it has none. Any other shape than
    Label Studio's is refused naming the task, never a crash."""
    annotations = task.get("annotations") or task.get("completions") or []
    if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
        raise DataError(f"{where}: 'annotations' is not a list of objects; export the project again in "
                        "Label Studio's JSON format")
    for annotation in reversed([a for a in annotations if not a.get("was_cancelled")]):
        result = annotation.get("result") or []
        if not isinstance(result, list):
            raise DataError(f"{where}: an annotation's 'result' is not a list; export the project again as JSON")
        for item in result:
            value = item.get("value") if isinstance(item, dict) else None
            choices = value.get("choices") if isinstance(value, dict) else None
            if not choices:
                continue
            if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
                raise DataError(f"{where}: 'choices' is not a list of labels; export the project again as JSON")
            if len(choices) != 1:
                raise DataError(f"{where}: {len(choices)} labels chosen ({', '.join(choices)}); "
                                "a classification label is one choice: fix it in Label Studio and export again")
            return choices[0]
    return None


def _cell(value: Any, where: str, key: str) -> str:
    if value is None:
        return ""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise DataError(f"{where}: data.{key} is a {type(value).__name__}, not text; the tasks must come from "
                    "`graft label-queue` (fix the task or remove it, then export again)")


def _rows(path: Path) -> tuple[list[dict[str, str]], int]:
    """(rows of data fields + label, how many tasks had no label)."""
    if path.suffix.lower() == ".csv":
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        labelled = frame[frame["label"].str.strip() != ""]
        return labelled.to_dict(orient="records"), len(frame) - len(labelled)
    rows, skipped = [], 0
    for i, task in enumerate(json.loads(path.read_text(encoding="utf-8"))):
        where = f"{path.name}: task {i} (id {task.get('id', '?')})"
        if not isinstance(task.get("data"), dict):
            raise DataError(f"{where}: 'data' is not an object; export the project again as JSON")
        label = _choice(task, where)
        if label is None:
            skipped += 1
            continue
        rows.append({**{str(k): _cell(v, where, str(k)) for k, v in task["data"].items()}, "label": label})
    return rows, skipped


def to_batch(path: Path, work: Path, kind: Modality, columns: list[str], text_column: str, label_column: str,
             find_input: FindInput | None = None) -> tuple[Path, int]:
    """The export as a batch in `work` (a CSV with `columns`, or class folders); and the number of
    tasks skipped for want of a label."""
    rows, skipped = _rows(path)
    if not rows:
        raise DataError(f"{path}: no labelled task in this Label Studio export ({skipped} without a label); "
                        "label some tasks, then export again")
    if not kind.folder_data:
        missing = [i for i, r in enumerate(rows) if not r.get("text")]
        if missing:
            raise DataError(f"{path}: task {missing[0]} has no 'text' field: this export is not of a text project "
                            "made from `graft label-queue`")
        table = pd.DataFrame([{c: "" for c in columns} | {text_column: r["text"], label_column: r["label"]}
                              for r in rows], columns=columns)
        out = work / f"{path.stem}.csv"
        table.to_csv(out, index=False)
        return out, skipped
    out = work / path.stem
    for i, r in enumerate(rows):
        found = find_input(r["graft_sha256"]) if find_input and r.get("graft_sha256") else None
        field = kind.labelstudio_field
        if found is None and r.get(field) and (path.parent / r[field]).is_file():
            found = Path(r[field]).name, (path.parent / r[field]).read_bytes()
        if found is None:
            raise DataError(f"{path}: task {i}: its file ({r.get(field) or r.get('graft_sha256') or 'none named'}) "
                            "is neither in the production log's kept inputs nor beside the export; put the "
                            f"{kind.media_folder}/ folder from to-label/ next to it")
        name, data = found
        if r["label"] in ("", ".", "..") or "/" in r["label"] or "\\" in r["label"]:
            raise DataError(f"{path}: task {i}: label {r['label']!r} cannot name a class folder")
        (out / r["label"]).mkdir(parents=True, exist_ok=True)
        (out / r["label"] / name).write_bytes(data)
    return out, skipped
