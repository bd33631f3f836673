"""The Postgres servers and databases the tests run on."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pytest_postgresql.janitor import DatabaseJanitor

from rowcast.embedded import EmbeddedPostgres


@dataclass
class Server:
    """A Postgres server the tests may create databases on."""

    host: str
    port: int
    user: str
    password: str | None
    maintenance_db: str
    embedded: EmbeddedPostgres | None = None

    @classmethod
    def from_dsn(cls, dsn: str) -> Server:
        info = conninfo_to_dict(dsn)
        return cls(
            host=str(info.get("host") or "127.0.0.1"),
            port=int(info.get("port") or 5432),
            user=str(info.get("user") or "postgres"),
            password=str(info["password"]) if info.get("password") else None,
            maintenance_db=str(info.get("dbname") or "postgres"),
        )

    @classmethod
    def start_embedded(cls, data_dir: Path) -> Server:
        server = EmbeddedPostgres(data_dir)
        server.start()
        return cls(
            host="127.0.0.1",
            port=server.port,
            user="postgres",
            password=server.password(),  # the embedded server refuses password-less logins
            maintenance_db="postgres",
            embedded=server,
        )

    def url(self, dbname: str) -> str:
        auth = f"{self.user}:{self.password}" if self.password else self.user
        return f"postgresql://{auth}@{self.host}:{self.port}/{dbname}"

    def janitor(self, dbname: str, template: str | None = None, as_template: bool = False) -> DatabaseJanitor:
        return DatabaseJanitor(
            user=self.user,
            host=self.host,
            port=self.port,
            password=self.password,
            dbname=dbname,
            template_dbname=template,
            maintenance_dbname=self.maintenance_db,
            as_template=as_template,
        )

    def version(self) -> int:
        with psycopg.connect(self.url(self.maintenance_db)) as conn:
            return int(conn.info.server_version)

    @contextmanager
    def database(self, template: str | None) -> Iterator[str]:
        """A fresh database (cloned from `template`), dropped afterwards; yields its URL."""
        name = f"rowcast_test_{uuid.uuid4().hex[:12]}"
        janitor = self.janitor(name, template=template)
        janitor.init()
        try:
            yield self.url(name)
        finally:
            janitor.drop()


def test_server(tmp_root: Path) -> Server:
    dsn = os.environ.get("ROWCAST_TEST_DSN")
    if dsn:
        return Server.from_dsn(dsn)
    return Server.start_embedded(tmp_root / "embedded-pg")


ROLE_PASSWORD = "rowcast-test-role"  # for login roles tests create (the embedded server asks for one)


def as_role(url: str, role: str, password: str = ROLE_PASSWORD) -> str:
    """`url`'s server and database, logged in as another role (a URL, as DATABASE_URL takes)."""
    info = conninfo_to_dict(url)
    return f"postgresql://{role}:{password}@{info.get('host', '127.0.0.1')}:{info.get('port', 5432)}/{info['dbname']}"


def install_roles(url: str) -> None:
    """rowcast's cluster-wide roles: the explicit step a DBA takes once per server."""
    from rowcast.db import roles

    with psycopg.connect(url, autocommit=True) as conn:
        roles.install(conn)


def install_with_demo(url: str) -> None:
    """What `rowcast up` does to a database: roles, migrations, then the demo tables (which tests
    rely on), each as its own explicit step."""
    from rowcast.db import demo, migrate

    install_roles(url)
    migrate.upgrade(url)
    with psycopg.connect(url, autocommit=True) as conn:
        demo.install(conn)
