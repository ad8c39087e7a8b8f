"""The drift rule: per-column levels, the embedding AUC bound from the window size, its stated rate."""

import math

import numpy as np
import pytest

from pipeline.core.config import parse_params
from pipeline.core.errors import ParamsError
from pipeline.production.rule import auc_null_threshold, drift_rule


def _mp(**monitor):
    return parse_params({"monitor": monitor}).monitor


def test_columns_share_half_the_rate_and_the_two_embedding_tests_a_quarter_each():
    rule = drift_rule(_mp(false_alarm_rate=0.02), columns=5, rows_per_side=300)
    assert rule.false_alarm_rate == 0.02 and rule.embedding_alpha == rule.novelty_alpha == 0.005
    assert rule.column_alpha == pytest.approx(0.002)
    assert rule.embedding_threshold == pytest.approx(auc_null_threshold(300, 0.005))


def test_the_auc_bound_is_the_mann_whitney_null_quantile():
    # 150 scored rows a side: sd sqrt(301 / (12 * 150 * 150)) = 0.0334; z(0.99) = 2.326
    assert auc_null_threshold(300, 0.01) == pytest.approx(0.5 + 2.3263 * math.sqrt(301 / 270000), abs=1e-4)


@pytest.mark.parametrize("small,large", [(50, 200), (200, 1000), (1000, 5000)])
def test_more_rows_mean_a_tighter_bound(small, large):
    assert 0.5 < auc_null_threshold(large, 0.01) < auc_null_threshold(small, 0.01)


def test_a_lower_rate_means_a_higher_bound():
    assert auc_null_threshold(300, 0.001) > auc_null_threshold(300, 0.01) > auc_null_threshold(300, 0.1)


def test_a_fixed_embedding_threshold_leaves_the_rate_unknown():
    rule = drift_rule(_mp(embedding_threshold=0.6), columns=6, rows_per_side=300)
    assert rule.false_alarm_rate is None and rule.embedding_threshold == 0.6
    assert "not known" in rule.describe()
    other = drift_rule(_mp(embedding_method="ratio"), columns=6, rows_per_side=300)
    assert other.false_alarm_rate is None and other.embedding_threshold == 0.2


def test_the_bound_holds_for_a_classifier_on_healthy_embeddings():
    """Evidently's classifier on two samples of one distribution: the AUC passes the bound in at
    most about alpha of the windows (binomial slack for 60 windows)."""
    import pandas as pd
    from evidently.legacy.metrics.data_drift.embedding_drift_methods import model

    rng = np.random.default_rng(1)
    basis = rng.standard_normal((32, 32))
    threshold = auc_null_threshold(120, 0.05)
    aucs = [model(threshold=threshold)(pd.DataFrame(rng.standard_normal((120, 32)) @ basis),
                                       pd.DataFrame(rng.standard_normal((120, 32)) @ basis))[0] for _ in range(60)]
    assert np.mean(np.array(aucs) > threshold) <= 0.12  # 3 sd above 5% for 60 windows
    assert 0.45 < np.median(aucs) < 0.55


@pytest.mark.parametrize("key", ["drift_share", "method", "threshold"])
def test_replaced_keys_say_what_replaced_them(key):
    with pytest.raises(ParamsError, match=rf"monitor\.{key}: replaced by monitor\.false_alarm_rate"):
        parse_params({"monitor": {key: 0.5}})


def _clustered(rng, n, basis, noise=0.3):
    return rng.standard_normal((n, basis.shape[0])) @ basis + noise * rng.standard_normal((n, basis.shape[1]))


def test_novelty_false_alarms_stay_near_alpha_and_a_new_tenth_of_traffic_is_found():
    from pipeline.production.novelty import novelty_test

    rng = np.random.default_rng(3)
    home, elsewhere = rng.standard_normal((6, 48)), rng.standard_normal((6, 48))
    healthy = [novelty_test(_clustered(rng, 400, home), _clustered(rng, 200, home), 0.05, seed=t)["drifted"]
               for t in range(150)]
    assert np.mean(healthy) <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 150)

    def tenth_new():
        cur = _clustered(rng, 300, home)
        cur[:30] = _clustered(rng, 30, elsewhere)
        return cur

    found = [novelty_test(_clustered(rng, 1000, home), tenth_new(), 0.005, seed=t) for t in range(20)]
    assert all(r["drifted"] for r in found) and min(r["novel_rows"] for r in found) >= 30
