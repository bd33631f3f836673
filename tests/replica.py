"""A primary and a streaming hot standby made from it with `pg_basebackup -R`, for the tests and
bench/standby.py. From the embedded wheel's binaries (18) or Debian's (15)."""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from rowcast import embedded

DEBIAN_15 = Path("/usr/lib/postgresql/15/bin")
BIN_DIRS = {"18-embedded": Path(embedded.POSTGRES_BIN_PATH), "15-debian": DEBIAN_15}
PROGRAMS = ("initdb", "pg_ctl", "postgres", "pg_basebackup")


def missing(bin_dir: Path) -> str | None:
    """Why this bin dir cannot make a replica, or None."""
    absent = [p for p in PROGRAMS if not (bin_dir / p).exists()]
    return f"{', '.join(absent)} not in {bin_dir}" if absent else None


def _owner() -> dict[str, Any]:
    """As root, Postgres runs as the embedded server's system user."""
    if os.geteuid() != 0:
        return {}
    embedded._ensure_system_user()
    entry = pwd.getpwnam(embedded.SYSTEM_USER)
    return {"user": entry.pw_uid, "group": entry.pw_gid}


@dataclass
class Replica:
    bin_dir: Path
    root: Path
    password: str
    primary_port: int
    standby_port: int

    def url(self, port: int, dbname: str) -> str:
        return f"postgresql://postgres:{self.password}@127.0.0.1:{port}/{dbname}"

    def primary(self, dbname: str = "postgres") -> str:
        return self.url(self.primary_port, dbname)

    def standby(self, dbname: str = "postgres") -> str:
        return self.url(self.standby_port, dbname)

    def version(self) -> int:
        with psycopg.connect(self.primary()) as conn:
            return int(conn.info.server_version)

    def wait_replayed(self, timeout: float = 30.0) -> None:
        """Until the standby has replayed everything the primary has written so far."""
        with psycopg.connect(self.primary(), autocommit=True) as p:
            lsn = p.execute("SELECT pg_current_wal_flush_lsn()::text").fetchone()[0]  # type: ignore[index]
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.standby(), autocommit=True) as s:
            while not s.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)).fetchone()[0]:  # type: ignore[index]
                if time.monotonic() > deadline:
                    raise TimeoutError(f"standby did not replay up to {lsn}")
                time.sleep(0.01)


def _run(args: list[str], owner: dict[str, Any], env: dict[str, str] | None = None) -> None:
    result = subprocess.run(  # type: ignore[call-overload]
        args, capture_output=True, text=True, check=False, env=env, stdin=subprocess.DEVNULL, **owner
    )
    if result.returncode != 0:
        raise RuntimeError(f"{Path(args[0]).name} failed: {(result.stderr or result.stdout).strip()[-800:]}")


@contextlib.contextmanager
def replica(bin_dir: Path) -> Iterator[Replica]:
    """Start a primary (wal_level=replica) and a hot standby streaming from it; stop both after."""
    owner = _owner()
    root = Path(tempfile.mkdtemp(prefix="rct-replica-", dir="/tmp"))
    root.chmod(0o755)
    password = secrets.token_hex(16)
    primary_dir, standby_dir = root / "primary", root / "standby"
    started: list[Path] = []
    try:
        primary_dir.mkdir(mode=0o700)
        pwfile = root / "pw"
        pwfile.write_text(password + "\n")
        if owner:
            os.chown(primary_dir, owner["user"], owner["group"])
            os.chown(pwfile, owner["user"], owner["group"])
        initdb = [str(bin_dir / "initdb"), "-D", str(primary_dir), "-U", "postgres", "--auth=scram-sha-256"]
        _run([*initdb, f"--pwfile={pwfile}", "--encoding=UTF8", "--locale=C", "--no-sync"], owner)
        pwfile.unlink()
        primary_port, standby_port = embedded.free_port(), embedded.free_port()
        with (primary_dir / "postgresql.conf").open("a") as conf:
            conf.write(
                "\nwal_level = replica\nmax_wal_senders = 5\nhot_standby = on\nmax_connections = 100\n"
                "listen_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
                "max_prepared_transactions = 16\n"
            )
        (root / "primary.log").touch()
        (root / "standby.log").touch()
        if owner:
            os.chown(root / "primary.log", owner["user"], owner["group"])
            os.chown(root / "standby.log", owner["user"], owner["group"])
        pg_ctl = str(bin_dir / "pg_ctl")
        _run(
            [
                pg_ctl,
                "-D",
                str(primary_dir),
                "-l",
                str(root / "primary.log"),
                "-o",
                f"-p {primary_port}",
                "-w",
                "start",
            ],
            owner,
        )
        started.append(primary_dir)
        standby_dir.mkdir(mode=0o700)
        if owner:
            os.chown(standby_dir, owner["user"], owner["group"])
        env = {**os.environ, "PGPASSWORD": password}
        backup = [
            str(bin_dir / "pg_basebackup"),
            "-h",
            "127.0.0.1",
            "-p",
            str(primary_port),
            "-U",
            "postgres",
        ]
        _run([*backup, "-D", str(standby_dir), "-R", "-X", "stream", "-c", "fast"], owner, env)
        _run(
            [
                pg_ctl,
                "-D",
                str(standby_dir),
                "-l",
                str(root / "standby.log"),
                "-o",
                f"-p {standby_port}",
                "-w",
                "start",
            ],
            owner,
        )
        started.append(standby_dir)
        made = Replica(bin_dir, root, password, primary_port, standby_port)
        with psycopg.connect(made.standby()) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        yield made
    finally:
        for data in reversed(started):
            subprocess.run(  # type: ignore[call-overload]
                [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                capture_output=True,
                check=False,
                stdin=subprocess.DEVNULL,
                **owner,
            )
        shutil.rmtree(root, ignore_errors=True)
