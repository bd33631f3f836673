"""Settings from the environment, with CLI overrides layered on top."""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import platformdirs
from psycopg import ProgrammingError
from psycopg.conninfo import conninfo_to_dict

from rowcast import names
from rowcast.errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str) -> float:
    """Seconds from '250ms', '30s', '5m', '24h', '7d' or a bare number of seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"not a duration: {text!r} (use e.g. 500ms, 30s, 5m, 24h, 7d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


_PASSWORD = re.compile(r"^([^:/]*://[^:@/]*):[^@/]*@")
_POSTGRES = "it must start with postgresql:// or postgres://"


def redact(url: str) -> str:
    """The URL with its password, if any, replaced by ***."""
    return _PASSWORD.sub(r"\1:***@", url)


def check_database_url(url: str, name: str = "DATABASE_URL") -> None:
    """Refuse, in one line naming the problem, a DATABASE_URL libpq could not use.
    '' stands for the libpq PG* variables and is always accepted."""
    problem = _url_problem(url) if url else None
    if problem:
        raise ConfigError(f"{name} {redact(url)!r}: {problem}")


def _url_problem(url: str) -> str | None:
    scheme, sep, _ = url.partition("://")
    if not sep:
        return f"not a URL: {_POSTGRES}"
    if scheme not in ("postgresql", "postgres"):
        return f"scheme {scheme}:// is not Postgres: {_POSTGRES}"
    try:
        params = conninfo_to_dict(url)
    except ProgrammingError as exc:  # libpq's own words
        return str(exc).strip()
    bad = [p for p in str(params.get("port") or "").split(",") if p and not p.isdigit()]
    return f"port {bad[0]} is not a number" if bad else None


@dataclasses.dataclass(frozen=True)
class Setting:
    env: str
    help: str


def setting(
    env: str,
    help: str,
    *,
    default: Any = dataclasses.MISSING,
    factory: Callable[[], Any] | None = None,
    parse: Callable[[str], Any] = str,
) -> Any:
    """Declare a setting once: its field's type and default, its environment variable, how its
    text is read, and its help (rendered into the README's configuration table)."""
    metadata = {"setting": Setting(env, help), "parse": parse}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _table_list(value: str) -> tuple[str, ...]:
    """Comma-separated table names; a comma inside a double-quoted part belongs to the name."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return tuple(p.strip() for p in parts if p.strip())


def _flag(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def log_level(environ: Mapping[str, str] | None = None) -> str:
    """ROWCAST_LOG_LEVEL, read before the rest so that a bad setting can be logged."""
    env = os.environ if environ is None else environ
    return (env.get(ENV["log_level"].env) or Settings.log_level).upper()


def default_workers() -> int:
    """The cores this process may run on: one notifier process per core uses them all.

    Only on Linux, whose SO_REUSEPORT spreads new connections over the processes sharing a port;
    elsewhere one socket of the group may take them all, so the default stays one process.
    """
    if not sys.platform.startswith("linux"):
        return 1
    count = getattr(os, "process_cpu_count", None)  # Python 3.13+: honours CPU affinity
    if count is not None:
        return int(count() or 1)
    return len(os.sched_getaffinity(0)) or 1


def default_data_dir() -> Path:
    """The user data dir; as root /var/lib/rowcast, which the embedded server's own system user can
    reach without rowcast loosening the permissions of /root."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/rowcast")
    return Path(platformdirs.user_data_dir("rowcast"))


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every setting, declared once (see `setting`); `from_env` reads them, flags override."""

    database_url: str | None = setting(
        "DATABASE_URL",
        "Postgres URL; unset (and no PG* vars): embedded Postgres",
        default=None,
    )
    listen_url: str | None = setting(
        "ROWCAST_LISTEN_URL",
        "Postgres URL of the notifier's connections (LISTEN, log reads, replays, presence): "
        "direct to Postgres, never a transaction pooler (default: DATABASE_URL; see Behind PgBouncer)",
        default=None,
    )
    read_url: str | None = setting(
        "ROWCAST_READ_URL",
        "a hot standby of the notifier's primary (ROWCAST_LISTEN_URL, else DATABASE_URL) it reads the "
        "change log's rows from (window reads, replays, long-poll pages, catalog); snapshots, LISTEN, "
        "presence and writes stay on the primary (default: unset, everything on the primary; see "
        "Reading from a standby)",
        default=None,
    )
    data_dir: Path = setting(
        "ROWCAST_DATA_DIR",
        "where the embedded Postgres keeps its data (default: user data dir; /var/lib/rowcast as root)",
        factory=default_data_dir,
        parse=Path,
    )
    host: str = setting("ROWCAST_HOST", "interface to bind (default 127.0.0.1)", default="127.0.0.1")
    port: int = setting("ROWCAST_PORT", "HTTP port (default 8080)", default=8080, parse=int)
    auth: str = setting(
        "ROWCAST_AUTH",
        "open | token (default: open for `up`, token otherwise)",
        default="token",
    )
    jwt_secret: str | None = setting(
        "ROWCAST_JWT_SECRET",
        "HS256 secret for tokens (required in token mode)",
        default=None,
    )
    jwt_audience: str = setting(
        "ROWCAST_JWT_AUDIENCE",
        "expected `aud` claim (default rowcast)",
        default="rowcast",
    )
    allowed_origins: tuple[str, ...] = setting(
        "ROWCAST_ALLOWED_ORIGINS",
        "comma-separated Origins allowed on /ws and /sse (default: same host)",
        default=(),
        parse=_split,
    )
    cors_origins: tuple[str, ...] = setting(
        "ROWCAST_CORS_ORIGINS",
        "comma-separated Origins given CORS headers",
        default=(),
        parse=_split,
    )
    retention: float = setting(
        "ROWCAST_RETENTION",
        "how long the change log keeps events; the notifier prunes every 5 min (default 24h)",
        default=24 * 3600.0,
        parse=parse_duration,
    )
    poll_interval: float = setting(
        "ROWCAST_POLL_INTERVAL",
        "the notifier reads the change log at least this often, wake-up or not (default 250ms)",
        default=0.25,
        parse=parse_duration,
    )
    client_checkpoint_interval: float = setting(
        "ROWCAST_CLIENT_CHECKPOINT_INTERVAL",
        "at most one checkpoint frame per client per interval (default 1s)",
        default=1.0,
        parse=parse_duration,
    )
    heartbeat: float = setting(
        "ROWCAST_HEARTBEAT",
        "WebSocket ping / SSE keep-alive interval (default 15s)",
        default=15.0,
        parse=parse_duration,
    )
    queue_messages: int = setting(
        "ROWCAST_QUEUE_MESSAGES",
        "per-client queue bound, messages (default 1000)",
        default=1000,
        parse=int,
    )
    queue_bytes: int = setting(
        "ROWCAST_QUEUE_BYTES",
        "per-client queue bound, bytes (default 4194304)",
        default=4 * 1024 * 1024,
        parse=int,
    )
    max_frame_bytes: int = setting(
        "ROWCAST_MAX_FRAME_BYTES",
        "largest client frame (default 65536)",
        default=64 * 1024,
        parse=int,
    )
    max_subscriptions: int = setting(
        "ROWCAST_MAX_SUBSCRIPTIONS",
        "subscriptions per socket (default 64)",
        default=64,
        parse=int,
    )
    max_client_rate: float = setting(
        "ROWCAST_MAX_CLIENT_RATE",
        "client frames per second per socket (default 50)",
        default=50.0,
        parse=float,
    )
    max_presence_rows: int = setting(
        "ROWCAST_MAX_PRESENCE_ROWS",
        "rows one socket may announce presence on at once (default 16)",
        default=16,
        parse=int,
    )
    presence_timeout: float = setting(
        "ROWCAST_PRESENCE_TIMEOUT",
        "presence outlives a silent WebSocket (pinged meanwhile) or a dead notifier by at most this (default 3s)",
        default=3.0,
        parse=parse_duration,
    )
    max_connections_per_subject: int = setting(
        "ROWCAST_MAX_CONNECTIONS_PER_SUBJECT",
        "open sockets per token subject (default 32)",
        default=32,
        parse=int,
    )
    max_reads_per_subject: int = setting(
        "ROWCAST_MAX_READS_PER_SUBJECT",
        "change-log page reads (replays, long-poll) running at once per token subject; more queue (default 4)",
        default=4,
        parse=int,
    )
    read_timeout: float = setting(
        "ROWCAST_READ_TIMEOUT",
        "statement_timeout of one replay or long-poll page read: how long it may hold a pooled connection (default 10s)",
        default=10.0,
        parse=parse_duration,
    )
    max_longpolls_per_subject: int = setting(
        "ROWCAST_MAX_LONGPOLLS_PER_SUBJECT",
        "long-polls in flight per token subject (default 4)",
        default=4,
        parse=int,
    )
    max_longpolls: int = setting(
        "ROWCAST_MAX_LONGPOLLS",
        "long-polls in flight in all (default 256)",
        default=256,
        parse=int,
    )
    longpoll_scan_budget: int = setting(
        "ROWCAST_LONGPOLL_SCAN_BUDGET",
        "change-log rows one long-poll answer may read, whole transactions, before it answers (default 20000)",
        default=20000,
        parse=int,
    )
    max_body_bytes: int = setting(
        "ROWCAST_MAX_BODY_BYTES",
        "largest REST request body (default 1048576)",
        default=1024 * 1024,
        parse=int,
    )
    max_page_size: int = setting(
        "ROWCAST_MAX_PAGE_SIZE",
        "largest REST page (default 500)",
        default=500,
        parse=int,
    )
    api_tables: tuple[str, ...] = setting(
        "ROWCAST_API_TABLES",
        'comma-separated tables the REST API serves besides the demo ones, e.g. orders,sales."Q1" (Postgres name rules; `rowcast api --table` adds more)',
        default=(),
        parse=_table_list,
    )
    api_tables_file: Path | None = setting(
        "ROWCAST_API_TABLES_FILE",
        "a JSON file declaring served tables and, per table, its filter, sort and read_only columns",
        default=None,
        parse=Path,
    )
    wake_mode: str | None = setting(
        "ROWCAST_WAKE_MODE",
        "notify | coalesced: applied to the database by `rowcast migrate` and `up` when set",
        default=None,
    )
    log_level: str = setting("ROWCAST_LOG_LEVEL", "DEBUG | INFO | WARNING (default INFO)", default="INFO")
    startup_wait: float = setting(
        "ROWCAST_STARTUP_WAIT",
        "how long the notifier waits for its first LISTEN before serving (default 10s)",
        default=10.0,
        parse=parse_duration,
    )
    keep_db: bool = setting(
        "ROWCAST_KEEP_DB",
        "1: `rowcast up` leaves the embedded Postgres running when it stops",
        default=False,
        parse=_flag,
    )
    allowed_hosts: tuple[str, ...] = setting(
        "ROWCAST_ALLOWED_HOSTS",
        "comma-separated Host names (host or host:port, * for any) the servers answer; default: the loopback names with the port on a loopback bind, see Security",
        default=(),
        parse=_split,
    )
    trust_forwarded: bool = setting(
        "ROWCAST_TRUST_FORWARDED",
        "1: trust X-Forwarded-Host from a reverse proxy for the Host and Origin checks (default 0)",
        default=False,
        parse=_flag,
    )
    header_timeout: float = setting(
        "ROWCAST_HEADER_TIMEOUT",
        "a connection must send a request's full headers within this long (default 10s)",
        default=10.0,
        parse=parse_duration,
    )
    workers: int = setting(
        "ROWCAST_WORKERS",
        "processes serving the port for `notifier` and `up` (default: the CPU cores on Linux, else 1)",
        factory=default_workers,
        parse=int,
    )
    event_loop: str = setting(
        "ROWCAST_EVENT_LOOP",
        "the servers' event loop: `asyncio` (default) or `uvloop` (pip install 'rowcast[uvloop]')",
        default="asyncio",
    )

    def replace(self, **changes: Any) -> Settings:
        """A copy with the given fields changed (None values are ignored, as from argparse)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def __post_init__(self) -> None:
        if self.event_loop not in ("asyncio", "uvloop"):
            raise ConfigError(f"ROWCAST_EVENT_LOOP must be asyncio or uvloop, not {self.event_loop!r}")
        if self.database_url is not None:
            check_database_url(self.database_url)
        if self.read_url is not None:
            if not self.read_url:
                raise ConfigError("ROWCAST_READ_URL must be a postgresql:// URL (unset it to read from the primary)")
            check_database_url(self.read_url, "ROWCAST_READ_URL")
        if self.listen_url is not None:
            check_database_url(self.listen_url, "ROWCAST_LISTEN_URL")
            if self.database_url is None:
                raise ConfigError(
                    "ROWCAST_LISTEN_URL is set but DATABASE_URL is not: the embedded Postgres needs no "
                    "second URL (set DATABASE_URL too, or unset ROWCAST_LISTEN_URL)"
                )
        if self.auth not in ("open", "token"):
            raise ConfigError(f"ROWCAST_AUTH must be 'open' or 'token', not {self.auth!r}")
        if self.wake_mode not in (None, "notify", "coalesced"):
            raise ConfigError(f"ROWCAST_WAKE_MODE must be 'notify' or 'coalesced', not {self.wake_mode!r}")
        if self.auth == "token" and not self.jwt_secret:
            raise ConfigError("token auth needs ROWCAST_JWT_SECRET (or run with ROWCAST_AUTH=open)")
        if not 0.001 <= self.poll_interval <= 60:
            raise ConfigError(f"ROWCAST_POLL_INTERVAL must be between 1ms and 60s, not {self.poll_interval}s")
        if not 0 < self.port < 65536:
            raise ConfigError(f"port {self.port} is out of range")
        if self.header_timeout <= 0:
            raise ConfigError("ROWCAST_HEADER_TIMEOUT must be more than 0")
        if self.workers < 1:
            raise ConfigError(f"--workers (ROWCAST_WORKERS) must be 1 or more, not {self.workers}")
        if not 0.5 <= self.presence_timeout <= 300:
            raise ConfigError(
                f"ROWCAST_PRESENCE_TIMEOUT must be between 500ms and 300s, not {self.presence_timeout}s"
            )
        if self.read_timeout < 0.001:
            raise ConfigError("ROWCAST_READ_TIMEOUT must be at least 1ms (0 would mean no limit)")
        for name in (
            "max_reads_per_subject",
            "max_longpolls_per_subject",
            "max_longpolls",
            "longpoll_scan_budget",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{ENV[name].env} must be at least 1")

        for table in self.api_tables:
            try:
                names.parse(table)
            except names.BadName as exc:
                raise ConfigError(f"table to serve (ROWCAST_API_TABLES, --table): {exc}") from None

    @property
    def notifier_url(self) -> str | None:
        """The notifier's URL: every connection it opens needs a session of its own (LISTEN) or
        runs the same statements many times a second (prepared by psycopg), so none of them may
        go through a transaction pooler. ROWCAST_LISTEN_URL, else DATABASE_URL."""
        return self.listen_url if self.listen_url is not None else self.database_url

    @property
    def uses_embedded(self) -> bool:
        return self.database_url is None


# Derived from the declarations above: field name -> (environment variable, help); field -> parser.
ENV: dict[str, Setting] = {f.name: f.metadata["setting"] for f in dataclasses.fields(Settings)}
_CONVERT: dict[str, Callable[[str], Any]] = {
    f.name: f.metadata["parse"] for f in dataclasses.fields(Settings)
}


def from_env(
    environ: Mapping[str, str] | None = None, *, defaults: Mapping[str, Any] | None = None, **overrides: Any
) -> Settings:
    """Settings from environment variables over a command's `defaults`; keyword overrides (e.g.
    CLI flags) win when not None."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = dict(defaults or {})
    for name, setting in ENV.items():
        raw = env.get(setting.env)
        if raw is None or raw == "":
            continue
        try:
            values[name] = _CONVERT[name](raw)
        except ValueError as exc:
            raise ConfigError(f"{setting.env}={raw!r} is invalid: {exc}") from None
    if "database_url" not in values and any(env.get(k) for k in ("PGHOST", "PGDATABASE", "PGSERVICE")):
        # libpq reads the PG* variables itself when given an empty conninfo.
        values["database_url"] = ""
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings(**values)
    except TypeError as exc:
        raise ConfigError(str(exc)) from None
