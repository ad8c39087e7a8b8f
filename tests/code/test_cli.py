"""The CLI as a user meets it: exit codes, messages that name the file or key, no tracebacks."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from graft.cli import app

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _params(tmp_path, body: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(body)
    return path


def _run(*args, cwd=None):
    result = runner.invoke(app, list(map(str, args)), catch_exceptions=False)
    return result.exit_code, result.output


def test_prepare_and_validate_from_a_params_file(tmp_path, image_tree):
    root = image_tree({"cat": 30, "dog": 30})
    p = _params(tmp_path, f"data:\n  path: {root}\npaths:\n  prepare: {tmp_path}/prep\n  validate: {tmp_path}/val\n")
    code, out = _run("prepare", "--params", p)
    assert code == 0 and "prepare: 60 image examples" in out and (tmp_path / "prep/manifest.parquet").exists()
    code, out = _run("validate", "--params", p)
    assert code == 0 and "PASSED" in out and "froze the labels ['cat', 'dog']" in out
    assert "labels: [cat, dog]" in p.read_text()


def test_bad_params_key_exits_2_naming_the_key(tmp_path):
    p = _params(tmp_path, "prepare:\n  sead: 1\n")
    code, out = _run("prepare", "--params", p)
    assert code == 2 and "unknown key 'prepare.sead'" in out and "Traceback" not in out


def test_a_params_file_that_is_missing_or_a_folder_exits_2_naming_it(tmp_path):
    code, out = _run("models", "--params", tmp_path / "nowhere.yaml")
    assert code == 2 and "nowhere.yaml does not exist" in out and "Traceback" not in out
    code, out = _run("prepare", "--params", tmp_path)
    assert code == 2 and "is a folder" in out
    code, out = _run("prepare", "--params", _params(tmp_path, ""), "--set", "data.path=[oops")
    assert code == 2 and "the value is not valid YAML" in out


def test_missing_data_exits_2(tmp_path):
    p = _params(tmp_path, f"data:\n  path: {tmp_path}/nowhere\n")
    code, out = _run("prepare", "--params", p, "--out", tmp_path / "o")
    assert code == 2 and "does not exist" in out and "nowhere" in out


def test_validation_failure_prints_the_summary_and_report(tmp_path, image_tree):
    root = image_tree({"cat": 30, "dog": 30})
    (root / "bird").mkdir()
    p = _params(tmp_path, f"data:\n  path: {root}\npaths:\n  prepare: {tmp_path}/prep\n  validate: {tmp_path}/val\n")
    assert _run("prepare", "--params", p)[0] == 0
    code, out = _run("validate", "--params", p)
    assert code == 2 and "FAILED" in out and "class 'bird' has 0" in out and "report.html" in out


def test_set_overrides_a_value_for_one_run(tmp_path, text_csv):
    data = text_csv()
    code, out = _run("prepare", "--params", _params(tmp_path, ""), "--set", f"data.path={data}",
                     "--out", tmp_path / "o")  # an empty params file: every default, then the override
    assert code == 0 and "40 text examples" in out


@pytest.mark.parametrize("debug", [False, True])
def test_real_process_hides_tracebacks_unless_debug(tmp_path, debug):
    p = _params(tmp_path, "prepare:\n  split: {train: 0.8, val: -0.1, test: 0.3}\n")
    cmd = [sys.executable, "-m", "graft.cli", *(["--debug"] if debug else []), "prepare", "--params", str(p)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "COLUMNS": "200"}, timeout=120)
    assert proc.returncode == 2
    assert "prepare.split.val" in proc.stderr and "greater than or equal to 0" in proc.stderr
    assert ("Traceback" in proc.stderr) is debug


def test_demo_data_is_deterministic(tmp_path):
    for name in ("a", "b"):
        assert _run("demo-data", "--out", tmp_path / name)[0] == 0
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 181  # 3 x 60 images and the CSV
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


def test_graft_run_models_promote_rollback(tmp_path, tiny_timm_dir):
    import json

    from conftest import colour_images

    data = colour_images(tmp_path / "imgs", per_class=30)
    p = _params(tmp_path, f"""
data: {{path: {data}}}
validate: {{labels: [blue, red]}}
select: {{candidates: [{{name: test_efficientnet, weights: {tiny_timm_dir}}}], cv_folds: 3, latency_runs: 2}}
train: {{epochs: 1}}
export: {{latency_runs: 3, quantize: false}}
paths: {{prepare: {tmp_path}/o/prep, validate: {tmp_path}/o/val, select: {tmp_path}/o/sel, train: {tmp_path}/o/train,
        evaluate: {tmp_path}/o/ev, export: {tmp_path}/o/ex, gate: {tmp_path}/o/gate, registry: {tmp_path}/reg, cache: {tmp_path}/cache}}
