"""One reader (and writer) for text tables: CSV, TSV, Parquet, JSONL, and .txt for scoring.

prepare reads the dataset, ingest reads a batch and rewrites the dataset in its own format,
score reads texts to predict: all through these functions, so a file that one accepts the
others read the same way.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

from pipeline.core.errors import DataError
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


def read_table(path: Path, data: DataParams, *, need_label: bool = True,
               by_extension_first: bool = False) -> pd.DataFrame:
    """The table as str columns; undecodable bytes survive as surrogates, so each bad row can be
    named rather than the whole file refused."""
    fmt = table_format(path, data, by_extension_first)
    names = data.columns or None
    try:
        if fmt == "parquet":
            frame = pd.read_parquet(path)
            if names:
                frame.columns = names
        else:
            utf8 = data.encoding.lower().replace("_", "-") in ("utf-8", "utf8")
            enc = dict(encoding=data.encoding, encoding_errors="surrogateescape" if utf8 else "strict")
            if fmt == "jsonl":
                frame = pd.read_json(path, lines=True, dtype=False, **enc)
            else:
                frame = pd.read_csv(
                    path, sep="\t" if fmt == "tsv" else ",", header=0 if data.header else None, names=names,
                    dtype=str, keep_default_na=False,
                    quoting=csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL, **enc,
                )
    except (UnicodeDecodeError, LookupError) as exc:
        raise DataError(f"{path}: cannot decode with data.encoding={data.encoding!r} ({exc}); "
                        "set data.encoding to the file's encoding") from None
    except (ValueError, pd.errors.ParserError, OSError) as exc:
        raise DataError(f"{path}: not a readable {fmt} file ({exc}); check data.format, "
                        "data.header and data.columns") from None
    needed = [(data.text_column, "text_column")] + ([(data.label_column, "label_column")] if need_label else [])
    for col, key in needed:
        if col not in frame.columns:
            cols = ", ".join(map(str, frame.columns))
            raise DataError(f"{path} has no column '{col}' (its columns: {cols}); set data.{key} "
                            "to one of them" + ("" if data.header else ", or fix data.columns"))
    return frame


def read_texts(path: Path, data: DataParams) -> list[str]:
    """Texts to score: a .txt file's non-empty lines, or a table's data.text_column."""
    if path.suffix.lower() == ".txt":
        try:
            return [line for line in path.read_text(encoding=data.encoding).splitlines() if line.strip()]
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not valid {data.encoding} ({exc}); re-save it as UTF-8") from None
    return read_table(path, data, need_label=False, by_extension_first=True)[data.text_column].astype(str).tolist()


def write_table(path: Path, frame: pd.DataFrame, data: DataParams) -> Path:
    """Rewrite the dataset atomically in the format it is read in."""
    fmt = table_format(path, data)
    if fmt == "parquet":
        return write_atomic(path, lambda q: frame.to_parquet(q, index=False))
    if fmt == "jsonl":
        return write_atomic(path, lambda q: frame.to_json(q, orient="records", lines=True, force_ascii=False))
    tsv = fmt == "tsv"
    return write_atomic(path, lambda q: frame.to_csv(
        q, sep="\t" if tsv else ",", header=data.header, index=False, encoding=data.encoding,
        quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL, lineterminator="\n"))
