"""The `graft` command line: each stage a command, the same functions the flows call."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from graft import render

# Quiet, offline defaults; a user's own setting wins.
for _key, _value in {"HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1", "DVC_NO_ANALYTICS": "1",
                     "ORT_DISABLE_TELEMETRY": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                     "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}.items():
    os.environ.setdefault(_key, _value)

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="graft: transfer learning with validation, gates, export and drift monitoring.")
console = Console(stderr=True)
out = Console()
_state = {"debug": False}

ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="params file")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-S", help="override: KEY.PATH=VALUE")]


def _fail(exc: BaseException) -> None:
    from pipeline.errors import DataValidationError, GraftError

    if _state["debug"]:
        traceback.print_exc()
    if isinstance(exc, GraftError):
        console.print(f"[bold red]error:[/] {render.esc(str(exc))}", soft_wrap=True)
        if isinstance(exc, DataValidationError) and exc.report_path:
            console.print(f"report: {exc.report_path}")
        raise typer.Exit(2)
    console.print(f"[bold red]unexpected error:[/] {type(exc).__name__}: {render.esc(str(exc))}", soft_wrap=True)
    if not _state["debug"]:
        console.print("run with --debug for the traceback")
    raise typer.Exit(1)


def _load(params: Path, overrides: list[str] | None):
    from pipeline.params import load_params

    return load_params(params, overrides)


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False) -> None:
    _state["debug"] = debug


@app.command()
def prepare(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    data: Annotated[Path | None, typer.Option(help="raw data (default: data.path)")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="output folder (default: paths.prepare)")] = None,
) -> None:
    """Scan the raw data into a manifest (manifest.parquet, prepare.json)."""
    from pipeline.prepare import run_prepare

    try:
        p = _load(params, set_)
        target = out_dir or Path(p.paths.prepare)
        result = run_prepare(p, target, data)
    except Exception as exc:
        _fail(exc)
    render.prepare_summary(out, result.summary(), target)


@app.command()
def validate(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    manifest: Annotated[Path | None, typer.Option(help="prepare's folder (default: paths.prepare)")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="output folder (default: paths.validate)")] = None,
) -> None:
    """Run the Great Expectations suite; quarantine bad rows or stop with a report."""
    from pipeline.errors import DataValidationError
    from pipeline.validate import run_validate

    try:
        p = _load(params, set_)
        target = out_dir or Path(p.paths.validate_)
        report = run_validate(p, manifest or Path(p.paths.prepare), target, params_file=params)
    except DataValidationError as exc:
        if exc.summary:
            render.validation_summary(out, exc.summary, target)
        _fail(exc)
    except Exception as exc:
        _fail(exc)
    render.validation_summary(out, report.summary(), target)
    if report.labels_inferred and params.exists():
        out.print(f"froze the labels {report.labels} into {params} (validate.labels)")


@app.command()
def select(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    validated: Annotated[Path | None, typer.Option(help="validate's folder (default: paths.validate)")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="output folder (default: paths.select)")] = None,
) -> None:
    """Score the candidates with a probe on frozen features; choose a model and a strategy."""
    from pipeline.select import run_select

    try:
        p = _load(params, set_)
        target = out_dir or Path(p.paths.select)
        result = run_select(p, validated or Path(p.paths.validate_), target)
    except Exception as exc:
        _fail(exc)
    render.leaderboard(out, result, target)


@app.command()
def train(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    validated: Annotated[Path | None, typer.Option(help="validate's folder (default: paths.validate)")] = None,
    selected: Annotated[Path | None, typer.Option(help="select's folder (default: paths.select)")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="output folder (default: paths.train)")] = None,
    resume: Annotated[bool, typer.Option(help="continue from the last epoch checkpoint")] = False,
) -> None:
    """Fine-tune the selected model with the selected strategy."""
    from graft.tracking import DvcLiveLog
    from pipeline.train import run_train

    log = None
    try:
        p = _load(params, set_)
        target = out_dir or Path(p.paths.train)
        log = DvcLiveLog(target / "live", resume=resume, warn=lambda m: console.print(f"[yellow]warning:[/] {m}"))
        result = run_train(p, validated or Path(p.paths.validate_), selected or Path(p.paths.select),
                           target, resume=resume, log=lambda e, row: (render.epoch(out, row), log(e, row)))
    except KeyboardInterrupt:
        console.print(f"interrupted; `graft train --resume` continues from {target / 'checkpoints'}")
        raise typer.Exit(130) from None
    except Exception as exc:
        _fail(exc)
    finally:
        if log is not None:
            log.close()
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one summary
        render.train_summary(out, result)


@app.command()
def export(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    trained: Annotated[Path | None, typer.Option(help="train's folder (default: paths.train)")] = None,
    validated: Annotated[Path | None, typer.Option(help="validate's folder (default: paths.validate)")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="output folder (default: paths.export)")] = None,
) -> None:
    """Export to ONNX (logits + embedding), check parity with onnxruntime, measure latency."""
    from pipeline.export import run_export

    try:
        p = _load(params, set_)
        target = out_dir or Path(p.paths.export)
        result = run_export(p, trained or Path(p.paths.train), validated or Path(p.paths.validate_), target)
    except Exception as exc:
        _fail(exc)
    render.export_summary(out, result)


@app.command()
def evaluate(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    trained: Annotated[Path | None, typer.Option(help="train's folder (default: paths.train)")] = None,
    validated: Annotated[Path | None, typer.Option(help="validate's folder (default: paths.validate)")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="output folder (default: paths.evaluate)")] = None,
) -> None:
    """Test-split metrics, calibration, slices, behavioural checks and plots."""
    from pipeline.evaluate import run_evaluate

    try:
        p = _load(params, set_)
        target = out_dir or Path(p.paths.evaluate)
        result = run_evaluate(p, trained or Path(p.paths.train), validated or Path(p.paths.validate_), target)
    except Exception as exc:
        _fail(exc)
    render.evaluation_summary(out, result, target)


@app.command()
def run(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """The whole pipeline (through DVC), then the gate, the registry and promotion."""
    from graft.run import run_pipeline

    try:
        summary = run_pipeline(params, set_, out)
    except Exception as exc:
        _fail(exc)
    render.run_summary(out, summary)


@app.command()
def models(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """List the registry's model versions, their status and the champion."""
    from pipeline.registry import Registry

    try:
        reg = Registry(_load(params, set_).paths.registry)
        versions, champion = reg.list(), reg.champion()
    except Exception as exc:
        _fail(exc)
    render.models(out, versions, champion)


