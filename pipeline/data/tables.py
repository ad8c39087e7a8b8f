"""One reader (and appender) for text tables: CSV, TSV, Parquet, JSONL, and .txt for scoring.

prepare reads the dataset, ingest reads a batch and appends its accepted rows to the dataset in
its own format, score reads texts to predict: all through these functions, so a file that one
accepts the others read the same way.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.errors import DataError
from pipeline.core.inputs import InputRejected, check_text, is_blank, kind
from pipeline.core.io import write_atomic
from pipeline.core.params import DataParams

TEXT_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet",
                   ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def table_format(path: Path, data: DataParams, by_extension_first: bool = False) -> str:
    """data.format, or the format the extension names. `by_extension_first`: a file other than
    the dataset (one to score) is read by its own extension when it has a known one."""
    known = TEXT_EXTENSIONS.get(path.suffix.lower())
    if by_extension_first and known:
        return known
    if data.format != "auto":
        return data.format
    if known is None:
        raise DataError(f"{path}: cannot tell the table format from the extension '{path.suffix}'; "
                        f"use one of {', '.join(TEXT_EXTENSIONS)} or set data.format to csv, tsv, parquet or jsonl")
    return known


ARCHIVES = {".zip", ".gz", ".tgz", ".tar", ".bz2", ".xz", ".7z", ".rar", ".zst"}
ARCHIVE_MAGIC = (b"PK\x03\x04", b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"7z\xbc\xaf", b"Rar!", b"\x28\xb5\x2f\xfd")
ROW_ERRORS = "row_errors"  # frame.attrs key: {row index: what is wrong with that row}


def refuse_archive(path: Path) -> None:
    """A compressed archive is named as one, with the fix, instead of being parsed as text."""
    if path.is_dir():
        return
    try:
        with path.open("rb") as f:
            head = f.read(8)
    except OSError:
        return
    if path.suffix.lower() in ARCHIVES or head.startswith(ARCHIVE_MAGIC):
        raise DataError(f"{path} is a compressed archive; extract it first and point data.path at the "
                        "CSV/TSV/Parquet/JSONL file (or the image folder) inside")


def _open_text(path: Path, data: DataParams) -> Any:
    utf8 = data.encoding.lower().replace("_", "-") in ("utf-8", "utf8")
    # utf-8-sig drops a byte-order mark; undecodable bytes survive as surrogates, so each bad
    # row can be named rather than the whole file refused
    return path.open(encoding="utf-8-sig" if utf8 else data.encoding,
                     errors="surrogateescape" if utf8 else "strict", newline="")


def _read_delimited(path: Path, data: DataParams, tsv: bool) -> pd.DataFrame:
    """Every record checked against the header's field count: a record with more or fewer fields
    becomes a row error naming its line, never a shifted row or an index column."""
    csv.field_size_limit(2**31 - 1)
    with _open_text(path, data) as f:
        reader = csv.reader(f, delimiter="\t" if tsv else ",", quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
        header = None if not data.header else next((r for r in reader if r), None)
        names = list(data.columns) or header or []
        rows, errors = [], {}
        for record in reader:
            if not record or record == [""]:
                continue
            if names and len(record) != len(names):
                errors[len(rows)] = (f"line {reader.line_num} has {len(record)} fields where the header has "
                                     f"{len(names)}: a {'tab' if tsv else 'comma'} inside an unquoted field? "
                                     + ("remove it" if tsv else "quote the field") + " or fix the row")
                record = [None] * len(names)
            rows.append(record)
    if not names:
        raise DataError(f"{path} is empty; add a header row and rows of {data.text_column},{data.label_column}")
    frame = pd.DataFrame(rows, columns=names, dtype=object)
    frame.attrs[ROW_ERRORS] = errors
    return frame


def _read_jsonl(path: Path, data: DataParams) -> pd.DataFrame:
    """One JSON object per line; a line that is not one is a row error naming the line."""
    rows, errors = [], {}
    with _open_text(path, data) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except (ValueError, RecursionError) as exc:
                errors[len(rows)] = f"line {number} is not valid JSON ({str(exc)[:80]}); fix or remove the line"
                obj = {}
            if not isinstance(obj, dict):
                errors[len(rows)] = (f"line {number} is a JSON {kind(obj)}, not an object; write "
                                     f'{{"{data.text_column}": ..., "{data.label_column}": ...}}')
                obj = {}
            rows.append(obj)
    frame = pd.DataFrame(rows, dtype=object)
    frame.attrs[ROW_ERRORS] = errors
    return frame


def _show(value: Any) -> str:
    try:
        shown = json.dumps(value, default=str)
    except (TypeError, ValueError):
        shown = repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value) or value is pd.NA


def _check_cells(frame: pd.DataFrame, data: DataParams, need_label: bool) -> None:
    """Never cast a non-string to text: a number, list, object or boolean in the text column is a
    row error naming the column and the type. Integer labels (0/1) are read as their digits."""
    errors: dict[int, str] = frame.attrs.setdefault(ROW_ERRORS, {})
    text, label = data.text_column, data.label_column
    for i, value in enumerate(frame[text].tolist()):
        if not _missing(value) and not isinstance(value, str) and i not in errors:
            errors[i] = (f"{text} is a {kind(value)} ({_show(value)}), not a string; "
                         "write the text as a string or remove the row")
            frame.iat[i, frame.columns.get_loc(text)] = None
    if not need_label or label not in frame.columns:
        return
    for i, value in enumerate(frame[label].tolist()):
        if _missing(value) or isinstance(value, str):
            continue
        if (isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))) or (isinstance(value, (float, np.floating)) and float(value).is_integer()):
            frame.iat[i, frame.columns.get_loc(label)] = str(int(value))
        elif i not in errors:
            errors[i] = (f"{label} is a {kind(value)} ({_show(value)}), not a class name; "
                         "write the label as a string or an integer")
            frame.iat[i, frame.columns.get_loc(label)] = None


def read_frame(path: Path, data: DataParams, by_extension_first: bool = False) -> pd.DataFrame:
    """The file's rows as they are, every column kept (read_table checks the columns graft needs)."""
    refuse_archive(path)
    fmt = table_format(path, data, by_extension_first)
    try:
        if fmt == "parquet":
            frame = pd.read_parquet(path).astype(object)
            if data.columns:
                frame.columns = list(data.columns)
            frame.attrs[ROW_ERRORS] = {}
        elif fmt == "jsonl":
            frame = _read_jsonl(path, data)
        else:
            frame = _read_delimited(path, data, tsv=fmt == "tsv")
    except (UnicodeDecodeError, LookupError) as exc:
        raise DataError(f"{path}: cannot decode with data.encoding={data.encoding!r} ({exc}); "
                        "set data.encoding to the file's encoding") from None
    except (ValueError, csv.Error, OSError) as exc:
        raise DataError(f"{path}: not a readable {fmt} file ({exc}); check data.format, "
                        "data.header and data.columns") from None
    return frame


