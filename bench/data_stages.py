"""5. prepare + validate on 10,000 and 100,000 generated images, and the Great Expectations
suite on a 1,000,000-row manifest.

Baseline: a single-threaded loop that opens and fully decodes every image with PIL (what
validate must at least do to prove an image is readable). graft: `prepare` (content hashes,
header reads, splits) then `validate` (full decodes in parallel, the GX suite, reports), as the
stages run them, on every core. Reported as images/s and the ratio. The GX suite alone (row
and dataset expectations, no decoding) on a 1,000,000-row text manifest: goal under 30 s.

    .venv/bin/python -m bench.data_stages [--sizes 10000 100000] [--side 64]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from bench.common import record
from bench.make_images import make
from pipeline.core.artifacts import Workspace
from pipeline.core.config import parse_params
from pipeline.data.prepare import run_prepare
from pipeline.data.validate import run_validate, validate_manifest


def _make_part(args: tuple[str, int, int, int]) -> None:
    root, start, n, side = args
    make(Path(root), n, size=side, offset=start)


def generate(root: Path, n: int, side: int) -> None:
    workers = mp.cpu_count()
    chunk = -(-n // workers)
    with mp.get_context("fork").Pool(workers) as pool:
        pool.map(_make_part, [(str(root), i * chunk, min(chunk, n - i * chunk), side) for i in range(workers)])


def pil_loop(files: list[Path]) -> float:
    start = time.perf_counter()
    for f in files:
        with Image.open(f) as im:
            im.load()
    return time.perf_counter() - start


def stages(root: Path, work: Path) -> float:
    p = parse_params({"data": {"path": str(root)}, "validate": {"labels": []}})
    start = time.perf_counter()
    ws = Workspace.from_params(p, prepare=work / "prepare", validate=work / "validate")
    run_prepare(p, ws)
    run_validate(p, ws)
    return time.perf_counter() - start


def gx_million(rows: int = 1_000_000) -> float:
    rng = np.random.default_rng(0)
    labels = np.array(["billing", "delivery", "login"])
    n_chars = rng.integers(20, 200, rows)
    frame = pd.DataFrame({
        "id": [f"row:{i}" for i in range(rows)], "modality": "text", "path": None,
        "text": "a customer message", "label": labels[rng.integers(0, 3, rows)],
        "sha256": [f"{i:064x}" for i in range(rows)], "split": np.array(["train", "val", "test"])[
            rng.choice(3, rows, p=[0.7, 0.15, 0.15])], "split_source": "hash", "bytes": None, "width": None,
        "height": None, "mode": None, "format": None, "n_chars": n_chars, "n_tokens": n_chars // 5,
        "row": np.arange(rows), "error": None})
    v = parse_params({"validate": {"labels": list(labels)}}).validate_
    start = time.perf_counter()
    report = validate_manifest(frame, v, list(labels), ".")
    seconds = time.perf_counter() - start
    assert report.success, report.failures
    return seconds


def run(sizes: tuple[int, ...] = (10_000, 100_000), side: int = 64) -> list[dict]:
    out = []
    for n in sizes:
        work = Path(tempfile.mkdtemp(prefix=f"graft-bench-data-{n}-"))
        generate(work / "imgs", n, side)
        files = sorted((work / "imgs").rglob("*.jpg"))
        base = pil_loop(files)
        ours = stages(work / "imgs", work)
        out.append(record(f"prepare_validate_{n}", f"5. prepare + validate, {n:,} images ({side} px JPEG)",
                          baseline="single-threaded PIL loop, full decode of every image",
                          ours="graft prepare + validate (hash, headers, splits, full decodes, GX suite, reports)",
                          goal="report images/s and the ratio", baseline_value=n / base, ours_value=n / ours,
                          unit="images/s", ratio=base / ours, ratio_label="x the loop's speed", goal_met=None,
                          details={"images": n, "baseline_s": base, "graft_s": ours}))
    seconds = gx_million()
    out.append(record("gx_million", "5. Great Expectations suite, 1,000,000-row manifest",
                      baseline="the 30 s budget", ours="validate_manifest (row + dataset expectations)",
                      goal="< 30 s", baseline_value=30.0, ours_value=seconds, unit="s", ratio=30.0 / seconds,
                      ratio_label="x under budget", goal_met=seconds < 30, details={"rows": 1_000_000}))
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--side", type=int, default=64)
    a = ap.parse_args()
    run(tuple(a.sizes), a.side)
