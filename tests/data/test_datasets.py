"""The suite on real datasets: the demo data (generated) and, when present, the SMS Spam Collection."""

from pathlib import Path

import pytest
from conftest import REPO, SHARED

from pipeline.core.artifacts import Workspace
from pipeline.core.config import load_params
from pipeline.data.demo import make_demo_data
from pipeline.data.prepare import run_prepare
from pipeline.data.validate import run_validate


def _validate(params_file: Path, data_path: Path, tmp_path: Path):
    params = load_params(params_file)
    ws = Workspace.from_params(params, data=data_path, prepare=tmp_path / "prep", validate=tmp_path / "val")
    run_prepare(params, ws)
    return run_validate(params, ws)


@pytest.mark.parametrize(("modality", "params_file"),
                         [("image", REPO / "params.yaml"), ("text", REPO / "examples/text/params.yaml")])
def test_demo_data_passes_the_suite_cleanly(tmp_path, modality, params_file):
    data = make_demo_data(tmp_path / "raw")[modality]
    report = _validate(params_file, data, tmp_path)
    assert report.success and report.quarantine.empty and not report.warnings
    assert all(min(c.values()) >= 5 for c in report.counts.values())


@pytest.mark.skipif(not (SHARED / "data/sms_spam/SMSSpamCollection").exists(),
                    reason="../shared/data/sms_spam is not present")
def test_sms_spam_passes_with_its_known_duplicates_reported(tmp_path):
    report = _validate(REPO / "examples/sms_spam.yaml", SHARED / "data/sms_spam/SMSSpamCollection", tmp_path)
    assert report.success and len(report.accepted) == 5574
    assert report.counts["spam"]["test"] > 50
    assert any("share their content" in w for w in report.warnings)  # SMS spam has repeated messages