""")
    code, out = _run("run", "--params", p)
    assert code == 0, out
    assert "registered as v0001" in out and "blessed" in out and "in-process" in out
    summary = json.loads((tmp_path / "o" / "gate" / "run-summary.json").read_text())
    assert summary["version"] == "v0001" and summary["promoted"] and summary["gate"]["status"] == "blessed"
    assert {c["name"] for c in summary["gate"]["criteria"]} >= {"macro_f1", "onnx_parity"}
    # in-process runs write what `dvc repro` writes, dvclive's per-epoch curves included
    assert list((tmp_path / "o" / "train" / "live" / "plots" / "metrics").glob("val_macro_f1.tsv"))
    code, out = _run("run", "--params", p)  # nothing changed: nothing new to gate
    assert code == 0 and "identical to the champion v0001" in out
    code, out = _run("models", "--params", p)
    assert code == 0 and "v0001" in out and "blessed" in out
    code, out = _run("rollback", "--params", p)
    assert code == 2 and "nothing to roll back to" in out
    code, out = _run("promote", "v0007", "--params", p)
    assert code == 2 and "no model version 'v0007'" in out


def _two_datasets(tmp_path, image_tree):
    a = image_tree({"cat": 30, "dog": 30}, root=tmp_path / "a")
    b = image_tree({"cat": 25, "dog": 25}, root=tmp_path / "b", start=900)
    body = f"data:\n  path: {a}\npaths:\n  prepare: {tmp_path}/prep\n  validate: {tmp_path}/val\n  select: {tmp_path}/sel\n"
    return a, b, _params(tmp_path, body)


def test_validate_after_a_failed_prepare_refuses_instead_of_passing_on_old_data(tmp_path, image_tree):
    _a, _b, p = _two_datasets(tmp_path, image_tree)
    assert _run("prepare", "--params", p)[0] == 0
    before = (tmp_path / "prep/manifest.parquet").read_bytes()
    code, out = _run("prepare", "--params", p, "--set", f"data.path={tmp_path}/nowhere")
    assert code == 2 and "does not exist" in out
    assert (tmp_path / "prep/manifest.parquet").read_bytes() == before  # nothing stored is lost
    code, out = _run("validate", "--params", p, "--set", f"data.path={tmp_path}/nowhere")
    assert code == 2 and "the last `graft prepare` failed" in out and "PASSED" not in out
    assert not (tmp_path / "val").exists()  # the refusal wrote nothing


def test_a_stage_refuses_outputs_made_from_other_inputs_and_names_what_changed(tmp_path, image_tree):
    _a, b, p = _two_datasets(tmp_path, image_tree)
    code, out = _run("validate", "--params", p)
    assert code == 2 and "has no record of the run that made it" in out and "`graft prepare` first" in out
    assert _run("prepare", "--params", p)[0] == 0 and _run("validate", "--params", p)[0] == 0
    # another dataset prepared, validate not re-run: select refuses the old validated manifest
    assert _run("prepare", "--params", p, "--set", f"data.path={b}")[0] == 0
    code, out = _run("select", "--params", p, "--set", f"data.path={b}")
    assert code == 2 and f"{tmp_path}/val was made from other inputs (prepare changed since)" in out
    assert "run `graft validate` again" in out
    # a params change that validate's output depends on is named by its key
    assert _run("validate", "--params", p, "--set", f"data.path={b}")[0] == 0
    code, out = _run("select", "--params", p, "--set", f"data.path={b}", "--set", "validate.max_bad_fraction=0.5")
    assert code == 2 and "(validate.max_bad_fraction changed since)" in out and not (tmp_path / "sel").exists()


def test_symlink_loops_for_the_params_file_and_the_data_exit_2_naming_them(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    code, out = _run("prepare", "--params", tmp_path / "a")
    assert code == 2 and "is a symbolic link to nothing (a loop" in out
    (tmp_path / "loop.csv").symlink_to(tmp_path / "loop.csv")
    p = _params(tmp_path, f"data:\n  path: {tmp_path}/loop.csv\n")
    code, out = _run("prepare", "--params", p, "--out", tmp_path / "o")
    assert code == 2 and "loop.csv' is a symbolic link to nothing" in out and "Traceback" not in out


def test_a_gpu_asked_for_and_missing_or_a_misspelt_device_exits_2_before_any_work(tmp_path, tiny_timm_dir):
    import torch
    from conftest import colour_images

    data = colour_images(tmp_path / "imgs", per_class=12)
    p = _params(tmp_path, f"""
data: {{path: {data}}}
select: {{candidates: [{{name: test_efficientnet, weights: {tiny_timm_dir}}}], cv_folds: 3, latency_runs: 2}}
paths: {{prepare: {tmp_path}/prep, validate: {tmp_path}/val, select: {tmp_path}/sel, cache: {tmp_path}/cache}}
""")
    assert _run("prepare", "--params", p)[0] == 0 and _run("validate", "--params", p)[0] == 0
    code, out = _run("select", "--params", p, "--set", "train.device=gpu")
    assert code == 2 and "train.device" in out and "Traceback" not in out
    # one index past the GPUs there are (cuda:0 on a machine without one)
    missing = f"cuda:{torch.cuda.device_count() if torch.cuda.is_available() else 0}"
    code, out = _run("select", "--params", p, "--set", f"train.device={missing}")
    assert code == 2 and f"train.device: {missing}" in out and "Traceback" not in out
    assert not (tmp_path / "cache").exists() and not list((tmp_path / "sel").glob("leaderboard*"))  # nothing done
    code, out = _run("select", "--params", p, "--set", "train.device=cpu")
    assert code == 0, out


def test_init_names_a_symlink_loop_and_a_folder_it_cannot_write(tmp_path):
    (tmp_path / "loop").symlink_to("loop")
    r = runner.invoke(app, ["init", str(tmp_path / "ws"), "--data", str(tmp_path / "loop")])
    assert r.exit_code == 2 and "symbolic-link loop" in r.output and not (tmp_path / "ws").exists()
    data = tmp_path / "data.csv"
    data.write_text("text,label\n" + "".join(f"t{i},{'ab'[i % 2]}\n" for i in range(20)))
    r = runner.invoke(app, ["init", "/proc/graft-ws", "--data", str(data)])
    assert r.exit_code == 2 and "cannot write in /proc/graft-ws" in r.output
