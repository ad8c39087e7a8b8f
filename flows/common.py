"""What the flows share: retry policy, DVC calls, Prefect artifacts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from graft.run import venv_env
from pipeline.errors import GraftError
from pipeline.registry import RegistryBusy

# Transient: the machine, the network, a busy registry. Everything graft reports about the data,
# the params or the model (GraftError) fails the same way on a retry, so it is not retried; a
# rejected gate is not an error at all.
TRANSIENT = (OSError, TimeoutError, ConnectionError, MemoryError, RegistryBusy)
RETRY = {"retries": 2, "retry_delay_seconds": [5, 30]}


def transient_only(_task: Any, _run: Any, state: Any) -> bool:
    """Prefect retry_condition_fn: retry only transient failures."""
    try:
        state.result()
    except RegistryBusy:
        return True
    except GraftError:
        return False
    except TRANSIENT:
        return True
    except Exception:
        return False
    return False


def dvc(*args: str, check: bool = True, cwd: str | Path | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], env=venv_env(), cwd=cwd, capture_output=True,
                          text=True)
    if check and proc.returncode:
        # dvc's own failures (remote unreachable, lock held) are worth a retry: OSError
        raise OSError(f"dvc {' '.join(args)} failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc


def dvc_workspace() -> bool:
    return Path(".dvc").is_dir()


def tracking_file(data_path: str | Path) -> Path | None:
    """The .dvc file that versions data_path (data/raw.dvc for data/raw/images), if any."""
    path = Path(data_path)
    for candidate in [path, *path.parents]:
        if candidate.name and Path(f"{candidate}.dvc").exists():
            return Path(f"{candidate}.dvc")
    return None


def artifact_key(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")[:60]


def markdown(key: str, text: str, description: str) -> None:
    create_markdown_artifact(text, key=artifact_key(key), description=description)


def table(key: str, rows: list[dict[str, Any]], description: str) -> None:
    if rows:
        create_table_artifact(rows, key=artifact_key(key), description=description)
