"""Order-preserving parallel map over files with a progress bar."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from tqdm.auto import tqdm

# Worker processes pay off only past this many items; below it, their start-up costs more.
POOL_MIN_ITEMS = 256


def map_files(fn: Callable[[Any], Any], items: list[Any], workers: int, desc: str) -> Iterator[Any]:
    """Yield fn(item) in order; `workers` processes (0 = every core), a bar on a terminal."""
    n_workers = workers or os.cpu_count() or 1
    bar = dict(total=len(items), desc=desc, unit="file", disable=None, leave=False)
    if n_workers == 1 or len(items) < POOL_MIN_ITEMS:
        yield from tqdm(map(fn, items), **bar)
        return
    chunk = max(1, min(256, len(items) // (n_workers * 8)))
    with ProcessPoolExecutor(max_workers=n_workers) as pool:
        yield from tqdm(pool.map(fn, items, chunksize=chunk), **bar)
