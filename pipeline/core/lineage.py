"""Where a model came from: the DVC-tracked data version and the code's git commit."""

from __future__ import annotations

import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class DataVersion:
    tracked_by: str  # the .dvc file
    md5: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.md5} ({self.tracked_by})"


def tracking_file(data_path: str | Path) -> Path | None:
    """The .dvc file that versions data_path (data/raw.dvc for data/raw/images), if any."""
    path = Path(data_path)
    for candidate in [path, *path.parents]:
        if candidate.name and Path(f"{candidate}.dvc").exists():
            return Path(f"{candidate}.dvc")
    return None


def data_version(data_path: str | Path) -> DataVersion | None:
    """The DVC hash of the data at data_path, read from the .dvc file that tracks it."""
    dvc_file = tracking_file(data_path)
    if dvc_file is None:
        return None
    outs = (yaml.safe_load(dvc_file.read_text(encoding="utf-8")) or {}).get("outs") or [{}]
    md5 = outs[0].get("md5")
    return DataVersion(str(dvc_file), md5) if md5 else None


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def shown_path(value: Any, base: Path | None = None) -> Any:
    """A path as a card may show it: relative inside the workspace, `…/<folder>/<name>` outside
    it (no machine's layout, user or home folder); anything that is not an absolute path as it is."""
    if not isinstance(value, str) or "://" in value or not value.startswith(("/", "~")):
        return value
    path = Path(value).expanduser()
    base = (base or Path.cwd()).resolve()
    try:
        return path.resolve().relative_to(base).as_posix()
    except (ValueError, OSError, RuntimeError):
        return "…/" + "/".join(path.parts[-2:])


def shown_paths(value: Any, base: Path | None = None) -> Any:
    """`shown_path` over every string of a nested structure (params as a card prints them)."""
    if isinstance(value, dict):
        return {k: shown_paths(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [shown_paths(v, base) for v in value]
    return shown_path(value, base)
