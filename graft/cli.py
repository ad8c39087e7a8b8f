"""The `graft` command line: one command per stage of the stage table, plus serving and upkeep.

Every command goes through one error handler: a GraftError (bad input, missing stage output,
a refused operation) prints its message and exits 2; anything else exits 1 (`--debug` prints
the traceback).
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from graft import render
from pipeline.core.env import set_quiet_offline_defaults
from pipeline.core.progress import configure_cli_logging
from pipeline.stages import STAGE

set_quiet_offline_defaults()
configure_cli_logging()

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="graft: transfer learning with validation, gates, export and drift monitoring.")
console = Console(stderr=True)
out = Console()
_state = {"debug": False}

ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="params file")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-S", help="override: KEY.PATH=VALUE")]


def _folder(stage: str, what: str) -> Any:
    return typer.Option(help=f"{what} (default: paths.{stage})")


OutOpt = Annotated[Path | None, typer.Option("--out", help="this stage's output folder (default: its paths.<stage>)")]
PreparedOpt = Annotated[Path | None, _folder("prepare", "prepare's folder")]
ValidatedOpt = Annotated[Path | None, _folder("validate", "validate's folder")]
SelectedOpt = Annotated[Path | None, _folder("select", "select's folder")]
TrainedOpt = Annotated[Path | None, _folder("train", "train's folder")]
EvaluatedOpt = Annotated[Path | None, _folder("evaluate", "evaluate's folder")]
ExportedOpt = Annotated[Path | None, _folder("export", "export's folder")]


def _report(exc: BaseException) -> int:
    from pipeline.core.errors import DataValidationError, GraftError

    if _state["debug"]:
        traceback.print_exc()
    if isinstance(exc, GraftError):
        if isinstance(exc, DataValidationError) and exc.summary:
            render.validation_summary(out, exc.summary, Path(exc.report_path or ".").parent)
        console.print(f"[bold red]error:[/] {render.esc(str(exc))}", soft_wrap=True)
        if isinstance(exc, DataValidationError) and exc.report_path:
            console.print(f"report: {exc.report_path}")
        return 2
    if isinstance(exc, ModuleNotFoundError) and exc.name:  # a `graft[serve]` install asked to train, say
        why = (f"this command needs {exc.name.split('.')[0]!r}, which this install of graft lacks: "
               "pip install 'graft[full]' (the whole pipeline; 'graft[serve]' runs `graft serve` and `graft score` only)")
        console.print(f"[bold red]error:[/] {render.esc(why)}", soft_wrap=True)
        return 2
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status in (401, 403):  # the Prefect server's auth: say which setting, never the secret
        why = (f"the Prefect server at {os.environ.get('PREFECT_API_URL', '?')} refused the request ({status}): set "
               "PREFECT_API_AUTH_STRING to the server's PREFECT_SERVER_API_AUTH_STRING (user:password)")
        console.print(f"[bold red]error:[/] {render.esc(why)}", soft_wrap=True)
        return 2
    console.print(f"[bold red]unexpected error:[/] {type(exc).__name__}: {render.esc(str(exc))}", soft_wrap=True)
    if not _state["debug"]:
        console.print("run with --debug for the traceback")
    return 1


def command(name: str | None = None, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """app.command() with the one error handler around it."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def handled(*args: Any, **kw: Any) -> Any:
            try:
                return fn(*args, **kw)
            except (typer.Exit, typer.Abort):
                raise
            except KeyboardInterrupt:
                console.print("interrupted")
                raise typer.Exit(130) from None
            except Exception as exc:
                raise typer.Exit(_report(exc)) from None

        return app.command(name, **kwargs)(handled)

    return register


def _load(params: Path, overrides: list[str] | None) -> Any:
    from pipeline.core.config import load_params

    return load_params(params, overrides)


def _run_stage(name: str, params: Path, set_: list[str] | None, resume: bool = False, **folders: Path | None) -> None:
    from flows.steps import run_stage
    from pipeline.core.artifacts import Workspace

    p = _load(params, set_)
    ws = Workspace.from_params(p, params, **folders)
    result = run_stage(name, p, ws, resume=resume, on_epoch=lambda _e, row: render.epoch(out, row))
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one summary
        render.stage_summary(out, name, result, ws)
    if name == "validate" and result.labels_inferred and params.exists():
        out.print(f"froze the labels {result.labels} into {params} (validate.labels)")


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False) -> None:
    _state["debug"] = debug


@command(help=STAGE["prepare"].help)
def prepare(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None,
            data: Annotated[Path | None, typer.Option(help="raw data (default: data.path)")] = None,
            out_dir: OutOpt = None) -> None:
    _run_stage("prepare", params, set_, data=data, prepare=out_dir)


@command(help=STAGE["validate"].help)
def validate(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None, prepared: PreparedOpt = None,
             out_dir: OutOpt = None) -> None:
    _run_stage("validate", params, set_, prepare=prepared, validate=out_dir)


