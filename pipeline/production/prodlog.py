"""The production log: every served or scored prediction, as Parquet files partitioned by hour.

    production/log/date=2026-11-22/hour=14/part-<ns>-<pid>-<n>.parquet

Each flush writes a new, complete part file (temp file, fsync, rename), so any number of
workers and processes append without a lock and a reader never sees half a file. Records are
buffered in memory and flushed when `flush_records` are waiting, every `flush_seconds` by a
background thread, and on close: a kill -9 loses at most the records of the last interval.
Rows: timestamp (UTC), model_version, source, the input summary features, pred, confidence,
embedding (float32 list).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.io import write_atomic

_PARTS = itertools.count()


def _part_dir(root: Path, ts: datetime) -> Path:
    return root / f"date={ts:%Y-%m-%d}" / f"hour={ts:%H}"


def _table(records: list[dict[str, Any]]) -> pa.Table:
    emb = [np.asarray(r["embedding"], dtype=np.float32) for r in records]
    cols = {k: [r[k] for r in records] for k in records[0] if k != "embedding"}
    table = pa.Table.from_pydict(cols)
    return table.append_column("embedding", pa.array([e.tolist() for e in emb], type=pa.list_(pa.float32())))


class ProductionLog:
    def __init__(self, root: str | Path, flush_records: int = 50, flush_seconds: float = 5.0):
        self.root = Path(root)
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
        by_hour: dict[Path, list[dict[str, Any]]] = {}
        for r in batch:
            by_hour.setdefault(_part_dir(self.root, r["timestamp"]), []).append(r)
        for folder, rows in by_hour.items():
            name = f"part-{time.time_ns()}-{os.getpid()}-{next(_PARTS)}.parquet"
            table = _table(rows)
            write_atomic(folder / name, lambda p, t=table: pq.write_table(t, p))
        self.written += len(batch)
        return len(batch)

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


def read_log(root: str | Path, hours: float | None = None, last: int = 0,
             now: datetime | None = None) -> pd.DataFrame:
    """Records of the last `hours` (all when None), at most the latest `last` (0 = all), oldest first."""
    root = Path(root)
    now = now or datetime.now(timezone.utc)
    since = now - timedelta(hours=hours) if hours is not None else None
    files = []
    for part in sorted(root.glob("date=*/hour=*/part-*.parquet")):
        if since is not None:
            hour = datetime.strptime(f"{part.parent.parent.name[5:]} {part.parent.name[5:]}",
                                     "%Y-%m-%d %H").replace(tzinfo=timezone.utc)
            if hour + timedelta(hours=1) <= since:
                continue
        files.append(part)
    if not files:
        return pd.DataFrame()
    frame = pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)
    if since is not None:
        frame = frame[frame["timestamp"] >= since]
    frame = frame.sort_values("timestamp", kind="stable").reset_index(drop=True)
    return frame.tail(last).reset_index(drop=True) if last else frame
