"""The model registry: versioned models and a champion pointer that moves atomically, on a
local disk or on object storage (paths.registry: a path or an s3:// gs:// file:// URL).

    registry/
      .lock                    one training run at a time (see lock())
      champion/000003.json     the pointer, one object per move: {"version": "v0003", "history": [...],
                               "moved_at": ..., "by": host and pid}
      champion.json            a copy of the latest pointer, for people and tools to read
      versions/v0001/.claim    the name, taken by an exclusive create before anything is written
      versions/v0001/          model/ onnx/ metrics.json evaluation.json export.json gate.json card.md,
                               then status.json last: a version without it is incomplete, never listed

Every write that must not race is an exclusive create (pipeline/core/storage.py): a version
name is claimed by creating its .claim, and a promotion or rollback creates the next pointer
object; when another writer created it first the move is refused (RegistryConflict), never
lost or interleaved. A kill -9 at any moment leaves the old or the new pointer and versions
that are complete or invisible. A version's status (blessed, rejected, needs_approval) lives in
its status.json; which one is champion lives only in the pointer.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline.core.errors import GraftError, ModelNotFound
from pipeline.core.storage import Store

STATUSES = ("blessed", "rejected", "needs_approval")
_LOCK_ENV = "GRAFT_REGISTRY_LOCK"  # "<registry root>|<holder token>", inherited by child processes


class RegistryBusy(GraftError):
    """Another graft process holds the registry lock."""


class RegistryError(GraftError):
    """A registry operation that cannot be done (unknown version, nothing to roll back to)."""


@dataclass(frozen=True)
class Version:
    name: str
    path: str  # where it is stored (a folder or a URL): for messages; Registry.local() gives files
    status: str
    created: str
    summary: dict[str, Any]


class RegistryConflict(RegistryError):
    """Another writer moved the pointer or took the version name first."""


def cache_root() -> Path:
    """Where versions of a remote registry are downloaded (GRAFT_CACHE_DIR, else ~/.cache/graft)."""
    return Path(os.environ.get("GRAFT_CACHE_DIR") or Path.home() / ".cache" / "graft")


STALE_LOCK_HOURS = 12.0  # a remote lock older than this is taken over: its holder is presumed dead


class Registry:
    def __init__(self, root: str | Path):
        self.store = Store(root)
        self.root: str | Path = Path(root) if self.store.is_local else str(root)

    def where(self, *parts: str) -> str:
        return self.store.show(*parts)

    # ---------------------------------------------------------------- locking

    @contextmanager
    def lock(self) -> Iterator[Registry]:
        """Hold the registry for one training run at a time; a second gets RegistryBusy at once.

        On a local disk, fcntl.flock: the kernel drops it when the holder dies. On object
        storage, a lock object created exclusively with its holder's host, pid and time, deleted
        on exit; one left by a dead holder is taken over after STALE_LOCK_HOURS (and named in the
        RegistryBusy message before that). A team's training runs are also limited to one at a
        time by their Prefect deployment's concurrency limit.

        The holder passes a token to its child processes (GRAFT_REGISTRY_LOCK), so a stage that
        `graft run` starts through `dvc repro` (the gate) works under its parent's lock."""
        if not self.store.is_local:
            with self._remote_lock():
                yield self
            return
        root = Path(self.store.root)
        (root / "versions").mkdir(parents=True, exist_ok=True)
        fh = open(root / ".lock", "a+")  # noqa: SIM115 - held across the yield, closed below
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip()
            fh.close()
            if holder and os.environ.get(_LOCK_ENV) == f"{root.resolve()}|{holder}":
                yield self  # held on this process's behalf by its parent (or itself)
                return
            raise RegistryBusy(f"another graft run (pid {holder.split(' ')[0] or 'unknown'}) is using {root}; "
                               f"wait for it to finish, or stop it if it is stuck (its lock is {root / '.lock'})"
                               ) from None
        token = f"{os.getpid()} {uuid.uuid4().hex}"
        previous = os.environ.get(_LOCK_ENV)
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(token)
            fh.flush()
            os.environ[_LOCK_ENV] = f"{root.resolve()}|{token}"
            yield self
        finally:
            _restore(previous)
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()

    @contextmanager
    def _remote_lock(self) -> Iterator[None]:
        token = f"{socket.gethostname()} {os.getpid()} {uuid.uuid4().hex}"
        held_here = os.environ.get(_LOCK_ENV, "").split("|", 1)
        if held_here[0] == self.store.location and self._holder().get("token") == held_here[-1]:
            yield  # held on this process's behalf by its parent
            return
        body = json.dumps({"token": token, "host": socket.gethostname(), "pid": os.getpid(),
                           "since": time.time()}).encode()
        if not self.store.create(body, ".lock"):
            holder = self._holder()
            age_h = (time.time() - float(holder.get("since", time.time()))) / 3600
            if age_h < STALE_LOCK_HOURS or not self._take_over(body):
                raise RegistryBusy(
                    f"another graft run (host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, for "
                    f"{age_h:.1f} h) is using {self.where()}; wait for it to finish, or delete "
                    f"{self.where('.lock')} if that process is gone (it is taken over after {STALE_LOCK_HOURS:g} h)")
        previous = os.environ.get(_LOCK_ENV)
        os.environ[_LOCK_ENV] = f"{self.store.location}|{token}"
        try:
            yield
        finally:
            _restore(previous)
            self.store.delete(".lock")

    def _holder(self) -> dict[str, Any]:
        """What the remote lock object says of its holder ({} when there is none or it is unreadable)."""
        try:
            return self.store.read_json(".lock")
        except (FileNotFoundError, ValueError):
            return {}

    def _take_over(self, body: bytes) -> bool:
        self.store.delete(".lock")
        return self.store.create(body, ".lock")

    # ---------------------------------------------------------------- reading

    def _pointer(self) -> dict[str, Any]:
        moves = [n for n in self.store.names("champion") if n.endswith(".json")]
        if moves:
            return {**self.store.read_json("champion", moves[-1]), "move": int(moves[-1].removesuffix(".json"))}
        if self.store.exists("champion.json"):  # a registry from before the pointer objects
            return {**self.store.read_json("champion.json"), "move": 0}
        return {"version": None, "history": [], "move": 0}

    def champion(self) -> str | None:
        return self._pointer()["version"]

    def _numbered(self) -> list[str]:
        """Every claimed version name (complete or not), in order."""
        return [n for n in self.store.names("versions") if n.startswith("v") and n[1:].isdigit()]

    def _read(self, name: str) -> Version | None:
        """The version, or None while it has no status.json (unknown, or still being written)."""
        try:
            status = self.store.read_json("versions", name, "status.json")
        except FileNotFoundError:
            return None
        return Version(name, self.where("versions", name), status["status"], status["created"],
                       status.get("summary", {}))

    def get(self, name: str) -> Version:
        version = self._read(name)
        if version is None:
            known = ", ".join(v.name for v in self.list()) or "none"
            raise RegistryError(f"no model version '{name}' in {self.where('versions')} (versions: {known})")
        return version

    def list(self) -> list[Version]:
        return [v for v in map(self._read, self._numbered()) if v is not None]

    def local(self, name: str, part: str = "") -> Path:
        """A version's files on this machine (all of them, or one `part`: "onnx", "card.md"): its
        folder, or a cached download from a remote registry (versions never change once
        complete, apart from status.json)."""
        self.get(name)
        parts = ("versions", name, *([part] if part else []))
        if self.store.is_local:
            return Path(self.store.key(*parts))
        url_hash = hashlib.sha256(self.store.location.encode()).hexdigest()[:12]
        return self.store.download(cache_root() / "registry" / url_hash / name / (part or "all"), *parts)

    def next_name(self) -> str:
        """The next free version number (a claim makes it this writer's)."""
        return f"v{max((int(n[1:]) for n in self._numbered()), default=0) + 1:04d}"

    # ---------------------------------------------------------------- writing

    def register(self, files: dict[str, Path], status: str, summary: dict[str, Any], card: str) -> Version:
        """Copy `files` (name in the version -> source file or folder) into a new version."""
        if status not in STATUSES:
            raise RegistryError(f"unknown status {status!r}")
        for _ in range(100):
            name = self.next_name()
            if self.store.create(f"{os.getpid()} {socket.gethostname()}".encode(), "versions", name, ".claim"):
                break
        else:
            raise RegistryConflict(f"could not claim a version name in {self.where('versions')}")
        for dest, src in files.items():
            self.store.upload(src, "versions", name, dest)
        self.store.put(card.encode("utf-8"), "versions", name, "card.md")
        self.store.put_json({"status": status, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "summary": summary},
                            "versions", name, "status.json")  # last: the version is complete
        return self.get(name)

    def set_status(self, name: str, status: str) -> None:
        v = self.get(name)
        self.store.put_json({"status": status, "created": v.created, "summary": v.summary},
                            "versions", name, "status.json")

    def _move(self, pointer: dict[str, Any], version: str, history: list[str]) -> None:
        """Create the next pointer object; refused when another move created it first."""
        value = {"version": version, "history": history,
                 "moved_at": datetime.now(timezone.utc).isoformat(), "by": f"{socket.gethostname()} pid {os.getpid()}"}
        if not self.store.create(json.dumps(value, indent=2).encode(), "champion", f"{pointer['move'] + 1:06d}.json"):
            raise RegistryConflict(f"the champion of {self.where()} moved while this change was being made "
                                   f"(now {self.champion()}); nothing was changed: check `graft models` and retry")
        self.store.put_json(value, "champion.json")  # the readable copy

    def promote(self, name: str, allow: tuple[str, ...] = ("blessed",)) -> None:
        """Make `name` the champion in one atomic pointer move; the old one is kept."""
        v = self.get(name)
        if v.status not in allow:
            raise RegistryError(f"{name} is {v.status}; only a blessed version becomes champion "
                                f"(see {v.path}/gate.json for why)")
        pointer = self._pointer()
        history = [*pointer["history"], pointer["version"]] if pointer["version"] not in (None, name) else pointer["history"]
        self._move(pointer, name, history)

    def rollback(self) -> str:
        """The previous champion becomes champion again; returns its name."""
        pointer = self._pointer()
        if not pointer["history"]:
            raise RegistryError(f"nothing to roll back to: {pointer['version'] or 'no champion'} has no predecessor")
        previous = pointer["history"][-1]
        self._move(pointer, previous, pointer["history"][:-1])
        return previous


def _restore(previous: str | None) -> None:
    if previous is None:
        os.environ.pop(_LOCK_ENV, None)
    else:
        os.environ[_LOCK_ENV] = previous


def champion_dir(registry_root: str | Path) -> tuple[str, Path]:
    """The champion's name and exported-model folder (downloaded when the registry is remote)."""
    registry = Registry(registry_root)
    name = registry.champion()
    if name is None:
        raise ModelNotFound(f"no champion in {registry.where()}: run `graft run` (or `graft promote VERSION`) first")
    return name, registry.local(name, "onnx")
