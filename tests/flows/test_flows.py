"""training_flow, ingest_flow and monitoring_flow under a Prefect server."""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import shifted_texts, write_rows

import flows.ingest as ingest_mod
import flows.training as training_mod
from flows.ingest import ingest_flow
from flows.monitoring import monitoring_flow
from flows.steps import run_pipeline
from flows.training import training_flow
from pipeline.core.config import load_params
from pipeline.core.errors import DataError
from pipeline.production.predictor import Predictor
from pipeline.production.prodlog import ProductionLog
from pipeline.release.registry import champion_dir


@pytest.fixture(scope="module", autouse=True)
def prefect_server(tmp_path_factory):
    """A temporary Prefect server for this module (its start-up takes 10-60 s on 2 cores)."""
    os.environ.setdefault("PREFECT_HOME", str(tmp_path_factory.mktemp("prefect-home")))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def _artifacts():
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return {a.key: a for a in client.read_artifacts()}


def test_training_flow_runs_every_stage_and_publishes(workspace):
    summary = training_flow(params_file="params.yaml", reason="test")
    # the same data and params retrain a bit-identical model: nothing new to register
    assert summary["status"] == "unchanged" and summary["champion"] == "v0001" and summary["reason"] == "test"
    assert summary["dvc_push"] == "data not DVC-tracked: nothing pushed"
    arts = _artifacts()
    assert {"leaderboard", "test-metrics", "gate-decision", "run-summary"} <= set(arts)
    assert "unchanged" in arts["gate-decision"].data


def test_transient_failures_are_retried_and_data_errors_are_not(workspace, monkeypatch):
    calls = {"select": 0, "validate": 0}
    real = training_mod.run_stage

    def flaky(name, *args, **kwargs):
        if name in calls:
            calls[name] += 1
        if name == "select" and calls["select"] == 1:
            raise OSError("disk hiccup")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(training_mod, "run_stage", flaky)
    monkeypatch.setattr(training_mod, "TASKS", {n: t.with_options(retry_delay_seconds=0)
                                                for n, t in training_mod.TASKS.items()})
    assert training_flow(params_file="params.yaml")["status"] == "unchanged"
    assert calls["select"] == 2

    def broken(name, *args, **kwargs):
        if name == "validate":
            calls["validate"] += 1
            raise DataError("data/t.csv: row 3 has no label")
        return real(name, *args, **kwargs)

    calls["validate"] = 0
    monkeypatch.setattr(training_mod, "run_stage", broken)
    with pytest.raises(DataError, match="row 3"):
        training_flow(params_file="params.yaml")
    assert calls["validate"] == 1


def _dvc(*args):
    return subprocess.run([sys.executable, "-m", "dvc", *args], check=True, capture_output=True, text=True)


def test_ingest_merges_good_batches_rejects_bad_ones_and_versions_the_data(workspace, monkeypatch):
    _dvc("init", "--no-scm", "-q")
    _dvc("add", "-q", "data/t.csv")
    before_hash = yaml.safe_load(Path("data/t.csv.dvc").read_text())["outs"][0]["md5"]
    before = Path("data/t.csv").read_text()
    good = [("free cash prize now", "spam"), ("see you at lunch tomorrow", "ham")] * 5
    write_rows(Path("data/inbox/b1.csv"), good)
    write_rows(Path("data/inbox/b2.csv"), [("free cash", "eggs")] * 10)  # a label the model does not know
    triggered = []
    monkeypatch.setattr(ingest_mod, "trigger_training", lambda pf, reason, ingest=True: triggered.append(reason) or {"reason": reason})
    out = ingest_flow(params_file="params.yaml")
    by = {b["batch"]: b for b in out["batches"]}
    assert by["b1.csv"]["accepted"] and by["b1.csv"]["merged"] == 10
    assert not by["b2.csv"]["accepted"] and "eggs" in " ".join(by["b2.csv"]["reasons"])
    after = Path("data/t.csv").read_text()
    assert after.startswith(before) and after.count("\n") == before.count("\n") + 10 and "eggs" not in after
    assert Path("data/inbox/processed/b1.csv").exists() and Path("data/inbox/rejected/b2.csv").exists()
    assert (Path("data/inbox/rejected/b2.csv.report") / "report.html").exists()
    assert yaml.safe_load(Path("data/t.csv.dvc").read_text())["outs"][0]["md5"] != before_hash  # a new data version
    assert triggered == ["new data: 10 rows from b1.csv"]
    # their labels are kept by content hash, for the realised accuracy of what was served
    from pipeline.production.realised import load_labels

    labels = load_labels(load_params("params.yaml").paths.monitor)
    assert set(labels["sha256"]) == {hashlib.sha256(t.encode()).hexdigest() for t, _ in good[:2]}
    assert set(labels["source"]) == {"b1.csv"} and set(labels["label"]) == {"spam", "ham"}
    assert ingest_flow(params_file="params.yaml")["batches"] == []  # the inbox is empty now
    # the retrained model's card names the .dvc file that tracks data.path, and the new hash
    summary = run_pipeline("params.yaml", say=lambda _m: None)
    new_hash = yaml.safe_load(Path("data/t.csv.dvc").read_text())["outs"][0]["md5"]
    assert summary.gate.version == "v0002" and summary.gate.data_version.md5 == new_hash
    card = (Path("registry/versions/v0002/card.md")).read_text()
    assert f"version {new_hash} (DVC, tracked by `data/t.csv.dvc`)" in card


