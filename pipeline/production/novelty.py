"""The novelty test: are more production rows unlike anything in the reference than chance allows?

A whole-window test (a column's KS, the embedding classifier's AUC) barely moves when 10% of
the traffic is something new, yet those rows are where the model is wrong. This test looks at
each row: the reference's embeddings are split in two (seeded), an index half and a calibration
half; a row is novel when its cosine distance to the nearest index row exceeds the `quantile` of
the calibration rows' distances (split conformal). With no drift, current and calibration rows
are exchangeable, so the chance p that a current row is novel, given the calibration half, is
Beta(n + 1 - l, l) distributed (l the rank of the threshold among the n calibration distances),
and the number of novel rows among N is beta-binomial: its tail is the exact p-value, whatever
the embedding's distribution.

The cut is far out (the 99.5th percentile) because new inputs lie far out: on SMS Spam with
all-MiniLM-L6-v2, TREC questions mixed into 300-message windows at 10% passed the 95th percentile
for 74% of them (4% of SMS messages), the 99th for 50% (1%); windows flagged at p < 0.005 went
from 5 of 20 (95th) to 17 (99th) and 20 (99.5th), with no healthy window flagged. With fewer
calibration rows than the cut needs, the threshold is their largest distance, and the p-value
uses that rank.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import betabinom
from sklearn.neighbors import NearestNeighbors


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def novelty_test(reference: np.ndarray, current: np.ndarray, alpha: float, quantile: float = 0.995,
                 seed: int = 0) -> dict[str, Any]:
    """Share of current rows beyond the reference's `quantile` nearest-neighbour distance, and the
    exact p-value of seeing that many with no drift; drifted when p < alpha."""
    ref, cur = _unit(reference), _unit(current)
    order = np.random.default_rng(seed).permutation(len(ref))
    half = len(ref) // 2
    index, calibration = ref[order[:half]], ref[order[half:]]
    nn = NearestNeighbors(n_neighbors=1).fit(index)
    d_cal = np.sort(nn.kneighbors(calibration)[0][:, 0])
    n = len(d_cal)
    rank = min(math.ceil((n + 1) * quantile), n)  # the threshold is the rank-th smallest calibration distance
    threshold = float(d_cal[rank - 1])
    novel = int((nn.kneighbors(cur)[0][:, 0] > threshold).sum())
    a, b = n + 1 - rank, rank  # P(a current row is novel | calibration) ~ Beta(a, b)
    p_value = float(betabinom.sf(novel - 1, len(cur), a, b)) if novel else 1.0
    return {"method": "nearest-neighbour novelty", "score": novel / max(len(cur), 1),
            "expected": a / (a + b), "p_value": p_value, "threshold": alpha, "drifted": p_value < alpha,
            "novel_rows": novel, "rows": len(cur), "reference_rows": len(ref)}