def read_table(path: Path, data: DataParams, *, need_label: bool = True,
               by_extension_first: bool = False) -> pd.DataFrame:
    """The table's rows, strictly: frame.attrs[ROW_ERRORS] maps each bad row (by position) to
    what is wrong with it (wrong field count, not JSON, a non-string text); its cells are None."""
    frame = read_frame(path, data, by_extension_first)
    needed = [(data.text_column, "text_column")] + ([(data.label_column, "label_column")] if need_label else [])
    for col, key in needed:
        if col not in frame.columns:
            cols = ", ".join(map(str, frame.columns))
            raise DataError(f"{path} has no column '{col}' (its columns: {cols}); set data.{key} "
                            "to one of them" + ("" if data.header else ", or fix data.columns"))
    _check_cells(frame, data, need_label)
    return frame


def read_texts(path: Path, data: DataParams) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Texts to score, named `file:row`: a .txt file's lines or a table's data.text_column.
    Returns (name, text) pairs and (name, reason) for each row that is not a text to score."""
    if path.suffix.lower() == ".txt":
        refuse_archive(path)
        try:
            cells: list[Any] = path.read_text(encoding=data.encoding).splitlines()
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not valid {data.encoding} ({exc}); re-save it as UTF-8") from None
        errors: dict[int, str] = {}
    else:
        frame = read_table(path, data, need_label=False, by_extension_first=True)
        cells, errors = frame[data.text_column].tolist(), frame.attrs[ROW_ERRORS]
    texts, skipped = [], []
    for i, cell in enumerate(cells):
        name = f"{path.name}:{i + 1}"
        try:
            if i in errors:
                raise InputRejected(errors[i])
            texts.append((name, check_text(cell, data.text_column)))
        except InputRejected as exc:
            if not (path.suffix.lower() == ".txt" and isinstance(cell, str) and is_blank(cell)):  # blank lines
                skipped.append((name, str(exc)))
    return texts, skipped


def append_rows(path: Path, new: pd.DataFrame, data: DataParams) -> Path:
    """Add rows to the dataset atomically. CSV/TSV/JSONL keep every existing byte (a malformed
    row already there stays as it was, for a person to fix) and get the rows appended in the same
    format; Parquet is rewritten with the rows concatenated."""
    fmt = table_format(path, data)
    if fmt == "parquet":
        return write_atomic(path, lambda q: pd.concat([pd.read_parquet(path), new], ignore_index=True)
                            .to_parquet(q, index=False))
    old = path.read_bytes()
    sep = b"" if not old or old.endswith(b"\n") else b"\n"
    if fmt == "jsonl":
        added = new.to_json(orient="records", lines=True, force_ascii=False)
    else:
        tsv = fmt == "tsv"
        added = new.to_csv(sep="\t" if tsv else ",", header=False, index=False, lineterminator="\n",
                           quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
    if added and not added.endswith("\n"):
        added += "\n"
    enc = "utf-8" if data.encoding.lower().replace("_", "-") in ("utf-8", "utf8") else data.encoding
    return write_atomic(path, lambda q: q.write_bytes(old + sep + added.encode(enc, "surrogateescape")))
