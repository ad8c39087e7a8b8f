"""Realised performance: when labels arrive, how right was the champion on the traffic it served?

Every labelled batch that ingest accepts leaves its rows' content hashes and labels in
labels.parquet in the monitor's folder (or store): the same sha256 prepare computes (of a text's
UTF-8 bytes, of an image file's bytes), which the production log keeps per record as
input_sha256. On each monitoring window the records whose input has a label give the true
accuracy, shown beside the label-free estimate for the same records.
"""

from __future__ import annotations

import io
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.core.storage import Store
from pipeline.production.estimate import estimate_performance

LABELS = "labels.parquet"


def load_labels(monitor_root: str | Path) -> pd.DataFrame:
    store = Store(monitor_root)
    if not store.exists(LABELS):
        return pd.DataFrame(columns=["sha256", "label", "source", "added"])
    return pd.read_parquet(io.BytesIO(store.read_bytes(LABELS)))


def record_labels(monitor_root: str | Path, rows: pd.DataFrame, source: str) -> int:
    """Keep the (sha256, label) of labelled rows that arrived (a later label of the same input
    replaces the earlier one); the number kept. One ingest at a time writes here."""
    new = rows.loc[rows["sha256"].notna(), ["sha256", "label"]].astype(str).drop_duplicates("sha256", keep="last")
    if new.empty:
        return 0
    new = new.assign(source=source, added=datetime.now(timezone.utc).isoformat())
    old = load_labels(monitor_root)
    merged = pd.concat([old[~old["sha256"].isin(new["sha256"])], new], ignore_index=True)
    buf = io.BytesIO()
    merged.to_parquet(buf, index=False)
    Store(monitor_root).put(buf.getvalue(), LABELS)
    return len(new)


def realised_performance(window: pd.DataFrame, labels: pd.DataFrame, reference: pd.DataFrame,
                         model_labels: list[str], estimator: str, seed: int = 0) -> dict[str, Any] | None:
    """True accuracy on the window's records that have a label, and the estimate on the same
    records; None when none has one."""
    if labels.empty or "input_sha256" not in window:
        return None
    truth = labels.drop_duplicates("sha256", keep="last").set_index("sha256")["label"]
    matched = window[window["input_sha256"].isin(truth.index)].reset_index(drop=True)
    if matched.empty:
        return None
    y = matched["input_sha256"].map(truth).astype(str)
    accuracy = float((matched["pred"].astype(str) == y).mean())
    same = estimate_performance(reference, matched, model_labels, estimator, seed=seed)
    return {"records": len(matched), "share_of_window": len(matched) / max(len(window), 1), "accuracy": accuracy,
            "estimated_accuracy_same_records": same.accuracy,
            "summary": f"realised accuracy {accuracy:.3f} on the {len(matched)} records of this window whose "
                       f"label has arrived (estimated {same.accuracy:.3f} on the same records)"}
