"""Label audit: confident learning on out-of-fold probe probabilities flags flipped labels with
the right suggestion; select lists them; quarantine trains without the flagged training rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
from conftest import colour_images

from pipeline.core.artifacts import Workspace
from pipeline.core.config import parse_params
from pipeline.data.prepare import prepare_data
from pipeline.model.audit import LABEL_ISSUES, audit_labels, out_of_fold_probabilities
from pipeline.model.select import select_candidate
from pipeline.model.train import without_label_issues


def test_flipped_labels_are_flagged_first_with_their_true_label_suggested():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 3
    truth = np.repeat(np.arange(3), 100)
    x = centres[truth] + rng.normal(size=(300, 16))
    given = truth.copy()
    flipped = rng.choice(300, 15, replace=False)
    given[flipped] = (truth[flipped] + rng.integers(1, 3, size=15)) % 3
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(300)], "split": "train"})
    audit = audit_labels(frame, x, given, ["a", "b", "c"], 1.0, False, parse_params({}).train, "warn")
    issues, wrong = audit.issues, {f"r{i}" for i in flipped}
    # confident learning estimates how many labels are wrong: every one it flags is, and most are found
    assert set(issues["id"]) <= wrong and len(issues) >= 0.8 * len(wrong), issues
    assert list(issues["suggested"]) == [["a", "b", "c"][truth[int(i[1:])]] for i in issues["id"]]
    assert (issues["label_probability"].diff().dropna() >= 0).all() and list(issues["rank"]) == list(
        range(1, len(issues) + 1))
    assert audit.examined == 300 and audit.folds == 5
    # the out-of-fold probability of the given label ranks all 15 flips below every clean row
    probs, _ = out_of_fold_probabilities(x, given, 3, 1.0, False, parse_params({}).train)
    assert set(np.argsort(probs[np.arange(300), given])[:15]) == set(flipped)
    md = audit.markdown()
    assert "**Label audit** (warn):" in md and "| 1 | r" in md


def test_select_lists_suspected_label_errors_in_the_leaderboard(tmp_path, tiny_timm_dir):
    root = colour_images(tmp_path / "imgs", per_class=40)
    for f in sorted((root / "red").iterdir())[:4]:  # four red squares labelled blue
        f.rename(root / "blue" / f"flipped_{f.name}")
    p = parse_params({"validate": {"labels": ["blue", "red"]},
                      "select": {"candidates": [{"name": "test_efficientnet", "weights": str(tiny_timm_dir)}],
                                 "cv_folds": 3, "latency_runs": 3},
                      "paths": {"cache": str(tmp_path / "cache")}})
    manifest = prepare_data(root, p.data, p.prepare).manifest
    audited = manifest[manifest["split"].isin(["train", "val"])]
    flipped = set(audited.loc[audited["path"].str.contains("flipped_"), "id"].astype(str))
    assert flipped, "the split put no flipped file in train or val"
    r = select_candidate(manifest, ["blue", "red"], root, p)
    issues = r.audit.issues
    found = flipped & set(issues["id"])
    assert len(found) >= len(flipped) - 1 and len(set(issues["id"]) - flipped) <= 1, issues
    assert set(issues.loc[issues["id"].isin(found), "suggested"]) == {"red"}
    assert "**Label audit** (warn)" in r.markdown() and r.to_dict()["label_audit"]["flagged"] == len(issues)


def test_quarantine_leaves_the_flagged_training_rows_out(tmp_path):
    ws = Workspace.from_params(parse_params({"paths": {"select": str(tmp_path / "select")}}))
    ws.select.mkdir(parents=True)
    pd.DataFrame({"id": ["1", "2", "9"], "split": ["train", "val", "train"], "label": "x", "suggested": "y"}) \
        .to_csv(ws.select / LABEL_ISSUES, index=False)
    manifest = pd.DataFrame({"id": ["1", "2", "3", "4"], "split": ["train", "val", "train", "test"]})
    kept, dropped = without_label_issues(manifest, ws, "quarantine")
    assert dropped == 1 and list(kept["id"]) == ["2", "3", "4"]  # val keeps its rows: the gate's yardstick
    same, none = without_label_issues(manifest, ws, "warn")
    assert none == 0 and same.equals(manifest)
