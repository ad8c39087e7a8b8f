"""Drift decision: unseen traffic from the training distribution is not drift, shifted traffic is;
the reference holds only held-out rows; the rule's false-alarm rate; minimum records; cooldown."""

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import shifted_texts, spam_rows

from pipeline.core.config import load_params
from pipeline.production.monitor import run_monitor
from pipeline.production.predictor import Predictor, text_inputs
from pipeline.production.prodlog import ProductionLog, read_log
from pipeline.production.profile import vocabulary
from pipeline.production.reference import MonitorError, load_reference
from pipeline.release.registry import champion_dir


def _log(texts, p):
    name, d = champion_dir(p.paths.registry)
    pred = Predictor(d, name)
    with ProductionLog(p.paths.log, flush_records=100) as log:
        for i in range(0, len(texts), 16):
            chunk = texts[i:i + 16]
            log.append(pred.records(pred.predict(chunk), inputs=text_inputs(chunk)))


def test_reference_holds_only_held_out_rows(workspace):
    p = load_params("params.yaml")
    _name, d = champion_dir(p.paths.registry)
    ref = load_reference(d)
    manifest = pd.read_parquet(Path(p.paths.validate_) / "manifest.parquet")
    held_out = manifest[manifest["split"] != "train"]
    assert len(ref) == len(held_out) and set(ref["split"]) <= {"val", "test"}
    assert {"length", "word_count", "oov_share", "non_ascii_share", "pred", "confidence", "embedding"} <= set(ref)
    # what "out of vocabulary" means is the training split's words, for reference and production alike
    train_words = vocabulary(manifest.loc[manifest["split"] == "train", "text"])
    assert json.loads((d / "vocabulary.json").read_text()) == train_words
    exported = json.loads(Path(p.paths.export, "export.json").read_text())
    assert exported["reference_rows"] == {s: int((held_out["split"] == s).sum()) for s in ("test", "val")}
    card = (d.parent / "card.md").read_text()
    assert f"{len(held_out)} held-out examples" in card


def test_an_older_reference_with_training_rows_keeps_its_held_out_rows(workspace):
    p = load_params("params.yaml")
    _name, d = champion_dir(p.paths.registry)
    ref = load_reference(d)
    mixed = pd.concat([ref, ref.assign(split="train", oov_share=0.0, confidence=0.99)], ignore_index=True)
    mixed.to_parquet(d / "reference.parquet")
    assert len(load_reference(d)) == len(ref)


def test_unseen_traffic_from_the_training_distribution_is_no_drift_and_shifted_traffic_is(workspace):
    p = load_params("params.yaml")
    unseen = [text for text, _ in spam_rows(per_class=100, seed=7)]  # new messages, never trained on
    _log(unseen, p)
    r = run_monitor(p, "mon")
    assert r.decision == "no_drift" and not r.drift and not r.trigger, r.reasons
    assert set(r.columns) == {"length", "word_count", "oov_share", "non_ascii_share", "confidence", "pred"}
    assert r.rule["false_alarm_rate"] == 0.02 and r.rule["column_alpha"] == pytest.approx(0.01 / 6)
    assert {c: r.columns[c]["method"] for c in ("length", "confidence", "pred")} == {
        "length": "ks", "confidence": "ks", "pred": "chi2_homogeneity"}, r.columns
    assert any("at most 2.0% of healthy windows are called drift" in x for x in r.reasons), r.reasons
    assert r.reasons[-1] == "monitor.trigger=drift: input drift does not hold: no retraining"
    assert r.reference_rows and sum(r.reference_rows.values()) == r.reference_records

    _log(shifted_texts(60), p)
    r = run_monitor(p, "mon", current=read_log(p.paths.log).tail(60))
    assert r.decision == "drift" and r.trigger and r.current_records == 60
    assert r.columns["oov_share"]["drifted"] and r.columns["non_ascii_share"]["drifted"]
    saved = json.loads(Path("mon/drift.json").read_text())
    assert saved["decision"] == "drift" and saved["columns"]["length"]["method"] and saved["rule"]["column_alpha"]
    assert "<html" in Path("mon/report.html").read_text().lower()


def test_too_few_records_give_no_decision(workspace):
    p = load_params("params.yaml")
    _log(shifted_texts(10), p)
    r = run_monitor(p, "mon")
    assert r.decision == "insufficient_data" and not r.trigger
    assert "monitor.min_records=20" in r.reasons[0]


def test_one_drift_episode_triggers_one_retraining(workspace):
    p = load_params("params.yaml")
    _log(shifted_texts(40), p)
    now = datetime.now(timezone.utc)
    first = run_monitor(p, "mon", now=now)
    again = run_monitor(p, "mon", now=now + timedelta(hours=1))
    assert first.trigger and again.drift and not again.trigger
    assert "cooldown_hours=24" in again.reasons[-1]
    later = run_monitor(p, "mon", now=now + timedelta(hours=25), current=_window(p))
    assert later.trigger  # after the cooldown the drift, still there, triggers again
    history = [json.loads(line) for line in Path("mon/history.jsonl").read_text().splitlines()]
    assert [h["trigger"] for h in history] == [True, False, True]


def _window(p):
    from pipeline.production.prodlog import read_log

    return read_log(p.paths.log)


def test_a_version_without_reference_says_how_to_fix(workspace):
    p = load_params("params.yaml")
    _name, d = champion_dir(p.paths.registry)
    (d / "reference.parquet").unlink()
    _log(shifted_texts(30), p)
    with pytest.raises(MonitorError, match="re-run `graft export`"):
        run_monitor(p, "mon")


