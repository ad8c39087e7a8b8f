"""The drift decision rule and its false-alarm rate, as plain arithmetic.

The rate is split in two halves. Each monitored column gets a p-value test (Kolmogorov-Smirnov for numbers, chi-square for the
predicted class) at `false_alarm_rate / 2 / columns` (Bonferroni: the chance that any column
fires on a healthy window is at most false_alarm_rate / 2, whatever the columns' dependence).
The other half goes to two embedding tests, a quarter each. Evidently's classifier method: a
classifier learns to tell reference from current rows on half of them and is scored by ROC AUC
on the other half; with no drift that AUC is a Mann-Whitney statistic, near normal with mean 0.5
and variance (n1 + n2 + 1) / (12 n1 n2), so its threshold comes from the window's size. And the
novelty test (`novelty.py`): an exact p-value for the share of rows unlike the reference, which
catches a new kind of input that is only a tenth of the traffic.
Measured on random embeddings (200 windows each, 300/300 and 72/300 rows): the bound held
(0.0% and 0.5% at 1%), where a fixed AUC of 0.55 fired on 6% and 15% of healthy windows.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

from pipeline.core.params import MonitorParams

EMBEDDING_DEFAULTS = {"model": 0.55, "ratio": 0.2, "distance": 0.2, "mmd": 0.015}  # Evidently's own


@dataclass(frozen=True)
class DriftRule:
    false_alarm_rate: float | None  # at most this share of healthy windows is called drift; None: not known
    column_alpha: float  # each column's test fires below this p-value
    embedding_threshold: float
    embedding_alpha: float | None
    novelty_alpha: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        rate = (f"at most {self.false_alarm_rate:.1%} of healthy windows are called drift" if self.false_alarm_rate
                else "false-alarm rate not known (monitor.embedding_threshold is fixed)")
        return (f"{rate} (each column at p < {self.column_alpha:.2g}, embedding score > "
                f"{self.embedding_threshold:.3f}, novel rows at p < {self.novelty_alpha:.2g})")


def auc_null_threshold(rows_per_side: int, alpha: float) -> float:
    """The ROC AUC that Evidently's classifier exceeds with probability `alpha` on a healthy
    window of `rows_per_side` rows each side (it scores half of them)."""
    n = max(rows_per_side / 2, 1.0)
    return 0.5 + NormalDist().inv_cdf(1 - alpha) * math.sqrt((2 * n + 1) / (12 * n * n))


def drift_rule(mp: MonitorParams, columns: int, rows_per_side: int) -> DriftRule:
    half, quarter = mp.false_alarm_rate / 2, mp.false_alarm_rate / 4
    column_alpha = half / max(columns, 1)
    if mp.embedding_threshold is not None:
        return DriftRule(None, column_alpha, mp.embedding_threshold, None, quarter)
    if mp.embedding_method == "model":
        return DriftRule(mp.false_alarm_rate, column_alpha, auc_null_threshold(rows_per_side, quarter), quarter,
                         quarter)
    return DriftRule(None, column_alpha, EMBEDDING_DEFAULTS[mp.embedding_method], None, quarter)
