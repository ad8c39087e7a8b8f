"""Retention of the production log: log parts and kept inputs older than `serve.keep_inputs_days`
are deleted, and kept inputs beyond `serve.keep_inputs_mb` go oldest first. The monitoring run
prunes after it has read its window, so nothing inside a window is ever pruned."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import PurePosixPath
from typing import Any

from pipeline.core.storage import Store
from pipeline.production.prodlog import INPUTS, part_hour


@dataclass(frozen=True)
class Pruned:
    parts: int
    inputs: int
    bytes: int

    def to_dict(self) -> dict[str, int]:
        return {"parts": self.parts, "inputs": self.inputs, "bytes": self.bytes}


def _modified(info: dict[str, Any]) -> float:
    """A file's modification time (seconds since the epoch) from any fsspec filesystem's listing."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(key)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return 0.0


def prune_log(root: str, keep_days: float, max_inputs_mb: float, now: datetime | None = None) -> Pruned:
    """Delete what is past retention (keep_days 0 = keep forever; max_inputs_mb 0 = no cap)."""
    store = Store(root)
    now = now or datetime.now(timezone.utc)
    parts = inputs = freed = 0
    if keep_days:
        cutoff = now - timedelta(days=keep_days)
        for key in store.glob("date=*/hour=*/part-*.parquet"):
            hour = part_hour(PurePosixPath(str(key)))
            if hour is None:
                continue  # not a part graft wrote: read_log names it, a person decides
            if hour + timedelta(hours=1) <= cutoff:
                store.fs.rm(key)
                parts += 1
    try:
        listing = store.fs.find(store.key(INPUTS), detail=True)
    except FileNotFoundError:
        listing = {}
    files = sorted(((_modified(info), int(info.get("size") or 0), key) for key, info in listing.items()),
                   key=lambda f: f[0])
    total = sum(size for _, size, _ in files)
    cutoff_ts = (now - timedelta(days=keep_days)).timestamp() if keep_days else None
    cap = int(max_inputs_mb * 2**20) if max_inputs_mb else None
    for modified, size, key in files:  # oldest first
        if not ((cutoff_ts is not None and modified < cutoff_ts) or (cap is not None and total > cap)):
            continue
        store.fs.rm(key)
        total -= size
        inputs, freed = inputs + 1, freed + size
    return Pruned(parts, inputs, freed)