@command(help=STAGE["select"].help)
def select(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None, validated: ValidatedOpt = None,
           out_dir: OutOpt = None) -> None:
    _run_stage("select", params, set_, validate=validated, select=out_dir)


@command(help=STAGE["train"].help)
def train(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None, validated: ValidatedOpt = None,
          selected: SelectedOpt = None, out_dir: OutOpt = None,
          resume: Annotated[bool, typer.Option(help="continue from the last epoch checkpoint")] = False) -> None:
    try:
        _run_stage("train", params, set_, resume=resume, validate=validated, select=selected, train=out_dir)
    except KeyboardInterrupt:
        console.print("interrupted; `graft train --resume` continues from the last epoch checkpoint")
        raise typer.Exit(130) from None


@command(help=STAGE["evaluate"].help)
def evaluate(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None, trained: TrainedOpt = None,
             validated: ValidatedOpt = None, out_dir: OutOpt = None) -> None:
    _run_stage("evaluate", params, set_, train=trained, validate=validated, evaluate=out_dir)


@command(help=STAGE["export"].help)
def export(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None, trained: TrainedOpt = None,
           validated: ValidatedOpt = None, out_dir: OutOpt = None) -> None:
    _run_stage("export", params, set_, train=trained, validate=validated, export=out_dir)


@command(help=STAGE["gate"].help)
def gate(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None, validated: ValidatedOpt = None,
         trained: TrainedOpt = None, evaluated: EvaluatedOpt = None, exported: ExportedOpt = None,
         out_dir: OutOpt = None) -> None:
    _run_stage("gate", params, set_, validate=validated, train=trained, evaluate=evaluated, export=exported,
               gate=out_dir)