@app.command()
def promote(version: str, params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Make VERSION the champion (blessed, or needs_approval: a person's approval)."""
    from pipeline.registry import Registry

    try:
        with Registry(_load(params, set_).paths.registry).lock() as reg:
            reg.promote(version, allow=("blessed", "needs_approval"))
    except Exception as exc:
        _fail(exc)
    out.print(f"{version} is the champion")


@app.command()
def rollback(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Make the previous champion the champion again."""
    from pipeline.registry import Registry

    try:
        with Registry(_load(params, set_).paths.registry).lock() as reg:
            name = reg.rollback()
    except Exception as exc:
        _fail(exc)
    out.print(f"rolled back: {name} is the champion")


@app.command()
def serve(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    host: Annotated[str | None, typer.Option(help="default: serve.host")] = None,
    port: Annotated[int | None, typer.Option(help="default: serve.port")] = None,
) -> None:
    """Serve the champion over HTTP (POST /predict, GET /health, GET /model, /docs)."""
    from graft.serve import serve as run_server

    try:
        run_server(_load(params, set_), host, port)
    except Exception as exc:
        _fail(exc)


@app.command()
def score(
    source: Annotated[Path, typer.Argument(help="a folder of images, or a CSV/TSV/Parquet/JSONL/txt file of texts")],
    output: Annotated[Path, typer.Option("--out", "-o", help=".csv or .parquet")] = Path("predictions.csv"),
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    version: Annotated[str | None, typer.Option(help="a registry version; default: the champion")] = None,
    no_log: Annotated[bool, typer.Option("--no-log", help="do not append to the production log")] = False,
) -> None:
    """Score SOURCE with the champion (or --version); predictions to --out and the production log."""
    from pipeline.predictor import Predictor, champion_dir
    from pipeline.prodlog import ProductionLog
    from pipeline.registry import Registry
    from pipeline.score import score as run_score

    try:
        p = _load(params, set_)
        if version:
            name, model_dir = version, Registry(p.paths.registry).get(version).path / "onnx"
        else:
            name, model_dir = champion_dir(p.paths.registry)
        predictor = Predictor(model_dir, name, p.serve.model)
        log = None if no_log else ProductionLog(p.paths.log, p.serve.flush_records, p.serve.flush_seconds)
        try:
            result = run_score(predictor, source, output, log, p.data.text_column)
        finally:
            if log is not None:
                log.close()
    except Exception as exc:
        _fail(exc)
    render.score_summary(out, result, None if no_log else p.paths.log)


@app.command()
def monitor(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Drift of the production log's window against the champion's training data (Evidently)."""
    from pipeline.monitor import run_monitor

    try:
        p = _load(params, set_)
        result = run_monitor(p, p.paths.monitor)
    except Exception as exc:
        _fail(exc)
    render.drift_summary(out, result)


@app.command()
def ingest(
    batch: Annotated[Path | None, typer.Argument(help="a batch folder or file; default: every batch in paths.inbox")] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Validate new labelled batches alone and merge what passes into data.path (then `dvc add`)."""
    from flows.ingest import ingest_all

    try:
        p = _load(params, set_)
        results = ingest_all(str(params), str(batch) if batch else None, set_)
    except Exception as exc:
        _fail(exc)
    if not results:
        out.print(f"nothing to ingest in {p.paths.inbox}")
    for r in results:
        verdict = "[green]merged[/]" if r["accepted"] else "[bold red]rejected[/]"
        out.print(f"{r['batch']}: {verdict}: {render.esc('; '.join(r['reasons']))}"
                  + (f" (moved to {r['moved_to']})" if r["moved_to"] else ""), soft_wrap=True)
    if any(r["accepted"] for r in results):
        out.print("new data merged: `graft run` retrains on it (the ingest flow does that by itself)")


@app.command()
def worker(params: ParamsOpt = Path("params.yaml")) -> None:
    """Serve the training, monitoring and ingest deployments (infra/deployments.py) on their schedules."""
    from graft.worker import run_worker

    try:
        run_worker(params, console)
    except Exception as exc:
        _fail(exc)


@app.command("demo-data")
def demo_data(
    out_dir: Annotated[Path, typer.Option("--out", help="where to write")] = Path("data/raw"),
    seed: int = 0,
) -> None:
    """Generate the demo datasets (images/ and tickets.csv), deterministically."""
    from pipeline.demo_data import make_demo_data

    try:
        paths = make_demo_data(out_dir, seed=seed)
    except Exception as exc:
        _fail(exc)
    for modality, path in paths.items():
        out.print(f"{modality} demo data: {path}")


@app.command()
def demo() -> None:
    """Run every stage that exists on both demo datasets and say what each did."""
    from graft.demo import run_demo

    try:
        run_demo(out)
    except Exception as exc:
        _fail(exc)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
