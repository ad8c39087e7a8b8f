"""`graft score INPUT`: batch predictions for a folder of images or audio clips, or a file of texts.

Images and audio: every file under the folder (recursively); an unreadable one is reported and
skipped, never the whole batch. Text: a CSV/TSV/Parquet/JSONL file with a text column
(data.text_column), or a .txt file with one text per line. Predictions go to a CSV or Parquet
file (by extension) and to the production log, like served traffic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.core.errors import DataError, GraftError
from pipeline.core.inputs import InputRejected
from pipeline.core.io import write_parquet_atomic, write_text_atomic
from pipeline.core.params import DataParams
from pipeline.core.progress import progress
from pipeline.data.tables import read_texts
from pipeline.production.predictor import Predictor, text_inputs
from pipeline.production.prodlog import ProductionLog, input_identity


@dataclass
class ScoreResult:
    output: Path
    scored: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    model_version: str = ""


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def score(predictor: Predictor, source: str | Path, output: str | Path, log: ProductionLog | None,
          data: DataParams | None = None, batch_size: int = 32, keep_inputs: bool = True) -> ScoreResult:
    """Predict every input of `source`; `data` says how to read a text table (data.text_column...).
    A file or row that is not an input (unreadable, too large, not a text, blank) is skipped and
    reported; the others are scored."""
    source, output = Path(source), Path(output)
    if not source.exists():
        raise DataError(f"{source} does not exist")
    if output.suffix.lower() not in (".csv", ".parquet"):
        raise GraftError(f"{output}: write predictions to a .csv or .parquet file")
    rows: list[dict[str, Any]] = []
    skipped: list[tuple[str, str]] = []
    kind = predictor.kind
    if kind.folder_data:
        if not source.is_dir():
            raise DataError(f"{source}: model {predictor.version} classifies {kind.noun}; give a folder of them")
        items: list[Any] = [(str(p.relative_to(source)), p) for p in _files(source)]
    else:
        if source.is_dir():
            raise DataError(f"{source}: model {predictor.version} classifies {kind.noun}; give a "
                            "CSV/TSV/Parquet/JSONL/txt file")
        items, skipped = read_texts(source, data or DataParams())
    if not items and not skipped:
        raise DataError(f"{source}: nothing to score")
    chunks = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
    for chunk in progress(chunks, desc=f"scoring with {predictor.version}", unit="batch"):
        inputs, names, identity = [], [], []
        for name, item in chunk:  # one decoded input at a time; a bad one is skipped, never the batch
            try:
                raw = item.read_bytes() if isinstance(item, Path) else item
                inputs.append(predictor.read(raw, name))
            except (InputRejected, OSError) as exc:
                skipped.append((str(source / name) if isinstance(item, Path) else name, str(exc)))
                continue
            names.append(name)
            identity.append(input_identity(raw, item.suffix, log, keep_inputs) if isinstance(item, Path)
                            else text_inputs([raw], keep_inputs)[0])
        if not inputs:
            continue
        preds = predictor.predict_inputs(inputs)
        if log is not None:
            log.append(predictor.records(preds, names, identity))
        for i, name in enumerate(names):
            rows.append({"input": name, "pred": preds.labels[i], "confidence": float(preds.confidence[i]),
                         **{f"p_{c}": float(p) for c, p in zip(predictor.labels, preds.probs[i], strict=True)}})
    frame = pd.DataFrame(rows, columns=["input", "pred", "confidence", *(f"p_{c}" for c in predictor.labels)])
    if output.suffix.lower() == ".csv":
        write_text_atomic(output, frame.to_csv(index=False))
    else:
        write_parquet_atomic(output, frame)
    counts = frame["pred"].value_counts().to_dict() if len(frame) else {}
    return ScoreResult(output, len(frame), skipped, counts, predictor.version)
