"""evaluate: test metrics, calibration, slices, behavioural checks, plots."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_task
from PIL import Image

from pipeline.core.artifacts import Workspace
from pipeline.core.config import parse_params
from pipeline.core.errors import GraftError
from pipeline.data.prepare import prepare_data
from pipeline.model.evaluate import run_evaluate, slice_values, summary_metrics
from pipeline.model.metrics import expected_calibration_error
from pipeline.model.train import train_model


@pytest.mark.parametrize("modality", ["image", "text"])
def test_run_evaluate_writes_metrics_plots_and_predictions(tmp_path, tiny_timm_dir, tiny_bert_dir, modality):
    data, labels, name = tiny_task(tmp_path, modality)
    w = tiny_timm_dir if modality == "image" else tiny_bert_dir
    slices = ["size_bucket"] if modality == "image" else ["length_bucket", "split_source"]
    p = parse_params({"data": {"path": str(data)}, "validate": {"labels": labels},
                      "train": {"epochs": 1, "max_length": 16},
                      "evaluate": {"slices": slices}, "paths": {"cache": str(tmp_path / "cache")}})
    m = prepare_data(data, p.data, p.prepare).manifest
    (tmp_path / "val").mkdir()
    m.to_parquet(tmp_path / "val" / "manifest.parquet")
    train_model(m, labels, data, {"chosen": {"name": name, "weights": str(w)}, "strategy": "linear_probe"},
                p, tmp_path / "train")
    r = run_evaluate(p, Workspace.from_params(p, train=tmp_path / "train", validate=tmp_path / "val", evaluate=tmp_path / "ev"))
    out = tmp_path / "ev"
    assert set(r.metrics) == {"loss", "accuracy", "macro_f1", "ece", "ece_uncalibrated", "roc_auc"}
    assert r.metrics["macro_f1"] >= 0.8 and 0.0 <= r.metrics["ece"] <= 1.0
    n_test = int((m["split"] == "test").sum())
    assert sum(map(sum, r.confusion)) == n_test and sum(c["support"] for c in r.per_class.values()) == n_test
    assert set(r.slices) == set(slices)
    assert all(0.0 <= v <= 1.0 for v in r.behaviour.values()) and len(r.behaviour) >= 2
    assert json.loads((out / "metrics.json").read_text())["macro_f1"] == r.metrics["macro_f1"]
    preds = pd.read_parquet(out / "predictions.parquet")
    assert len(preds) == n_test and {f"p_{lbl}" for lbl in labels} <= set(preds.columns)
    for png in ("confusion.png", "reliability.png"):
        assert Image.open(out / png).size[0] > 200


def test_ece_of_a_calibrated_and_an_overconfident_model():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 1.0, 20000)
    y = np.zeros(20000, dtype=int)
    pred_right = rng.random(20000) < conf  # right exactly as often as it is confident
    probs = np.stack([conf, 1 - conf], 1)
    y[~pred_right] = 1
    assert expected_calibration_error(probs, y, 15)[0] < 0.02
    over = np.stack([np.full(20000, 0.99), np.full(20000, 0.01)], 1)
    assert expected_calibration_error(over, y, 15)[0] == pytest.approx(0.99 - (y == 0).mean(), abs=0.01)


def test_summary_metrics_handle_multiclass_auc_and_a_missing_class():
    y = np.array([0, 1, 2, 0, 1, 2])
    probs = np.eye(3)[y] * 0.8 + 0.2 / 3
    s = summary_metrics(y, probs, 3)
    assert s["accuracy"] == 1.0 and s["roc_auc"] == 1.0
    s1 = summary_metrics(np.zeros(4, dtype=int), np.tile([0.9, 0.1], (4, 1)), 2)
    assert np.isnan(s1["roc_auc"])  # undefined with one class, reported as missing (the gate fails it)


def test_unknown_slice_column_names_the_choices():
    with pytest.raises(GraftError, match=r"evaluate.slices names 'colour'.*size_bucket"):
        slice_values(pd.DataFrame({"label": ["a"]}), "colour", "image")
