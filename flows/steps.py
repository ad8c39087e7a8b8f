"""Running a stage, the whole pipeline, and ingest, without Prefect: what `graft` and the flows call.

A stage runs either through DVC (`dvc repro --single-item NAME`: skipped when unchanged, its
versions recorded in dvc.lock) or in-process; both write the same outputs, dvclive curves
included. `dvc()` is the one DVC wrapper: a failure DVC may not repeat (its lock held, a remote
unreachable) is `DvcBusy`, an `OSError` the flows retry; any other is `DvcFailed`, a
`GraftError` that fails at once.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flows.tracking import DvcLiveLog
from pipeline.core.artifacts import LIVE, RUN_SUMMARY, Workspace, require
from pipeline.core.config import load_params
from pipeline.core.errors import GraftError
from pipeline.core.lineage import tracking_file
from pipeline.core.params import Params
from pipeline.data.ingest import BatchResult, ingest_batch, pending
from pipeline.fingerprint import check_upstream, record
from pipeline.production.prodlog import kept_input
from pipeline.production.realised import record_labels
from pipeline.release.gate import GateResult
from pipeline.release.registry import Registry
from pipeline.stages import NAMES, STAGE
from pipeline.workspace import uses_resolved, write_resolved

Reporter = Callable[[str, Any, Workspace], None]  # (stage, its result, the workspace) after an in-process stage
EpochLog = Callable[[int, dict[str, float]], None]

# DVC output that says "try again later", not "this is broken"
_TRANSIENT = re.compile(r"Unable to acquire lock|Connection (refused|reset|aborted)|timed? ?out|"
                        r"Temporary failure|Network is unreachable|Service Unavailable|Too Many Requests",
                        re.IGNORECASE)


class DvcBusy(OSError):
    """DVC failed for a reason that may pass: its lock is held, the network or remote is down."""


class DvcFailed(GraftError):
    """DVC failed for a reason a retry will not change (a broken dvc.yaml, a failing stage)."""


@dataclass(frozen=True)
class RunSummary:
    gate: GateResult
    via: str  # "dvc repro" | "in-process"
    ran: bool  # False when DVC found nothing changed: `gate` is the last run's decision
    path: Path

    def to_dict(self) -> dict[str, Any]:
        return {**self.gate.to_dict(), "via": self.via, "ran": self.ran, "summary_path": str(self.path)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSummary:
        """Back from to_dict() (a flow's return value)."""
        return cls(GateResult.from_dict(d), d["via"], d["ran"], Path(d["summary_path"]))


def venv_env() -> dict[str, str]:
    """The environment for dvc and its stage commands: they call `graft`, the one beside this
    interpreter, whether or not the venv is activated."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def dvc(*args: str, cwd: str | Path | None = None, echo: bool = False) -> str:
    """Run `dvc ARGS`; returns its output. `echo`: stream it to stderr as it comes (long stages)."""
    proc = subprocess.Popen([sys.executable, "-m", "dvc", *args], cwd=cwd, env=venv_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1)
    tail: deque[str] = deque(maxlen=400)
    assert proc.stdout is not None
    for line in proc.stdout:
        tail.append(line)
        if echo:
            sys.stderr.write(line)
    output = "".join(tail)
    if proc.wait():
        what = f"dvc {' '.join(args)} failed (exit {proc.returncode})"
        detail = output.strip()[-2000:] if not echo else "its output is above"
        if _TRANSIENT.search(output):
            raise DvcBusy(f"{what}; this may pass, try again: {detail}")
        raise DvcFailed(f"{what}: {detail}")
    return output


def dvc_workspace(cwd: str | Path = ".") -> bool:
    return (Path(cwd) / ".dvc").is_dir() and (Path(cwd) / "dvc.yaml").exists()


def via_dvc(params_file: str | Path, overrides: list[str] | None = None) -> bool:
    """Stages run through DVC for the DVC workspace's own params.yaml without --set."""
    return (not overrides and dvc_workspace()
            and Path(params_file).resolve() == Path("params.yaml").resolve())


def dvc_up_to_date() -> bool:
    """One `dvc status` for the whole pipeline: when nothing changed, no stage needs a process."""
    return json.loads(dvc("status", "--json") or "{}") == {}


def run_stage(name: str, params: Params, ws: Workspace, *, dvc_mode: bool = False, resume: bool = False,
              on_epoch: EpochLog | None = None, echo: bool = False) -> Any:
    """One stage: `dvc repro --single-item NAME` (returns None), or in-process (returns its result).

    In-process training logs every epoch to dvclive (ws.train/live), as `graft train` does."""
    if name not in STAGE:
        raise GraftError(f"no stage '{name}'; the stages are {', '.join(NAMES)}")
    if dvc_mode:
        dvc("repro", "--single-item", name, echo=echo)
        return None
    check_upstream(name, params, ws)  # StaleInput: nothing is run and nothing written
    try:
        result = _run_in_process(name, params, ws, resume, on_epoch)
    except BaseException as exc:
        if name != "gate":
            record(name, params, ws, error=exc)
        raise
    params = with_inferred_labels(name, params, result)
    if name != "gate":  # nothing reads the gate's folder
        record(name, params, ws)
    return result


def with_inferred_labels(name: str, params: Params, result: Any) -> Params:
    """After validate inferred the labels (and froze them into the params file), the params the
    next stages run with, and check their upstream against, carry them too."""
    if name != "validate" or params.validate_.labels or result is None:
        return params
    return params.model_copy(update={"validate_": params.validate_.model_copy(update={"labels": result.labels})})


def _run_in_process(name: str, params: Params, ws: Workspace, resume: bool, on_epoch: EpochLog | None) -> Any:
    run = STAGE[name].load()
    if name != "train":
        return run(params, ws)
    live = DvcLiveLog(ws.train / LIVE, resume=resume)
    try:
        def log(epoch: int, row: dict[str, float]) -> None:
            live(epoch, row)
            if on_epoch:
                on_epoch(epoch, row)

        return run(params, ws, resume=resume, log=log)
    finally:
        live.close()


def read_summary(ws: Workspace, via: str, ran: bool) -> RunSummary:
    path = require(ws.gate / RUN_SUMMARY, "gate")
    return RunSummary(GateResult.from_dict(json.loads(path.read_text(encoding="utf-8"))), via, ran, path)


def run_pipeline(params_file: str | Path, overrides: list[str] | None = None, *, report: Reporter | None = None,
                 on_epoch: EpochLog | None = None, say: Callable[[str], None] = print) -> RunSummary:
    """Every stage in order under the registry lock (one run at a time), through DVC for the
    workspace's params.yaml, else in-process."""
    p = load_params(params_file, overrides)
    ws = Workspace.from_params(p, params_file)
    with Registry(p.paths.registry).lock():  # a second run is refused, not interleaved
        if via_dvc(params_file, overrides):
            say("dvc repro (unchanged stages are skipped)")
            summary_path = ws.gate / RUN_SUMMARY
            before = summary_path.stat().st_mtime_ns if summary_path.exists() else None
            if uses_resolved():  # a `graft init` workspace: dvc.yaml reads params.yaml resolved
                write_resolved(params_file)
            dvc("repro", echo=True)
            after = summary_path.stat().st_mtime_ns if summary_path.exists() else None
            return read_summary(ws, "dvc repro", ran=after != before)
        say(f"running the stages in-process ({params_file} is not the DVC workspace's params.yaml"
            f"{' or --set was given' if overrides else ''})")
        for name in NAMES:
            result = run_stage(name, p, ws, on_epoch=on_epoch)
            p = with_inferred_labels(name, p, result)
            if report:
                report(name, result, ws)
        return read_summary(ws, "in-process", ran=True)


def ingest_all(params_file: str | Path, batch: str | Path | None = None,
               overrides: list[str] | None = None) -> list[BatchResult]:
    """Ingest `batch`, or every pending inbox batch; `dvc add` the data once if anything merged."""
    p = load_params(params_file, overrides)
    batches = [batch] if batch else pending(p.paths.inbox)
    results = [ingest_batch(p, b, p.paths.inbox, lambda digest: kept_input(p.paths.log, digest)) for b in batches]
    for r in results:  # labels of inputs the champion may have served: realised accuracy
        if r.labelled is not None:
            record_labels(p.paths.monitor, r.labelled, r.batch)
    if any(r.accepted for r in results):
        tracked = tracking_file(p.data.path)
        if tracked is not None:
            dvc("add", str(tracked.with_suffix("")))  # a new data version in the .dvc file
    return results


def push(data_path: str | Path) -> str:
    """`dvc push` of the data and the pipeline's outputs, when there is something and somewhere to push."""
    if tracking_file(data_path) is None:
        return "data not DVC-tracked: nothing pushed"
    if not dvc_workspace():
        return "not a DVC workspace: nothing pushed"
    if not dvc("remote", "list").strip():
        return "no DVC remote configured: nothing pushed (see infra/dvc-remote.md)"
    lines = dvc("push").strip().splitlines()
    return lines[-1] if lines else "pushed"
