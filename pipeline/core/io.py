"""Atomic artifact writes: a reader never sees a half-written file, a crash leaves the old one."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_atomic(target: Path, write: Callable[[Path], None]) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        umask = os.umask(0)
        os.umask(umask)
        # after the write: mkstemp's 0600 would make artifacts private to one user, and some
        # writers (safetensors) recreate the file
        os.chmod(tmp_path, 0o666 & ~umask)
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return target


def copy_atomic(src: str | Path, target: str | Path) -> Path:
    """Copy a file so that `target` appears complete or not at all."""
    import shutil

    return write_atomic(Path(target), lambda p: shutil.copyfile(src, p))


def write_text_atomic(target: str | Path, text: str) -> Path:
    return write_atomic(Path(target), lambda p: p.write_text(text, encoding="utf-8"))


def write_json_atomic(target: str | Path, data: Any) -> Path:
    return write_text_atomic(target, json.dumps(data, indent=2, default=str) + "\n")


def write_parquet_atomic(target: str | Path, frame: Any) -> Path:
    """Write a pandas DataFrame as Parquet via a temp file and rename."""
    return write_atomic(Path(target), lambda p: frame.to_parquet(p, index=False))
