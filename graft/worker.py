"""`graft worker`: the deployments of flows/deployments.py, served on their schedules.

With PREFECT_API_URL set, against that server. Without it, a local Prefect server is started
first (`prefect server start`, its database under PREFECT_HOME) and stopped on exit: Prefect's
per-process temporary server does not run the scheduler, so schedules would never fire there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

from rich.console import Console

from graft.local_service import free_port, wait_until_up


@contextmanager
def prefect_server(console: Console, timeout: float = 120) -> Iterator[str]:
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            start_new_session=True)  # Ctrl-C stops the runner first; the server after it
    try:
        wait_until_up(f"{url}/health", proc, timeout,
                      f"the local Prefect server did not start on port {port} within {timeout:.0f} s; "
                      "start one with `prefect server start` and set PREFECT_API_URL")
        console.print(f"local Prefect server: {url.removesuffix('/api')} (UI and API; stopped with the worker)")
        os.environ["PREFECT_API_URL"] = url
        yield url
    finally:
        if os.environ.get("PREFECT_API_URL") == url:
            del os.environ["PREFECT_API_URL"]
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def run_worker(params_file: Path, console: Console) -> None:
    from flows.deployments import main

    with prefect_server(console):
        try:
            main(str(params_file))
        except KeyboardInterrupt:
            console.print("worker stopped")


def require_server(what: str, hint: str = "") -> None:
    """GraftError unless PREFECT_API_URL names the Prefect server to talk to."""
    from pipeline.core.errors import GraftError

    if not os.environ.get("PREFECT_API_URL"):
        raise GraftError(f"{what}: set PREFECT_API_URL to its API, e.g. http://prefect.internal:4200/api{hint}")


def run_pool_worker(pool: str, params_file: Path, console: Console, limit: int | None = None) -> NoReturn:
    """`graft worker --pool NAME`: a Prefect process worker for one work pool of the server at
    PREFECT_API_URL, running each flow run in this folder (the workspace: GRAFT_WORKSPACE)."""
    from flows.common import WORKSPACE_ENV
    from pipeline.core.config import load_params

    require_server("graft worker --pool needs a Prefect server",
                   " (without --pool, graft worker serves every deployment from this machine alone)")
    p = load_params(params_file)  # a workspace with a readable params file, or a clear error now
    from flows.deployments import heartbeat_seconds

    # flow runs send heartbeats; `graft deploy`'s automation marks one crashed when they stop
    beat = str(heartbeat_seconds(p.schedule.crashed_after_seconds))
    env = {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": beat, **os.environ, WORKSPACE_ENV: str(Path.cwd())}
    cmd = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process",
           *(["--limit", str(limit)] if limit else [])]
    console.print(f"worker for pool {pool} on {os.environ['PREFECT_API_URL']}; workspace {Path.cwd()}")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, cmd, env)  # the worker replaces this process: signals reach it directly