@command()
def run(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Every stage (through DVC for the workspace's params.yaml): prepare ... export, then the gate."""
    from flows.steps import run_pipeline

    def report(name: str, result: Any, ws: Any) -> None:
        out.rule(name)
        render.stage_summary(out, name, result, ws)

    summary = run_pipeline(params, set_, report=report, on_epoch=lambda _e, row: render.epoch(out, row),
                           say=out.print)
    render.run_summary(out, summary)


@command()
def models(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """List the registry's model versions, their status and the champion."""
    from pipeline.release.registry import Registry

    reg = Registry(_load(params, set_).paths.registry)
    render.models(out, reg.list(), reg.champion())


@command()
def promote(version: str, params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Make VERSION the champion (blessed, or needs_approval: a person's approval)."""
    from pipeline.release.registry import Registry

    with Registry(_load(params, set_).paths.registry).lock() as reg:
        reg.promote(version, allow=("blessed", "needs_approval"))
    out.print(f"{version} is the champion")


@command()
def rollback(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Make the previous champion the champion again."""
    from pipeline.release.registry import Registry

    with Registry(_load(params, set_).paths.registry).lock() as reg:
        name = reg.rollback()
    out.print(f"rolled back: {name} is the champion")


@command()
def serve(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None,
          host: Annotated[str | None, typer.Option(help="default: serve.host")] = None,
          port: Annotated[int | None, typer.Option(help="default: serve.port")] = None,
          workers: Annotated[int | None, typer.Option(min=1, max=64, help="server processes (default: serve.workers)")] = None) -> None:
    """Serve the champion over HTTP (POST /predict, GET /health, GET /model, /docs)."""
    from graft.serve import serve as run_server

    run_server(_load(params, set_), host, port, workers)


@command()
def score(
    source: Annotated[Path, typer.Argument(help="a folder of images, or a CSV/TSV/Parquet/JSONL/txt file of texts")],
    output: Annotated[Path, typer.Option("--out", "-o", help=".csv or .parquet")] = Path("predictions.csv"),
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    version: Annotated[str | None, typer.Option(help="a registry version; default: the champion")] = None,
    no_log: Annotated[bool, typer.Option("--no-log", help="do not append to the production log")] = False,
) -> None:
    """Score SOURCE with the champion (or --version); predictions to --out and the production log."""
    from pipeline.production.predictor import Predictor
    from pipeline.production.prodlog import ProductionLog
    from pipeline.production.score import score as run_score
    from pipeline.release.registry import Registry, champion_dir

    p = _load(params, set_)
    if version:
        name, model_dir = version, Registry(p.paths.registry).local(version, "onnx")
    else:
        name, model_dir = champion_dir(p.paths.registry)
    predictor = Predictor(model_dir, name, p.serve.model, **p.serve.input_limits())
    log = None if no_log else ProductionLog(p.paths.log, p.serve.flush_records, p.serve.flush_seconds)
    try:
        result = run_score(predictor, source, output, log, p.data, keep_inputs=p.serve.keep_inputs)
    finally:
        if log is not None:
            log.close()
    render.score_summary(out, result, None if no_log else p.paths.log)


@command()
def monitor(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Drift of the production log's window against the champion's reference (Evidently)."""
    from pipeline.production.monitor import run_monitor

    p = _load(params, set_)
    render.drift_summary(out, run_monitor(p, p.paths.monitor))


@command("label-queue")
def label_queue(n: Annotated[int, typer.Option("-n", min=1, max=100_000, help="how many examples to ask about")] = 100,
                hours: Annotated[float | None, typer.Option(min=0.001, help="only the last N hours of the log")] = None,
                params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Pick the logged production examples most worth labelling (uncertain, then varied) and write
    a Label Studio import file and a CSV into the inbox's to-label/ folder."""
    from pipeline.production.label_queue import run_label_queue

    p = _load(params, set_)
    render.queue_summary(out, run_label_queue(p, n, hours))


@command()
def ingest(
    batch: Annotated[Path | None, typer.Argument(help="a batch folder or file; default: every batch in paths.inbox")] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Validate new labelled batches alone and merge what passes into data.path (then `dvc add`)."""
    from flows.steps import ingest_all

    p = _load(params, set_)
    results = ingest_all(params, batch, set_)
    if not results:
        out.print(f"nothing to ingest in {p.paths.inbox}")
    for r in results:
        verdict = "[green]merged[/]" if r.accepted else "[bold red]rejected[/]"
        out.print(f"{r.batch}: {verdict}: {render.esc('; '.join(r.reasons))}"
                  + (f" (moved to {r.moved_to})" if r.moved_to else ""), soft_wrap=True)
    if any(r.accepted for r in results):
        out.print("new data merged: `graft run` retrains on it (the ingest flow does that by itself)")


@command()
def worker(params: ParamsOpt = Path("params.yaml"),
           pool: Annotated[str | None, typer.Option(help="run one work pool's flow runs from the server at "
                                                          "PREFECT_API_URL (after `graft deploy`)")] = None,
           limit: Annotated[int | None, typer.Option(help="--pool: at most this many flow runs at once")] = None) -> None:
    """Serve the training, monitoring and ingest deployments (flows/deployments.py) on their schedules
    from this machine; or, with --pool, be one of a team's workers."""
    from graft.worker import run_pool_worker, run_worker

    if pool:
        run_pool_worker(pool, params, console, limit)
    else:
        run_worker(params, console)


@command()
def deploy(params: ParamsOpt = Path("params.yaml")) -> None:
    """Register the deployments, with their schedules and work pools, on the Prefect server at PREFECT_API_URL."""
    from flows.deployments import register
    from graft.worker import require_server

    require_server("graft deploy registers on a Prefect server")
    _load(params, None)
    for r in register(str(params)):
        out.print(f"{r.name}: pool {r.pool}{' (created)' if r.pool_created else ''}, schedule {r.schedule}")
    out.print("start a worker for each pool where the project is installed: graft worker --pool NAME")


@command()
def init(
    directory: Annotated[Path, typer.Argument(help="the workspace folder (created when missing)")] = Path("."),
    data: Annotated[Path, typer.Option("--data", "-d", help="an image folder of class folders, or a CSV/TSV/Parquet/JSONL file")] = ...,  # type: ignore[assignment]
    model: Annotated[str | None, typer.Option(help="the one candidate model (timm or Hugging Face name); default: graft's for the modality")] = None,
    weights: Annotated[str | None, typer.Option(help="--model's weights: a .safetensors file, a model folder or package:<module>")] = None,
    text_column: Annotated[str | None, typer.Option(help="tables: the column of texts (default: detected)")] = None,
    label_column: Annotated[str | None, typer.Option(help="tables: the column of labels (default: detected)")] = None,
    force: Annotated[bool, typer.Option("--force", help="rewrite params.yaml and dvc.yaml of an existing workspace")] = False,
) -> None:
    """Make DIRECTORY a graft workspace for your data: params.yaml, dvc.yaml, DVC (and git when there is one)."""
    from graft.init import init_workspace

    if weights and not model:
        raise typer.BadParameter("--weights needs --model (the model those weights are for)")
    result = init_workspace(directory, data, force=force, model=model, weights=weights,
                            text_column=text_column, label_column=label_column)
    render.init_summary(out, result)


@command("demo-data")
def demo_data(out_dir: Annotated[Path, typer.Option("--out", help="where to write")] = Path("data/raw"),
              seed: int = 0) -> None:
    """Generate the demo datasets (images/ and tickets.csv), deterministically."""
    from pipeline.data.demo import make_demo_data

    for modality, path in make_demo_data(out_dir, seed=seed).items():
        out.print(f"{modality} demo data: {path}")


@command()
def demo() -> None:
    """Run every stage that exists on both demo datasets and say what each did."""
    from graft.demo import run_demo

    run_demo(out)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
