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
