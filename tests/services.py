"""Services a test starts and stops itself, on loopback only: PostgreSQL (Debian's `postgresql`
package; `.ci/run` installs it when missing), a Prefect server on it, and an S3-compatible
server (moto's server mode, from PyPI with the dev extras).

PostgreSQL refuses to run as root, so as root (CI containers) initdb and the server run as the
`postgres` user the package creates, in a temporary folder handed to it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from graft.local_service import free_port, wait_until_up


def postgres_bin() -> Path | None:
    """The folder of initdb and pg_ctl: on PATH, or Debian's /usr/lib/postgresql/<major>/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return versions[-1].parent if versions else None


def _as_owner() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


@contextmanager
def postgres(database: str = "prefect") -> Iterator[str]:
    """A PostgreSQL server in a new temporary folder (one the `postgres` user can reach, which
    pytest's are not) on a free loopback port; yields its SQLAlchemy asyncpg URL, then stops
    the server and removes the folder."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL is not installed: `apt-get install postgresql` (.ci/run does it)")
    root = Path(tempfile.mkdtemp(prefix="graft-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", free_port()

    def run(*args: str) -> None:
        proc = subprocess.run([*_as_owner(), *args], capture_output=True, text=True, timeout=120)
        if proc.returncode:
            raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stdout}{proc.stderr}")

    run(str(bin_dir / "initdb"), "-D", str(data), "-U", "graft", "--auth=trust", "-E", "UTF8", "--no-sync")
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=100"
    run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60", "-o", options,
        "start")
    try:
        run(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "graft", database)
        url = f"postgresql+asyncpg://graft@127.0.0.1:{port}/{database}"
        _RESTART[url] = lambda: run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w",
                                    "-t", "60", "-m", "fast", "-o", options, "restart")
        yield url
    finally:
        try:
            run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(root, ignore_errors=True)


_RESTART: dict[str, object] = {}


def restart_postgres(url: str) -> float:
    """Restart the server `postgres()` started at `url` (every connection dropped); its seconds."""
    import time

    start = time.perf_counter()
    _RESTART[url]()
    return time.perf_counter() - start


def psql(url: str, sql: str) -> str:
    """One query through psql against the server at `url`; its unaligned output."""
    bin_dir = postgres_bin()
    address = url.split("@", 1)[1]
    host_port, database = address.split("/", 1)
    host, port = host_port.split(":")
    psql_bin = bin_dir / "psql" if bin_dir and (bin_dir / "psql").exists() else Path(shutil.which("psql") or "psql")
    out = subprocess.run([str(psql_bin), "-h", host, "-p", port, "-U", "graft", "-d", database, "-At", "-c", sql],
                         check=True, capture_output=True, text=True, timeout=60)
    return out.stdout.strip()


@contextmanager
def prefect_server(home: Path, database_url: str, auth: str | None = None) -> Iterator[str]:
    """`prefect server start` on a free loopback port with its database at `database_url` (and, with
    `auth`, Prefect's basic auth: PREFECT_SERVER_API_AUTH_STRING); yields the API URL."""
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_DATABASE_CONNECTION_URL": database_url,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false",
           **({"PREFECT_SERVER_API_AUTH_STRING": auth} if auth else {})}
    env.pop("PREFECT_API_URL", None)
    log = open(home / "server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                             str(port)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        wait_until_up(f"{url}/health", proc, 180, f"the Prefect server did not start; see {home / 'server.log'}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@contextmanager
def s3_server() -> Iterator[str]:
    """moto's S3 server on a free loopback port; yields its endpoint URL (AWS_ENDPOINT_URL)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/moto-api/", proc, 60, "moto's S3 server did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


S3_ENV = {"AWS_ACCESS_KEY_ID": "graft-test", "AWS_SECRET_ACCESS_KEY": "graft-test", "AWS_DEFAULT_REGION": "us-east-1"}
