"""ingest: new labelled batches from the inbox, validated alone, merged into the dataset.

    data/inbox/
      batch-0007/            images: class sub-folders, like data.path
      batch-0008.csv         text: rows in data.path's format (same columns)
      processed/<batch>/     merged batches, with their validation report
      rejected/<batch>/      refused batches, with their validation report; the dataset untouched

A batch is prepared and validated by itself with the dataset's own suite (frozen labels,
image and text checks, quarantine limits; per-class split minimums do not apply to a batch).
Its accepted rows are then merged into data.path: images copied into their class folders,
text rows appended in the file's own format, each through a temp file and a rename. Versioning
the merged data (`dvc add`) is the caller's step.

paths.inbox may be a URL (s3://, gs://): a batch is then fetched into a temporary folder,
handled the same way, and moved on the store (copied under processed/ or rejected/ with its
report, then deleted from the inbox; a run killed between the two finds it again).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.core.artifacts import QUARANTINE, TO_LABEL, Workspace
from pipeline.core.errors import DataError, GraftError
from pipeline.core.io import copy_atomic, write_json_atomic
from pipeline.core.params import DataParams, MinPerClass, Params
from pipeline.core.storage import Store, is_url
from pipeline.data import labelstudio
from pipeline.data.labelstudio import FindInput
from pipeline.data.prepare import run_prepare
from pipeline.data.tables import append_rows, read_table
from pipeline.data.validate import run_validate
from pipeline.modalities.registry import get_modality, resolve

DONE, REJECTED = "processed", "rejected"


@dataclass
class BatchResult:
    batch: str
    accepted: bool
    rows: int = 0
    merged: int = 0
    quarantined: int = 0
    reasons: list[str] = field(default_factory=list)
    moved_to: str = ""
    labelled: pd.DataFrame | None = None  # the accepted rows' content hashes and labels

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "labelled"}


def pending(inbox: str | Path) -> list[str]:
    """Batches waiting in the inbox (paths, or URLs for a remote inbox), oldest name first."""
    store = Store(inbox)
    return [store.show(n) for n in store.names() if n not in (DONE, REJECTED, TO_LABEL) and not n.startswith(".")]


def _move(batch: Path, inbox: Path, where: str, report_dir: Path) -> Path:
    target = inbox / where / batch.name
    if target.exists():
        target = target.with_name(f"{batch.name}-{pd.Timestamp.now('UTC'):%Y%m%d%H%M%S}")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(batch), str(target))
    reports = target.with_name(target.name + ".report")
    shutil.copytree(report_dir, reports, dirs_exist_ok=True)
    return target


def _move_remote(local: Path, inbox: str, where: str, report_dir: Path) -> str:
    store = Store(inbox)
    name = local.name if not store.exists(where, local.name) else f"{local.name}-{pd.Timestamp.now('UTC'):%Y%m%d%H%M%S}"
    store.upload(local, where, name)
    store.upload(report_dir, where, f"{name}.report")
    store.delete(local.name, recursive=True)
    return store.show(where, name)


def _fetch(batch: str, into: Path) -> Path:
    """A remote batch (a file or a folder) as a local copy with the same name."""
    parent, _, name = batch.rstrip("/").rpartition("/")
    store, target = Store(parent), into / name
    into.mkdir(parents=True, exist_ok=True)
    if store.fs.isdir(store.key(name)):
        return store.download(target, name)
    target.write_bytes(store.read_bytes(name))
    return target


def _from_label_studio(p: Params, export: Path, work: Path, data_path: Path,
                       find_input: FindInput | None) -> tuple[Path, int]:
    work.mkdir(parents=True, exist_ok=True)
    kind = resolve(data_path, p.data.modality)
    if kind.folder_data:
        return labelstudio.to_batch(export, work, kind, [], "", "", find_input)
    columns = list(read_table(data_path, p.data).columns)
    return labelstudio.to_batch(export, work, kind, columns, p.data.text_column, p.data.label_column)


def _merge_files(accepted: pd.DataFrame, batch: Path, data_path: Path) -> int:
    for rel, label in zip(accepted["path"], accepted["label"], strict=True):
        src = batch / rel
        dst = data_path / label / src.name
        if dst.exists():
            dst = dst.with_name(f"{batch.name}_{src.name}")
        copy_atomic(src, dst)
    return len(accepted)


def _merge_text(accepted: pd.DataFrame, batch: Path, data_path: Path, p: Params, batch_data: DataParams) -> int:
    d = p.data
    current, new = read_table(data_path, d), read_table(batch, batch_data)
    if list(new.columns) != list(current.columns):
        raise DataError(f"{batch}: columns {list(new.columns)} differ from {data_path}'s {list(current.columns)}; "
                        "deliver batches in the dataset's own format")
    keys = set(zip(accepted["text"], accepted["label"], strict=True))
    new = new[[(t, lbl) in keys for t, lbl in zip(new[d.text_column].astype(str), new[d.label_column].astype(str),
                                                     strict=True)]]
    append_rows(data_path, new, d)
    return len(new)


def ingest_batch(p: Params, batch: str | Path, inbox: str | Path | None = None,
                 find_input: FindInput | None = None) -> BatchResult:
    """Validate one batch alone; merge its accepted rows into data.path, or reject it.

    A labelled Label Studio export (JSON or CSV) is first turned into a batch in the dataset's
    format; `find_input` gives an image's bytes by content hash (the production log's kept inputs).
    The batch is then moved to inbox/processed or inbox/rejected with its report (when it is in
    the inbox). Nothing in data.path changes for a rejected batch."""
    inbox = str(inbox or p.paths.inbox)
    data_path = Path(p.data.path)
    remote = is_url(batch)
    if not remote and not Path(batch).exists():
        raise DataError(f"batch {batch} does not exist")
    if not data_path.exists():
        raise DataError(f"data.path {data_path} does not exist: a batch is merged into an existing dataset")
    with tempfile.TemporaryDirectory(prefix="graft-ingest-") as tmp:
        work = Path(tmp)
        if remote:
            in_inbox = str(batch).rstrip("/").rpartition("/")[0] == inbox.rstrip("/")
            batch = _fetch(str(batch), work / "fetched")  # the local copy stands for it
        else:
            batch = Path(batch)
            in_inbox = not is_url(inbox) and batch.resolve().parent == Path(inbox).resolve()
        result = BatchResult(batch.name, accepted=False)
        loose = MinPerClass(train=0, val=0, test=0)  # a batch need not cover every class in every split
        bp = p.model_copy(update={"validate_": p.validate_.model_copy(update={"min_per_class": loose})})
        try:
            source = batch
            if labelstudio.is_export(batch):
                source, unlabelled = _from_label_studio(p, batch, work / "converted", data_path, find_input)
                # the converted batch is a CSV with a header, whatever the dataset's own format
                bp = bp.model_copy(update={"data": bp.data.model_copy(update={"format": "auto", "header": True,
                                                                              "columns": []})})
                if unlabelled:
                    result.reasons.append(f"{unlabelled} Label Studio tasks without a label skipped")
            ws = Workspace.from_params(bp, data=source, prepare=work / "prepare", validate=work / "validate")
            run_prepare(bp, ws)
            report = run_validate(bp, ws)
            summary = report.summary()
            result.rows, result.quarantined = int(summary["rows"]), int(summary["quarantined"])
            if not len(report.accepted):
                raise DataError(f"{batch}: no row passed validation")
            try:
                if get_modality(report.modality).folder_data:
                    result.merged = _merge_files(report.accepted, source, data_path)
                else:
                    result.merged = _merge_text(report.accepted, source, data_path, p, bp.data)
            except OSError as exc:  # a read-only or full dataset folder: named, the batch kept for later
                raise DataError(f"cannot write into {data_path} ({exc.strerror}: {exc.filename or data_path}); "
                                "make it writable, then move the batch from rejected/ back into the inbox") from None
            result.accepted = True
            result.labelled = report.accepted[["sha256", "label"]].copy()
            result.reasons.append(f"{result.merged} of {result.rows} rows merged into {data_path}"
                                  + (f"; {result.quarantined} quarantined" if result.quarantined else ""))
        except GraftError as exc:
            result.reasons.append(str(exc))
            quarantine = work / "validate" / QUARANTINE
            if quarantine.exists():  # say what was wrong with the rows, not only how many
                top = pd.read_csv(quarantine, dtype=str)["reason"].value_counts().head(3)
                result.reasons += [f"{n} rows: {why}" for why, n in top.items()]
        report_dir = work / "validate"
        report_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(report_dir / "ingest.json", result.to_dict())
        if in_inbox:
            where = DONE if result.accepted else REJECTED
            result.moved_to = (_move_remote(batch, inbox, where, report_dir) if remote
                               else str(_move(batch, Path(inbox), where, report_dir)))
    return result
