"""dvc.yaml as a user runs it: `dvc repro` in a fresh git repository."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from pipeline.core.storage import Store

REPO = Path(__file__).resolve().parents[2]


def _sh(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def test_dvc_repro_runs_the_stages_and_locks_the_data(tmp_path, image_tree, tiny_timm_dir):
    work = tmp_path / "proj"
    work.mkdir()
    shutil.copytree(REPO / "pipeline", work / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", work / "dvc.yaml")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["select"].update(candidates=[{"name": "test_efficientnet", "weights": str(tiny_timm_dir)}],
                            cv_folds=3, latency_runs=2)
    params["train"].update(epochs=2, batch_size=16)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    image_tree({"circle": 30, "square": 30, "triangle": 30}, root=work / params["data"]["path"])
    dvc = [sys.executable, "-m", "dvc"]
    _sh(["git", "init", "-q"], work)
    _sh([*dvc, "init", "-q"], work)
    _sh([*dvc, "add", "-q", "data/raw"], work)
    _sh(["git", "add", "-A"], work)
    _sh(["git", "commit", "-qm", "data"], work)
    out = _sh([*dvc, "repro"], work)
    for stage in ("prepare", "validate", "select", "train"):
        assert f"Running stage '{stage}'" in out
    assert (work / params["paths"]["train"] / "model" / "model.safetensors").exists()
    assert "Data and pipelines are up to date" in _sh([*dvc, "repro"], work)  # nothing changed, nothing runs
    assert "train_loss" in _sh([*dvc, "plots", "show", "--json"], work)
    lock = yaml.safe_load((work / "dvc.lock").read_text())
    data_dep = next(d for d in lock["stages"]["prepare"]["deps"] if d["path"] == params["data"]["path"])
    assert data_dep["md5"].endswith(".dir") and data_dep["nfiles"] == 90
    assert (work / params["paths"]["validate"] / "manifest.parquet").exists()
    assert "didn't change, skipping" in _sh([*dvc, "repro", "validate"], work)
    shutil.copy(work / "data/raw/images/circle/circle_00001.png", work / "data/raw/images/circle/new.png")
    assert "Running stage 'prepare'" in _sh([*dvc, "repro", "validate"], work)  # new data, new run


def test_the_data_travels_between_machines_through_a_dvc_remote_on_s3(tmp_path, s3_bucket, s3_endpoint):
    """One machine `dvc add`s and pushes the data to an S3 remote; another, with only the .dvc
    file, pulls the same bytes."""
    dvc = [sys.executable, "-m", "dvc"]
    first, second = tmp_path / "first", tmp_path / "second"
    for ws in (first, second):
        ws.mkdir()
        _sh([*dvc, "init", "-q", "--no-scm"], ws)
        _sh([*dvc, "remote", "add", "-d", "team", f"{s3_bucket}/dvc"], ws)
        _sh([*dvc, "remote", "modify", "team", "endpointurl", s3_endpoint], ws)
    (first / "data").mkdir()
    (first / "data" / "t.csv").write_text("text,label\nfree cash now,spam\nsee you at lunch,ham\n")
    _sh([*dvc, "add", "-q", "data/t.csv"], first)
    assert "1 file pushed" in _sh([*dvc, "push"], first)
    assert Store(f"{s3_bucket}/dvc").glob("**/*")  # the content-addressed object, on S3
    (second / "data").mkdir()
    shutil.copy(first / "data" / "t.csv.dvc", second / "data" / "t.csv.dvc")
    _sh([*dvc, "pull"], second)
    assert (second / "data" / "t.csv").read_text() == (first / "data" / "t.csv").read_text()
