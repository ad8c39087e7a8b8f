"""Order-preserving parallel map over files with a progress bar."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from pipeline.core.progress import progress

# Worker processes pay off only past this many items; below it, their start-up costs more.
POOL_MIN_ITEMS = 256


def map_files(fn: Callable[[Any], Any], items: list[Any], workers: int, desc: str,
              meanwhile: Callable[[], Any] | None = None) -> Iterator[Any]:
    """Yield fn(item) in order; `workers` processes (0 = every core), a bar on a terminal.

    meanwhile: run in this process once every item is submitted, while the workers run (the
    workers are forked before it, so it may import or start threads safely)."""
    n_workers = workers or os.cpu_count() or 1
    bar = dict(total=len(items), desc=desc, unit="file")
    if n_workers == 1 or len(items) < POOL_MIN_ITEMS:
        if meanwhile is not None:
            meanwhile()
        yield from progress(map(fn, items), **bar)
        return
    chunk = max(1, min(256, len(items) // (n_workers * 8)))
    with ProcessPoolExecutor(max_workers=n_workers) as pool:
        results = pool.map(fn, items, chunksize=chunk)  # submits everything now
        if meanwhile is not None:
            meanwhile()
        yield from progress(results, **bar)
