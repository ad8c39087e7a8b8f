"""`graft run`: the whole training pipeline, then gate, register and promote."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from graft import render
from pipeline.errors import GraftError
from pipeline.io import write_json_atomic
from pipeline.params import Params, load_params
from pipeline.publish import publish
from pipeline.registry import Registry

STAGES = ("prepare", "validate", "select", "train", "evaluate", "export")  # dvc.yaml's stages, in order


def via_dvc(params_file: str | Path, overrides: list[str] | None = None) -> bool:
    """Stages run through `dvc repro` for the DVC workspace's own params.yaml without --set."""
    return (not overrides and Path("dvc.yaml").exists() and Path(".dvc").is_dir()
            and Path(params_file).resolve() == Path("params.yaml").resolve())


def venv_env() -> dict[str, str]:
    """The environment for dvc and its stage commands: they call `graft`, the one beside this
    interpreter, whether or not the venv is activated."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def _dvc(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], env=venv_env())
    if proc.returncode:
        raise GraftError(f"dvc {' '.join(args)} failed (exit {proc.returncode}); its output is above")


def run_stage(name: str, p: Params, params_file: Path, console: Console, dvc: bool = False) -> None:
    """One stage: `dvc repro --single-item NAME` (skipped when unchanged), or in-process with its summary."""
    if dvc:
        _dvc("repro", "--single-item", name)
        return
    from pipeline.evaluate import run_evaluate
    from pipeline.export import run_export
    from pipeline.prepare import run_prepare
    from pipeline.select import run_select
    from pipeline.train import run_train
    from pipeline.validate import run_validate

    paths = p.paths
    epoch = lambda _e, row: render.epoch(console, row)  # noqa: E731
    steps = {
        "prepare": (lambda: run_prepare(p, paths.prepare),
                    lambda r: render.prepare_summary(console, r.summary(), Path(paths.prepare))),
        "validate": (lambda: run_validate(p, paths.prepare, paths.validate_, params_file),
                     lambda r: render.validation_summary(console, r.summary(), Path(paths.validate_))),
        "select": (lambda: run_select(p, paths.validate_, paths.select),
                   lambda r: render.leaderboard(console, r, Path(paths.select))),
        "train": (lambda: run_train(p, paths.validate_, paths.select, paths.train, log=epoch),
                  lambda r: render.train_summary(console, r)),
        "evaluate": (lambda: run_evaluate(p, paths.train, paths.validate_, paths.evaluate),
                     lambda r: render.evaluation_summary(console, r, Path(paths.evaluate))),
        "export": (lambda: run_export(p, paths.train, paths.validate_, paths.export),
                   lambda r: render.export_summary(console, r)),
    }
    step, show = steps[name]
    console.rule(name)
    show(step())


def publish_run(p: Params, registry: Registry, via: str) -> dict[str, Any]:
    """Gate, register and promote what the stages produced; writes run-summary.json."""
    paths = p.paths
    out = Path(paths.train).parent
    summary = publish(p, Path(paths.validate_), Path(paths.train), Path(paths.evaluate), Path(paths.export),
                      out, locked=registry)
    summary["via"] = via
    write_json_atomic(out / "run-summary.json", summary)
    summary["summary_path"] = str(out / "run-summary.json")
    return summary


def run_pipeline(params_file: Path, overrides: list[str] | None, console: Console) -> dict[str, Any]:
    p = load_params(params_file, overrides)
    registry = Registry(p.paths.registry)
    with registry.lock():  # one run at a time: a second is refused, not interleaved
        if via_dvc(params_file, overrides):
            console.print("[bold]dvc repro[/] (unchanged stages are skipped)")
            _dvc("repro")
            via = "dvc repro"
        else:
            console.print(f"running the stages in-process ({params_file} is not the DVC workspace's params.yaml"
                          f"{' or --set was given' if overrides else ''})")
            for name in STAGES:
                run_stage(name, p, params_file, console)
            via = "in-process"
        return publish_run(p, registry, via)