def test_a_rejected_batch_changes_nothing(workspace, monkeypatch):
    before = Path("data/t.csv").read_bytes()
    write_rows(Path("data/inbox/b3.csv"), [("", "ham")] * 3 + [("x", "spam")])
    monkeypatch.setattr(ingest_mod, "trigger_training", lambda *a, **k: pytest.fail("must not train"))
    out = ingest_flow(params_file="params.yaml")
    assert not out["batches"][0]["accepted"] and out["training"] is None
    assert Path("data/t.csv").read_bytes() == before


def test_monitoring_flow_triggers_training_on_drift_once(workspace):
    p = load_params("params.yaml")
    assert monitoring_flow(params_file="params.yaml")["drift"]["decision"] == "insufficient_data"
    name, d = champion_dir(p.paths.registry)
    pred = Predictor(d, name)
    with ProductionLog(p.paths.log) as log:
        log.append(pred.records(pred.predict(shifted_texts(40))))
    out = monitoring_flow(params_file="params.yaml")
    assert out["drift"]["decision"] == "drift"
    training = out["training"]
    assert training["triggered"] == "subflow" and training["reason"].startswith("monitor: ")
    assert training["status"] == "unchanged"  # no new labelled data: the same model, nothing registered
    again = monitoring_flow(params_file="params.yaml")
    assert again["drift"]["decision"] == "drift" and again["training"] is None  # the cooldown
    assert "drift-decision" in _artifacts()


def test_deployments_are_declared_with_their_schedules(workspace):
    from flows.deployments import deployments

    deps = {d.name: d for d in deployments("params.yaml")}
    assert set(deps) == {"graft-training", "graft-monitoring", "graft-ingest"}
    assert deps["graft-training"].schedules[0].schedule.cron == "0 3 * * 1"
    assert deps["graft-monitoring"].schedules[0].schedule.interval.total_seconds() == 3600
    assert deps["graft-ingest"].schedules[0].schedule.interval.total_seconds() == 300
    assert deps["graft-training"].parameters["params_file"] == "params.yaml"
    shutil.rmtree("registry")  # nothing above needed the registry: the declarations stand alone


def test_an_in_process_run_with_inferred_labels_runs_every_stage(tmp_path, tiny_bert_dir, monkeypatch):
    """No validate.labels: validate infers and freezes them, and the later stages' upstream check
    sees them (it once called validate's output stale)."""
    from conftest import spam_texts, text_params

    monkeypatch.chdir(tmp_path)
    spam_texts(tmp_path / "data" / "t.csv", per_class=30)
    params = text_params("data/t.csv", tiny_bert_dir, tmp_path / "cache")
    del params["validate"]
    Path("other.yaml").write_text(yaml.safe_dump(params))
    summary = run_pipeline("other.yaml", say=lambda _m: None)
    assert summary.via == "in-process" and summary.gate.champion == "v0001", summary
    assert yaml.safe_load(Path("other.yaml").read_text())["validate"]["labels"] == ["ham", "spam"]
