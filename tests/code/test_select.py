"""select: probe scores, budgets, the strategy matrix, and features computed once."""

import json

import pandas as pd
import pytest
import torch
from conftest import colour_images

from pipeline.core.artifacts import Workspace
from pipeline.core.config import parse_params
from pipeline.core.errors import GraftError, ParamsError
from pipeline.data.prepare import prepare_data
from pipeline.model.backbones import load_backbone
from pipeline.model.features import embed_frame
from pipeline.model.select import choose_strategy, run_select, select_candidate, stratified_sample


@pytest.fixture
def colour_manifest(tmp_path):
    root = colour_images(tmp_path / "imgs", per_class=30)
    p = parse_params({"validate": {"labels": ["blue", "red"]}})
    return prepare_data(root, p.data, p.prepare).manifest, root


def _params(tmp_path, candidates, **select):
    return parse_params({"validate": {"labels": ["blue", "red"]},
                         "select": {"candidates": candidates, "cv_folds": 3, "latency_runs": 3, **select},
                         "paths": {"cache": str(tmp_path / "cache")}})


def test_leaderboard_ranks_usable_candidates_and_lists_unavailable_ones(tmp_path, colour_manifest, tiny_timm_dir):
    manifest, root = colour_manifest
    p = _params(tmp_path, [{"name": "test_efficientnet", "weights": str(tiny_timm_dir)},
                           {"name": "resnet18", "weights": str(tmp_path / "missing.safetensors")}])
    r = select_candidate(manifest, ["blue", "red"], root, p)
    assert r.chosen.name == "test_efficientnet" and r.chosen.status == "ok"
    assert [s.status for s in r.scores] == ["ok", "unavailable"]
    assert r.chosen.probe_macro_f1 > 0.8  # the colours separate even on random features
    assert r.chosen.params > 0 and r.chosen.latency_ms > 0 and r.chosen.size_mb > 0
    md = r.markdown()
    assert "| 1 | test_efficientnet | ok |" in md and "unavailable" in md and "**Chosen:**" in md


def test_budget_excludes_a_candidate(tmp_path, colour_manifest, tiny_timm_dir):
    manifest, root = colour_manifest
    p = _params(tmp_path, [{"name": "test_efficientnet", "weights": str(tiny_timm_dir)}], max_params=10)
    with pytest.raises(GraftError, match=r"(?s)no candidate can be used.*over budget: 99196 parameters > select.max_params=10"):
        select_candidate(manifest, ["blue", "red"], root, p)


def test_no_candidates_is_a_params_error(tmp_path, colour_manifest):
    manifest, root = colour_manifest
    with pytest.raises(ParamsError, match=r"select.candidates is empty"):
        select_candidate(manifest, ["blue", "red"], root, _params(tmp_path, []))


def test_run_select_writes_leaderboard_and_decision(tmp_path, colour_manifest, tiny_timm_dir):
    manifest, root = colour_manifest
    (tmp_path / "val").mkdir()
    manifest.to_parquet(tmp_path / "val" / "manifest.parquet")
    p = _params(tmp_path, [{"name": "test_efficientnet", "weights": str(tiny_timm_dir)}])
    p = p.model_copy(update={"data": p.data.model_copy(update={"path": str(root)})})
    run_select(p, Workspace.from_params(p, validate=tmp_path / "val", select=tmp_path / "sel"))
    saved = json.loads((tmp_path / "sel" / "leaderboard.json").read_text())
    assert saved["chosen"]["name"] == "test_efficientnet" and saved["strategy"] == "linear_probe"
    assert saved["reasons"] and (tmp_path / "sel" / "leaderboard.md").exists()


@pytest.mark.parametrize(("n_min", "f1", "params", "modality", "expected"), [
    (20, 0.95, 1e6, "image", "partial"),  # small data, a good probe: a short fine-tune, kept only if it pays
    (20, 0.60, 1e6, "image", "partial"),
    (500, 0.95, 1e6, "image", "full"),
    (500, 0.60, 1e6, "image", "full"),
    (500, 0.95, 3e8, "text", "lora"),
    (20, 0.95, 3e8, "text", "lora"),
    (100, 0.90, 1e6, "image", "full"),  # thresholds are inclusive
    (99, 0.90, 1e6, "image", "partial"),
    (500, 0.998, 1e6, "image", "linear_probe"),  # nothing left to gain by train.min_gain=0.005
])
def test_strategy_matrix(n_min, f1, params, modality, expected):  # n_min: the median class's size
    sp = parse_params({}).select
    strategy, reasons = choose_strategy(sp, modality, n_min, f1, int(params), min_gain=0.005)
    assert strategy == expected
    assert str(n_min) in reasons[0] and f"{f1:.3f}" in reasons[1]


def test_fixed_strategy_wins():
    sp = parse_params({"select": {"strategy": "full"}}).select
    assert choose_strategy(sp, "image", 5, 0.99, 10) == ("full", ["strategy full fixed by select.strategy"])


def test_stratified_sample_is_stable_as_data_grows(colour_manifest):
    manifest, _ = colour_manifest
    small = stratified_sample(manifest.iloc[:40], 5, 0)
    big = stratified_sample(pd.concat([manifest.iloc[:40], manifest.iloc[40:]]), 5, 0)
    assert small["label"].value_counts().max() <= 5
    kept = set(big["sha256"]) & set(manifest.iloc[:40]["sha256"])
    assert kept <= set(small["sha256"])  # new rows may displace old ones, never reshuffle them


def test_backbone_runs_once_per_example_across_stages(tmp_path, colour_manifest, tiny_timm_dir):
    manifest, root = colour_manifest
    b = load_backbone("test_efficientnet", str(tiny_timm_dir), "image")
    seen = []
    b.module.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[0]))
    cache = tmp_path / "cache"
    first = embed_frame(b, manifest.iloc[:30], root, cache)
    assert sum(seen) == 30
    again = embed_frame(b, manifest, root, cache)  # 30 cached, 30 new
    assert sum(seen) == 60 and torch.allclose(torch.from_numpy(first), torch.from_numpy(again[:30]))
    embed_frame(b, manifest, root, cache)
    assert sum(seen) == 60  # nothing recomputed, also across a fresh FeatureCache load
