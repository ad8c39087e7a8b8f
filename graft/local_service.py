"""A local HTTP service started as a subprocess: a free port, and waiting until it answers."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request

from pipeline.core.errors import GraftError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, proc: subprocess.Popen, timeout: float, failure: str) -> bytes:
    """The body of the first answer from `url`; GraftError(failure) if `proc` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.read()
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise GraftError(failure) from None
            time.sleep(0.5)
