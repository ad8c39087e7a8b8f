"""The gate as a pure function: every rule, its edges and its record."""

import numpy as np
import pytest
from sklearn.metrics import f1_score

from pipeline.core.config import parse_params
from pipeline.model.metrics import paired_bootstrap
from pipeline.release.decision import decide

GOOD = {"macro_f1": 0.90, "accuracy": 0.92, "ece": 0.05}


def gate(**over):
    base = {"bounds": {"macro_f1": {"min": 0.7}, "accuracy": {"min": 0.7}, "ece": {"max": 0.2}},
            "change": {"macro_f1": {"min_abs": 0.0}}, "require_parity": False}
    return parse_params({"gate": {**base, **over}}).gate


def names(decision, passed):
    return sorted(c.name for c in decision.criteria if c.passed is passed)


def test_first_run_blessed_on_value_bounds():
    d = decide(GOOD, None, gate())
    assert d.status == "blessed" and d.blessed and d.reasons == ["no champion yet: every value bound holds"]
    assert names(d, True) == ["accuracy", "ece", "macro_f1"]  # no change criteria without a champion


def test_first_run_can_require_a_person():
    d = decide(GOOD, None, gate(first_run="require_manual"))
    assert d.status == "needs_approval" and not d.blessed and "promote it by hand" in d.reasons[0]


def test_first_run_still_needs_the_value_bounds():
    d = decide({**GOOD, "macro_f1": 0.5}, None, gate(first_run="require_manual"))
    assert d.status == "rejected" and names(d, False) == ["macro_f1"]
    assert d.reasons == ["macro_f1: 0.5 (needs >= 0.7)"]


def test_lower_is_better_metric_has_an_upper_bound():
    d = decide({**GOOD, "ece": 0.3}, None, gate())
    assert names(d, False) == ["ece"] and "needs <= 0.2" in d.reasons[0]


def test_missing_metric_fails():
    d = decide({"macro_f1": 0.9, "accuracy": 0.9}, None, gate())
    assert d.status == "rejected" and names(d, False) == ["ece"] and "missing" in d.reasons[0]
    nan = decide({**GOOD, "accuracy": float("nan")}, None, gate())
    assert names(nan, False) == ["accuracy"]


def test_missing_metric_on_the_champion_fails_the_change_criterion():
    d = decide(GOOD, {"accuracy": 0.9}, gate())
    assert names(d, False) == ["change.macro_f1"] and "missing for the champion" in d.reasons[0]


def test_a_tie_passes_a_zero_bound_and_fails_a_positive_one():
    assert decide(GOOD, GOOD, gate()).blessed
    d = decide(GOOD, GOOD, gate(change={"macro_f1": {"min_abs": 0.01}}))
    assert d.status == "rejected" and names(d, False) == ["change.macro_f1.abs"]


def test_better_challenger_is_blessed_and_worse_is_rejected():
    assert decide({**GOOD, "macro_f1": 0.93}, GOOD, gate()).blessed
    d = decide({**GOOD, "macro_f1": 0.85}, GOOD, gate())
    assert not d.blessed and d.criteria[-1].value == pytest.approx(-0.05)
    assert d.reasons[0].startswith("change.macro_f1.abs: -0.05")


def test_negative_tolerance_allows_a_small_regression_only():
    tolerant = gate(change={"macro_f1": {"min_abs": -0.02}})
    assert decide({**GOOD, "macro_f1": 0.885}, GOOD, tolerant).blessed
    assert not decide({**GOOD, "macro_f1": 0.87}, GOOD, tolerant).blessed


def test_relative_change_bound():
    g = gate(change={"macro_f1": {"min_rel": 0.05}})
    assert decide({**GOOD, "macro_f1": 0.95}, GOOD, g).blessed  # +5.6%
    d = decide({**GOOD, "macro_f1": 0.93}, GOOD, g)  # +3.3%
    assert names(d, False) == ["change.macro_f1.rel"]


def test_change_direction_for_lower_is_better_metrics():
    g = gate(change={"ece": {"min_abs": 0.0}})
    assert decide({**GOOD, "ece": 0.04}, GOOD, g).blessed  # lower calibration error is a gain
    d = decide({**GOOD, "ece": 0.06}, GOOD, g)
    assert not d.blessed and d.criteria[-1].value == pytest.approx(-0.01)


