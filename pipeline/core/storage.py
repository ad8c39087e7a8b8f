"""Where what outlives a run is kept (the registry, the production log): a local path or a URL
(s3://, gs://, file://, memory://), reached through fsspec.

Two writes are all the rest needs. `put` writes a whole object at once (a rename on a local
disk, one PUT on object storage), so a reader never sees half of it. `create` writes an object
only if none exists (a hard link of a complete temporary file locally; If-None-Match: * on S3,
a generation precondition on GCS) and says whether it did: the registry builds its exclusive
version names and its atomic promotion on it, with no lock server.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from pipeline.core.errors import GraftError
from pipeline.core.io import write_atomic
from pipeline.core.params_data import CREDENTIALS_REFUSED, has_credentials


def is_url(location: str | Path) -> bool:
    return "://" in str(location)


class Store:
    def __init__(self, location: str | Path):
        if has_credentials(str(location)):
            raise GraftError(CREDENTIALS_REFUSED)  # the message never repeats the URL
        self.location = str(location)
        self.fs, root = fsspec.core.url_to_fs(self.location)
        self.is_local = isinstance(self.fs, LocalFileSystem)
        self.root = str(Path(root)) if self.is_local else root.rstrip("/")

    def key(self, *parts: str) -> str:
        return str(PurePosixPath(self.root, *parts)) if not self.is_local else str(Path(self.root, *parts))

    def show(self, *parts: str) -> str:
        """The location as the user wrote it, for messages."""
        return "/".join([self.location.rstrip("/"), *parts]) if parts else self.location

    # ---------------------------------------------------------------- reading

    def _fresh(self) -> None:
        """Object-store clients cache listings; other machines write here, so never trust them."""
        if not self.is_local:
            self.fs.invalidate_cache()

    def exists(self, *parts: str) -> bool:
        self._fresh()
        return self.fs.exists(self.key(*parts))

    def read_bytes(self, *parts: str) -> bytes:
        return self.fs.cat_file(self.key(*parts))

    def read_json(self, *parts: str) -> Any:
        return json.loads(self.read_bytes(*parts))

    def names(self, *parts: str) -> list[str]:
        """The entries directly under a prefix (files and folders), sorted; [] when there is none."""
        self._fresh()
        try:
            entries = self.fs.ls(self.key(*parts), detail=False)
        except FileNotFoundError:
            return []
        return sorted(PurePosixPath(str(e).rstrip("/")).name for e in entries)

    def glob(self, pattern: str) -> list[str]:
        """Keys (full paths for this filesystem) matching `pattern` under the root."""
        self._fresh()
        return sorted(self.fs.glob(self.key(pattern)))

    def open(self, key: str, mode: str = "rb") -> Any:
        return self.fs.open(key, mode)

    # ---------------------------------------------------------------- writing

    def put(self, data: bytes, *parts: str) -> None:
        """Write one object whole (replacing any)."""
        if self.is_local:
            write_atomic(Path(self.key(*parts)), lambda p: p.write_bytes(data))
        else:
            self.fs.pipe_file(self.key(*parts), data)

    def put_json(self, value: Any, *parts: str) -> None:
        self.put((json.dumps(value, indent=2, default=str) + "\n").encode(), *parts)

    def create(self, data: bytes, *parts: str) -> bool:
        """Write one object only if it does not exist; False when it already did."""
        target = self.key(*parts)
        if not self.is_local:
            try:
                self.fs.pipe_file(target, data, mode="create")
            except FileExistsError:
                return False
            return True
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=Path(target).parent, prefix=".create-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.link(tmp, target)  # atomic and exclusive: the object appears complete, or not at all
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)

    def delete(self, *parts: str, recursive: bool = False) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.key(*parts), recursive=recursive)

    def upload(self, source: Path, *parts: str) -> None:
        """A local file or folder to the store, under `parts`."""
        if source.is_dir():
            for f in sorted(p for p in source.rglob("*") if p.is_file()):
                self.upload(f, *parts, *f.relative_to(source).parts)
        elif self.is_local:
            Path(self.key(*parts)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, self.key(*parts))
        else:
            self.fs.put_file(str(source), self.key(*parts))

    def download(self, target: Path, *parts: str) -> Path:
        """The file or folder under `parts` into `target`, complete or absent: fetched beside it,
        then renamed (two processes fetching the same thing both end with one whole copy)."""
        if target.exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
        try:
            prefix = PurePosixPath(self.key(*parts).rstrip("/"))
            if self.fs.isfile(str(prefix)):
                self.fs.get_file(str(prefix), str(tmp / "file"))
                os.rename(tmp / "file", target)
                return target
            for key in self.fs.find(str(prefix)):
                rel = PurePosixPath(str(key)).relative_to(prefix)
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(key, str(tmp / rel))
            os.rename(tmp, target)
        except OSError:
            if not target.exists():
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target
