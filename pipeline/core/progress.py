"""Progress on long work: a tqdm bar in a terminal, heartbeat lines in logs.

A bar redrawn with carriage returns is unreadable in CI logs, Prefect's UI or `kubectl logs`,
and tqdm draws nothing at all when stderr is not a terminal. There, `progress` logs one line
through the `graft` logger every GRAFT_HEARTBEAT_SECONDS (30 by default): done/total, elapsed
time and the estimate left, so a 12-minute epoch shows it is alive. The CLI routes the logger
to stderr and the flows to Prefect's run log (PREFECT_LOGGING_EXTRA_LOGGERS=graft).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
log = logging.getLogger("graft")


def heartbeat_seconds() -> float:
    try:
        return max(0.0, float(os.environ.get("GRAFT_HEARTBEAT_SECONDS", "30")))
    except ValueError:
        return 30.0


def interactive() -> bool:
    return sys.stderr.isatty()


def progress(items: Iterable[T], *, desc: str, total: int | None = None, unit: str = "it",
             disable: bool = False, leave: bool = False, **bar: Any) -> Iterator[T]:
    """Iterate `items` showing progress: a tqdm bar in a terminal, heartbeats in a log."""
    if disable:
        yield from items
        return
    if interactive():
        yield from tqdm(items, desc=desc, total=total, unit=unit, leave=leave, **bar)
        return
    total = total if total is not None else (len(items) if hasattr(items, "__len__") else None)
    every = heartbeat_seconds()
    start = last = time.monotonic()
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if every and now - last >= every:
            last = now
            log.info(_line(desc, done, total, unit, now - start))
    if every and time.monotonic() - start >= every and last < time.monotonic() - 1.0:
        log.info(_line(desc, done, total, unit, time.monotonic() - start) + " done")


def _line(desc: str, done: int, total: int | None, unit: str, elapsed: float) -> str:
    if total:
        left = elapsed / done * (total - done) if done else float("nan")
        return f"{desc}: {done}/{total} {unit} ({elapsed:.0f} s, ~{left:.0f} s left)"
    return f"{desc}: {done} {unit} ({elapsed:.0f} s)"


def configure_cli_logging() -> None:
    """Route the `graft` logger's heartbeats to stderr once (the CLI's setup)."""
    if any(getattr(h, "_graft", False) for h in log.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    handler._graft = True  # type: ignore[attr-defined]
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
