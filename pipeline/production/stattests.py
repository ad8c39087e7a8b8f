"""A two-sample test for categorical drift, registered with Evidently so the decision and the
report use the same one.

Evidently's "chisquare" is a goodness-of-fit test: it takes the reference's class shares as
exact and asks whether the current window fits them. The reference is itself a sample (a few
hundred held-out rows), so its noise is counted as drift: with 300 reference and 100 current
rows the statistic is about 1.3 times too large under no drift, and a test meant to fire in 0.1%
of healthy windows fired in about 2%. The chi-square test of homogeneity (scipy's
`chi2_contingency` on the 2 x k table) treats both as samples.
"""

from __future__ import annotations

import pandas as pd

NAME = "chi2_homogeneity"


def _homogeneity(reference: pd.Series, current: pd.Series, feature_type: object, threshold: float
                 ) -> tuple[float, bool]:
    from scipy.stats import chi2_contingency

    keys = sorted(set(reference.dropna()) | set(current.dropna()), key=str)
    if len(keys) < 2:
        return 1.0, False
    ref, cur = reference.value_counts(), current.value_counts()
    table = [[int(ref.get(k, 0)) for k in keys], [int(cur.get(k, 0)) for k in keys]]
    p_value = float(chi2_contingency(table, correction=False).pvalue)
    return p_value, p_value < threshold


def register() -> str:
    """Make the test known to Evidently by NAME (once); returns NAME."""
    from evidently.legacy.calculations.stattests.registry import StatTest, register_stattest
    from evidently.legacy.core import ColumnType

    test = StatTest(name=NAME, display_name="chi-square test of homogeneity p_value",
                    allowed_feature_types=[ColumnType.Categorical])
    register_stattest(test, default_impl=_homogeneity)  # again in the same process: the same entry
    return NAME