def test_only_the_champions_records_are_compared(workspace):
    p = load_params("params.yaml")
    _log(shifted_texts(30), p)
    with ProductionLog(p.paths.log) as log:  # records of an earlier champion: other predictions, other embeddings
        part = next(Path(p.paths.log).rglob("*.parquet"))
        log.append([{**r, "model_version": "v0000"} for r in pd.read_parquet(part).to_dict("records")])
    r = run_monitor(p, "mon")
    assert r.current_records == 30


def test_the_label_free_estimate_is_reported_and_the_trigger_rule_decides(workspace):
    p = load_params("params.yaml")
    unseen = [text for text, _ in spam_rows(per_class=30, seed=7)]
    _log(unseen, p)
    clean = run_monitor(p, "mon", current=read_log(p.paths.log))
    _log(shifted_texts(60), p)
    shifted_window = read_log(p.paths.log).tail(60)
    shifted = run_monitor(p, "mon", current=shifted_window)
    for r in (clean, shifted):
        perf = r.performance
        # the default is atc; this tiny reference has no misclassified row to place its threshold
        assert perf["method"] == "cbpe" and "atc needs at least 10 misclassified" in perf["note"], perf
        assert perf["records"] == r.current_records
        assert 0 <= perf["accuracy_low"] <= perf["accuracy"] <= perf["accuracy_high"] <= 1, perf
        assert perf["estimated_drop"] == pytest.approx(perf["test_accuracy"] - perf["accuracy"])
        assert any(x.startswith("estimated accuracy") and "no labels" in x for x in r.reasons), r.reasons
    # words the model never saw: it is unsure, so it is estimated much worse than on clean traffic
    assert shifted.performance["accuracy"] < clean.performance["accuracy"] - 0.1, (shifted.performance,
                                                                                   clean.performance)
    saved = json.loads(Path("mon/drift.json").read_text())["performance"]
    assert saved["accuracy"] == pytest.approx(shifted.performance["accuracy"])
    page = Path("mon/performance.html").read_text()
    assert shifted.performance_html.endswith("performance.html") and "<svg" in page
    assert f"{shifted.performance['accuracy']:.3f} [" in page and "estimated drop" in page

    # drift_and_drop: drift that the estimate calls harmless does not retrain
    lenient = load_params("params.yaml", ["monitor.trigger=drift_and_drop", "monitor.max_estimated_drop=0.99",
                                          "monitor.estimator=cbpe"])
    r = run_monitor(lenient, "mon2", current=shifted_window)
    assert r.drift and not r.performance["harmful"] and not r.trigger
    assert "monitor.trigger=drift_and_drop: input drift with an estimated accuracy drop > 0.99 does not hold" \
        in r.reasons[-1]
    # estimated_drop: the estimate alone retrains, without drift
    strict = load_params("params.yaml", ["monitor.trigger=estimated_drop",
                                         f"monitor.max_estimated_drop={max(clean.performance['estimated_drop'], 0) / 2 + 1e-6}"])
    r = run_monitor(strict, "mon3", current=read_log(p.paths.log).head(len(unseen)))
    assert clean.performance["estimated_drop"] > 0  # the test accuracy is 1.0; no estimate is
    assert r.performance["harmful"] and r.trigger and r.decision == "no_drift", r.performance
    assert r.reasons[-1].startswith("monitor.trigger=estimated_drop: an estimated accuracy drop > ")


def test_labels_that_arrive_give_the_realised_accuracy_beside_the_estimate(workspace):
    from pipeline.production.realised import record_labels

    p = load_params("params.yaml")
    rows = spam_rows(per_class=30, seed=11)
    _log([t for t, _ in rows], p)
    assert run_monitor(p, "mon").performance["realised"] is None  # no label yet
    labelled = rows[::2]  # half of them come back labelled, one label deliberately wrong
    labelled = [(labelled[0][0], "ham" if labelled[0][1] == "spam" else "spam"), *labelled[1:]]
    table = pd.DataFrame({"sha256": [h["input_sha256"] for h in text_inputs([t for t, _ in labelled])],
                          "label": [lbl for _, lbl in labelled]})
    assert record_labels(p.paths.monitor, table, "batch-1.csv") == len(labelled)
    r = run_monitor(p, "mon")
    real = r.performance["realised"]
    logged = read_log(p.paths.log).set_index("text")["pred"]
    truth = sum(logged[t] == lbl for t, lbl in labelled) / len(labelled)
    assert real["records"] == len(labelled) and real["accuracy"] == pytest.approx(truth) and truth < 1
    assert 0 <= real["estimated_accuracy_same_records"] <= 1
    assert any(x.startswith(f"realised accuracy {truth:.3f} on the {len(labelled)} records") for x in r.reasons)


def test_the_prediction_test_holds_its_level_when_the_reference_is_a_sample_too():
    """No drift, a 300-row reference and 100-row windows, 10 classes: the two-sample test fires at
    about its level; the goodness-of-fit test (the reference's shares taken as exact) fires far more."""
    from scipy.stats import chisquare

    from pipeline.production.stattests import _homogeneity

    rng = np.random.default_rng(0)
    alpha, trials, labels = 0.01, 1500, np.array(list("abcdefghij"))
    ours = theirs = 0
    for _ in range(trials):
        ref, cur = pd.Series(rng.choice(labels, 300)), pd.Series(rng.choice(labels, 100))
        ours += _homogeneity(ref, cur, None, alpha)[1]
        rc, cc = ref.value_counts().reindex(labels, fill_value=0), cur.value_counts().reindex(labels, fill_value=0)
        theirs += chisquare(cc, rc * (100 / 300))[1] < alpha
    assert ours / trials < 2 * alpha < theirs / trials, (ours / trials, theirs / trials)
