"""The model registry: versioned models and an atomically replaced champion pointer.

    registry/
      .lock                 held by one graft process at a time (fcntl), holder's pid inside
      champion.json         {"version": "v0003", "history": ["v0001", "v0002"]}; replaced atomically
      versions/v0001/       complete or absent: built in versions/.tmp-*, then renamed
        model/ onnx/ metrics.json evaluation.json export.json gate.json card.md status.json

A version's status (blessed, rejected, needs_approval) lives in its status.json; which one is
champion lives only in champion.json. A kill -9 at any moment leaves either the old or the new
pointer and only complete versions; leftover temp folders are swept when the lock is next taken.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.errors import GraftError, ModelNotFound
from pipeline.core.io import write_json_atomic

STATUSES = ("blessed", "rejected", "needs_approval")
_LOCK_ENV = "GRAFT_REGISTRY_LOCK"  # "<registry root>|<holder token>", inherited by child processes


class RegistryBusy(GraftError):
    """Another graft process holds the registry lock."""


class RegistryError(GraftError):
    """A registry operation that cannot be done (unknown version, nothing to roll back to)."""


@dataclass(frozen=True)
class Version:
    name: str
    path: Path
    status: str
    created: str
    summary: dict[str, Any]


class Registry:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.versions = self.root / "versions"

    # ---------------------------------------------------------------- locking

    @contextmanager
    def lock(self) -> Iterator[Registry]:
        """Hold the registry for one process at a time; a second gets RegistryBusy at once.

        The holder passes a token to its child processes (GRAFT_REGISTRY_LOCK), so a stage that
        `graft run` starts through `dvc repro` (the gate) works under its parent's lock."""
        self.versions.mkdir(parents=True, exist_ok=True)
        fh = open(self.root / ".lock", "a+")  # noqa: SIM115 - held across the yield, closed below
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip()
            fh.close()
            if holder and os.environ.get(_LOCK_ENV) == f"{self.root.resolve()}|{holder}":
                yield self  # held on this process's behalf by its parent (or itself)
                return
            raise RegistryBusy(f"another graft run (pid {holder.split(' ')[0] or 'unknown'}) is using {self.root}; "
                               f"wait for it to finish, or stop it if it is stuck (its lock is {self.root / '.lock'})"
                               ) from None
        token = f"{os.getpid()} {uuid.uuid4().hex}"
        previous = os.environ.get(_LOCK_ENV)
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(token)
            fh.flush()
            os.environ[_LOCK_ENV] = f"{self.root.resolve()}|{token}"
            for stale in self.versions.glob(".tmp-*"):  # left by a process killed mid-write
                shutil.rmtree(stale, ignore_errors=True)
            yield self
        finally:
            if previous is None:
                os.environ.pop(_LOCK_ENV, None)
            else:
                os.environ[_LOCK_ENV] = previous
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()

    # ---------------------------------------------------------------- reading

    def champion(self) -> str | None:
        path = self.root / "champion.json"
        return json.loads(path.read_text())["version"] if path.exists() else None

    def _pointer(self) -> dict[str, Any]:
        path = self.root / "champion.json"
        return json.loads(path.read_text()) if path.exists() else {"version": None, "history": []}

    def get(self, name: str) -> Version:
        path = self.versions / name
        if not (path / "status.json").exists():
            known = ", ".join(v.name for v in self.list()) or "none"
            raise RegistryError(f"no model version '{name}' in {self.versions} (versions: {known})")
        status = json.loads((path / "status.json").read_text())
        return Version(name, path, status["status"], status["created"], status.get("summary", {}))

    def list(self) -> list[Version]:
        if not self.versions.exists():
            return []
        names = sorted(p.name for p in self.versions.iterdir() if p.name.startswith("v") and p.is_dir())
        return [self.get(n) for n in names]

    def next_name(self) -> str:
        """The name the next registered version gets (stable while the lock is held)."""
        return f"v{max((int(v.name[1:]) for v in self.list()), default=0) + 1:04d}"

    # ---------------------------------------------------------------- writing (hold the lock)

    def register(self, files: dict[str, Path], status: str, summary: dict[str, Any], card: str) -> Version:
        """Copy `files` (name in the version -> source file or folder) into a new version."""
        if status not in STATUSES:
            raise RegistryError(f"unknown status {status!r}")
        name = self.next_name()
        tmp = self.versions / f".tmp-{name}-{os.getpid()}"
        tmp.mkdir(parents=True)
        for dest, src in files.items():
            if src.is_dir():
                shutil.copytree(src, tmp / dest)
            else:
                (tmp / dest).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, tmp / dest)
        (tmp / "card.md").write_text(card, encoding="utf-8")
        write_json_atomic(tmp / "status.json", {"status": status, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                                "summary": summary})
        os.replace(tmp, self.versions / name)  # the version appears complete, or not at all
        return self.get(name)

    def set_status(self, name: str, status: str) -> None:
        v = self.get(name)
        write_json_atomic(v.path / "status.json", {"status": status, "created": v.created, "summary": v.summary})

    def promote(self, name: str, allow: tuple[str, ...] = ("blessed",)) -> None:
        """Make `name` the champion in one atomic pointer replacement; the old one is kept."""
        v = self.get(name)
        if v.status not in allow:
            raise RegistryError(f"{name} is {v.status}; only a blessed version becomes champion "
                                f"(see {v.path / 'gate.json'} for why)")
        pointer = self._pointer()
        history = [*pointer["history"], pointer["version"]] if pointer["version"] not in (None, name) else pointer["history"]
        write_json_atomic(self.root / "champion.json", {"version": name, "history": history})

    def rollback(self) -> str:
        """The previous champion becomes champion again; returns its name."""
        pointer = self._pointer()
        if not pointer["history"]:
            raise RegistryError(f"nothing to roll back to: {pointer['version'] or 'no champion'} has no predecessor")
        previous = pointer["history"][-1]
        write_json_atomic(self.root / "champion.json", {"version": previous, "history": pointer["history"][:-1]})
        return previous


def champion_dir(registry_root: str | Path) -> tuple[str, Path]:
    """The champion's name and exported-model folder."""
    registry = Registry(registry_root)
    name = registry.champion()
    if name is None:
        raise ModelNotFound(f"no champion in {registry.root}: run `graft run` (or `graft promote VERSION`) first")
    return name, registry.get(name).path / "onnx"
