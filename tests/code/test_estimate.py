"""Label-free performance estimates: on calibrated probabilities they match the realised accuracy
and macro-F1; atc's threshold; rows without probabilities; the reference check widens the interval."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from pipeline.production.estimate import estimate_performance, negative_entropy, probabilities

LABELS = ["a", "b", "c"]


def _calibrated(n: int, seed: int, sharpness: float = 3.0) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows whose true labels are drawn from their own probabilities (a perfectly calibrated model)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, 3)) * sharpness
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    truth = np.array([rng.choice(3, p=p) for p in probs])
    pred = probs.argmax(1)
    frame = pd.DataFrame({"pred": [LABELS[i] for i in pred], "confidence": probs.max(1),
                          "probs": list(probs.astype(np.float32)), "label": [LABELS[i] for i in truth]})
    return frame, truth


def _reference(seed: int = 1) -> pd.DataFrame:
    ref, _ = _calibrated(600, seed)
    return ref.assign(split=np.where(np.arange(len(ref)) % 2 == 0, "val", "test"))


@pytest.mark.parametrize("sharpness", [1.0, 3.0])
def test_cbpe_matches_the_realised_accuracy_and_macro_f1_of_a_calibrated_model(sharpness):
    current, truth = _calibrated(2000, seed=5, sharpness=sharpness)
    est = estimate_performance(_reference(), current, LABELS, "cbpe")
    pred = probabilities(current, LABELS).argmax(1)
    accuracy, macro_f1 = float((pred == truth).mean()), f1_score(truth, pred, average="macro")
    assert abs(est.accuracy - accuracy) < 0.03 and est.accuracy_low <= accuracy <= est.accuracy_high, (est, accuracy)
    assert abs(est.macro_f1 - macro_f1) < 0.03 and est.macro_f1_low <= macro_f1 <= est.macro_f1_high, (est, macro_f1)
    assert est.accuracy_high - est.accuracy_low < 0.15 and est.records == 2000
    assert est.reference_accuracy is not None and abs(est.reference_accuracy - est.reference_estimate) < 0.1


def test_atc_thresholds_the_score_at_the_references_accuracy():
    current, truth = _calibrated(2000, seed=6)
    ref = _reference()
    est = estimate_performance(ref, current, LABELS, "atc")
    ref_acc = (ref["pred"] == ref["label"]).mean()
    assert (negative_entropy(probabilities(ref, LABELS)) > est.threshold).mean() == pytest.approx(ref_acc, abs=0.01)
    assert est.accuracy == pytest.approx((negative_entropy(probabilities(current, LABELS)) > est.threshold).mean())
    assert abs(est.accuracy - (probabilities(current, LABELS).argmax(1) == truth).mean()) < 0.04
    assert est.method == "atc" and "atc" in est.describe()


def test_a_less_confident_window_is_estimated_lower():
    sharp, _ = _calibrated(500, seed=7, sharpness=4.0)
    flat, _ = _calibrated(500, seed=8, sharpness=0.7)
    ref = _reference()
    for method in ("cbpe", "atc"):
        assert estimate_performance(ref, flat, LABELS, method).accuracy + 0.2 < \
            estimate_performance(ref, sharp, LABELS, method).accuracy, method


def test_rows_logged_without_probabilities_use_their_confidence():
    frame = pd.DataFrame({"pred": ["a", "c"], "confidence": [0.8, 0.5],
                          "probs": [np.array([0.8, 0.1, 0.1], np.float32), np.nan]})
    p = probabilities(frame, LABELS)
    np.testing.assert_allclose(p, [[0.8, 0.1, 0.1], [0.25, 0.25, 0.5]], atol=1e-6)
    est = estimate_performance(_reference(), frame.assign(probs=[None, None]), LABELS)
    assert 0.5 < est.accuracy < 0.8


def test_an_estimator_that_missed_on_the_reference_widens_its_interval():
    current, _ = _calibrated(1000, seed=9)
    honest = estimate_performance(_reference(), current, LABELS)
    ref = _reference()
    test = ref["split"] == "test"
    ref.loc[test, "label"] = "a"  # its test rows are now mostly wrong: the estimator's own error is large
    widened = estimate_performance(ref, current, LABELS)
    assert widened.reference_accuracy < 0.5
    gap = abs(widened.reference_estimate - widened.reference_accuracy)
    honest_gap = abs(honest.reference_estimate - honest.reference_accuracy)
    low, high = honest.accuracy_low + honest_gap, honest.accuracy_high - honest_gap  # the sampling interval alone
    assert (widened.accuracy_low, widened.accuracy_high) == pytest.approx((max(0, low - gap), min(1, high + gap)))


def test_unknown_estimator_is_refused():
    current, _ = _calibrated(50, seed=1)
    with pytest.raises(ValueError, match="unknown estimator 'nannyml'"):
        estimate_performance(_reference(), current, LABELS, "nannyml")


def test_atc_without_enough_reference_errors_says_so_and_uses_cbpe():
    current, _ = _calibrated(300, seed=3)
    perfect = _reference().assign(label=lambda f: f["pred"])  # a reference the model got all right
    est = estimate_performance(perfect, current, LABELS, "atc")
    assert est.method == "cbpe" and est.threshold is None
    assert "atc needs at least 10 misclassified reference rows" in est.note and est.note in est.describe()
    assert est.accuracy == pytest.approx(estimate_performance(perfect, current, LABELS, "cbpe").accuracy)