def test_significance_uses_the_interval_lower_bound():
    g = gate(require_significant=True)
    better = {**GOOD, "macro_f1": 0.93}
    assert decide(better, GOOD, g, interval=(0.001, 0.05)).blessed
    d = decide(better, GOOD, g, interval=(-0.01, 0.05))
    assert names(d, False) == ["significance.macro_f1"] and "[-0.0100, +0.0500]" in d.reasons[0]
    assert not decide(better, GOOD, g).blessed  # no interval: not significant


def test_per_slice_failure_rejects():
    g = gate(slice_bounds={"macro_f1": {"min": 0.8}})
    slices = {"small": {"macro_f1": 0.95}, "large": {"macro_f1": 0.6}}
    d = decide(GOOD, None, g, slices=slices)
    assert names(d, False) == ["slice[large].macro_f1"]
    assert decide(GOOD, None, g, slices={"small": {"macro_f1": 0.95}}).blessed


def test_parity_is_a_criterion():
    g = gate(require_parity=True)
    assert decide(GOOD, None, g, parity_passed=True).blessed
    assert names(decide(GOOD, None, g, parity_passed=False), False) == ["onnx_parity"]
    assert "no export result" in decide(GOOD, None, g).reasons[0]


def test_decision_records_every_criterion():
    d = decide({**GOOD, "macro_f1": 0.93}, GOOD, gate(require_significant=True), interval=(0.01, 0.04))
    saved = d.to_dict()
    assert saved["status"] == "blessed" and len(saved["criteria"]) == 5
    assert all({"name", "value", "bound", "passed"} <= set(c) for c in saved["criteria"])


def test_paired_bootstrap_interval_brackets_the_true_difference():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    old = np.where(rng.random(2000) < 0.80, y, 1 - y)
    new = np.where(rng.random(2000) < 0.90, y, 1 - y)
    lo, hi = paired_bootstrap(y, new, old, lambda a, b: f1_score(a, b, average="macro"), 300, 0.95, 0)
    diff = f1_score(y, new, average="macro") - f1_score(y, old, average="macro")
    assert lo < diff < hi and lo > 0  # a 10-point gain on 2,000 examples is significant
    lo2, hi2 = paired_bootstrap(y, old, old, lambda a, b: f1_score(a, b, average="macro"), 300, 0.95, 0)
    assert lo2 == hi2 == 0.0


def test_an_existing_champion_without_change_bounds_is_not_a_first_run():
    d = decide(GOOD, {}, gate(change={"macro_f1": None}, first_run="require_manual"))
    assert d.status == "blessed" and d.reasons == ["every bound holds against the champion"]


def test_one_bound_given_changes_that_bound_alone_and_a_removed_one_is_shown():
    g = parse_params({"gate": {"bounds": {"ece": {"max": 0.5}, "accuracy": None}, "require_parity": False}}).gate
    assert g.bounds["macro_f1"].min == 0.7 and g.bounds["ece"].max == 0.5 and g.bounds["accuracy"] is None
    d = decide({**GOOD, "macro_f1": 0.6, "accuracy": 0.1, "ece": 0.4}, None, g)
    assert names(d, False) == ["macro_f1"]  # the default macro-F1 bound still holds
    removed = next(c for c in d.criteria if c.name == "accuracy")
    assert removed.bound == "removed" and "gate.bounds.accuracy is null" in removed.detail
    assert "| accuracy | 0.1 | removed | pass |" in d.to_markdown()
    again = parse_params({"gate": g.model_dump()}).gate  # the resolved params keep the removal
    assert again.bounds == g.bounds


def test_a_set_override_of_one_bound_keeps_the_others(tmp_path):
    from pipeline.core.config import load_params

    (tmp_path / "params.yaml").write_text("data: {path: x}\n")
    g = load_params(tmp_path / "params.yaml", ["gate.bounds.ece.max=0.5"]).gate
    assert {k: (b.min, b.max) for k, b in g.bounds.items()} == {
        "macro_f1": (0.7, None), "accuracy": (0.7, None), "ece": (None, 0.5)}
