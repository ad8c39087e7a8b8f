"""The production log: every served or scored prediction, as Parquet files partitioned by hour,
on a local disk or on object storage (paths.log: a path or an s3:// gs:// file:// URL).

    production/log/date=2026-11-22/hour=14/part-<ns>-<host>-<pid>-<random>.parquet

Each flush writes a new, complete, immutable part (a rename locally, one PUT on object storage;
never an append), named by time, host, process and a random suffix, so any number of servers
on any number of machines write under one prefix without a lock or a collision, and a reader
never sees half a file. Records are
buffered in memory and flushed when `flush_records` are waiting, every `flush_seconds` by a
background thread, and on close: a kill -9 loses at most the records of the last interval.
Rows: timestamp (UTC), model_version, source, the input summary features, pred, confidence,
embedding (float32 list).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import socket
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.storage import Store

_HOST = socket.gethostname()[:32]
logger = logging.getLogger("graft.prodlog")


def _hour_parts(ts: datetime) -> tuple[str, str]:
    return f"date={ts:%Y-%m-%d}", f"hour={ts:%H}"


INPUTS = "inputs"  # kept request inputs (images), by content hash: inputs/<sha[:2]>/<sha><suffix>
VECTORS = ("embedding", "probs")  # list<float32> columns: the model's embedding and class probabilities


def _table(records: list[dict[str, Any]]) -> pa.Table:
    table = pa.Table.from_pydict({k: [r[k] for r in records] for k in records[0] if k not in VECTORS})
    for name in VECTORS:
        if name in records[0]:
            values = [np.asarray(r[name], dtype=np.float32).tolist() for r in records]
            table = table.append_column(name, pa.array(values, type=pa.list_(pa.float32())))
    return table


class ProductionLog:
    def __init__(self, root: str | Path, flush_records: int = 50, flush_seconds: float = 5.0):
        self.store = Store(root)
        self.flush_records, self.flush_seconds = flush_records, flush_seconds
        self._buffer: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, name="graft-log-flush", daemon=True)
        self._thread.start()
        self.written = 0

    def append(self, records: list[dict[str, Any]]) -> None:
        now = datetime.now(timezone.utc)
        with self._lock:
            self._buffer.extend({"timestamp": now, **r} for r in records)
            due = len(self._buffer) >= self.flush_records
        if due:
            self.flush()

    def flush(self) -> int:
        with self._lock:
            batch, self._buffer = self._buffer, []
        if not batch:
            return 0
        by_hour: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for r in batch:
            by_hour.setdefault(_hour_parts(r["timestamp"]), []).append(r)
        for hour, rows in by_hour.items():
            buf = io.BytesIO()
            pq.write_table(_table(rows), buf)
            name = f"part-{time.time_ns()}-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"  # a forked writer too
            self.store.put(buf.getvalue(), *hour, name)
        self.written += len(batch)
        return len(batch)

    def keep_input(self, data: bytes, suffix: str = "") -> str:
        """An input's bytes under inputs/, named by their sha256 (written once, however often they
        come); the hash. The label queue and realised accuracy find inputs by it."""
        digest = hashlib.sha256(data).hexdigest()
        # the client's file name never reaches a path: only a short alphanumeric suffix of it
        clean = re.sub(r"[^a-z0-9]", "", suffix.lower())[:8]
        if not self.store.glob(f"{INPUTS}/{digest[:2]}/{digest}*"):  # one copy, whatever the suffix
            self.store.put(data, INPUTS, digest[:2], f"{digest}{'.' + clean if clean else ''}")
        return digest

    def _tick(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.flush_seconds + 5)
        self.flush()

    def __enter__(self) -> ProductionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def part_hour(part: PurePosixPath) -> datetime | None:
    """The hour a log part's folders (date=YYYY-MM-DD/hour=HH) name; None for any other folders."""
    try:
        return datetime.strptime(f"{part.parent.parent.name[5:]} {part.parent.name[5:]}",
                                 "%Y-%m-%d %H").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def read_log(root: str | Path, hours: float | None = None, last: int = 0,
             now: datetime | None = None) -> pd.DataFrame:
    """Records of the last `hours` (all when None), at most the latest `last` (0 = all), oldest first.

    A part that cannot be read (truncated, not Parquet, another schema) or a partition folder whose
    name is not a date and hour is set aside with a warning naming it, never the whole log: the
    frame's attrs["skipped_parts"] lists (part, why)."""
    store = Store(root)
    now = now or datetime.now(timezone.utc)
    since = now - timedelta(hours=hours) if hours is not None else None
    files, skipped = [], []
    for key in store.glob("date=*/hour=*/part-*.parquet"):
        part = PurePosixPath(str(key))
        hour = part_hour(part)
        if hour is None:
            skipped.append((_shown(store, part), "its folders are not date=YYYY-MM-DD/hour=HH"))
            continue
        if since is not None and hour + timedelta(hours=1) <= since:
            continue
        files.append(key)
    tables = []
    for key in files:
        try:
            with store.open(key) as fh:
                table = pq.read_table(fh).to_pandas()
            if "timestamp" not in table or not pd.api.types.is_datetime64_any_dtype(table["timestamp"]):
                raise ValueError("no timestamp column: not a production-log part")
            tables.append(table)
        except Exception as exc:  # any way a part can be broken: it is named and set aside
            skipped.append((_shown(store, PurePosixPath(str(key))), f"{type(exc).__name__}: {str(exc)[:200]}"))
    for name, why in skipped:
        logger.warning("production log: skipped %s (%s); move it aside or delete it", name, why)
    if not tables:
        empty = pd.DataFrame()
        empty.attrs["skipped_parts"] = skipped
        return empty
    frame = pd.concat(tables, ignore_index=True)
    if since is not None:
        frame = frame[frame["timestamp"] >= since]
    frame = frame.sort_values("timestamp", kind="stable").reset_index(drop=True)
    frame = frame.tail(last).reset_index(drop=True) if last else frame
    frame.attrs["skipped_parts"] = skipped
    return frame


def _shown(store: Store, part: PurePosixPath) -> str:
    """A part as the user finds it under the log's location."""
    return "/".join(part.parts[-3:]) if len(part.parts) >= 3 else str(part)


def input_identity(data: bytes, suffix: str, log: ProductionLog | None, keep: bool) -> dict[str, str]:
    """An image input's log fields: its content hash, its bytes kept under the log when `keep`.
    Storage that cannot take the bytes costs the label queue this input, not the prediction."""
    if log is not None and keep:
        try:
            return {"input_sha256": log.keep_input(data, suffix)}
        except OSError as exc:
            logger.warning("could not keep an input under %s (%s); predicting without keeping it",
                           log.store.show(INPUTS), exc)
    return {"input_sha256": hashlib.sha256(data).hexdigest()}


def kept_input(root: str | Path, digest: str) -> tuple[str, bytes] | None:
    """A kept input's file name and bytes, by its sha256; None when it was not kept."""
    store = Store(root)
    found = sorted(store.glob(f"{INPUTS}/{digest[:2]}/{digest}*"))
    if not found:
        return None
    name = PurePosixPath(str(found[0])).name
    return name, store.read_bytes(INPUTS, digest[:2], name)
