"""What every subcommand shares: its parser, its database and serving flags, and its settings."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from rowcast.settings import Settings, from_env

Handler = Callable[[argparse.Namespace], int]


def settings_from_args(args: argparse.Namespace, **defaults: Any) -> Settings:
    """The command's defaults, then the environment over them, then its flags over both."""
    flags = {
        name: getattr(args, name, None)
        for name in ("host", "port", "database_url", "listen_url", "data_dir", "auth")
    }
    return from_env(defaults=defaults, **flags)


class Parser(argparse.ArgumentParser):
    """Usage errors in one line: what is wrong, and where the help is."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def add_db_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url", dest="database_url", help="Postgres URL (default: $DATABASE_URL or embedded)"
    )
    parser.add_argument(
        "--data-dir", dest="data_dir", type=Path, help="embedded Postgres data dir ($ROWCAST_DATA_DIR)"
    )


def serve_flags(parser: argparse.ArgumentParser, default_port: int = 8080) -> None:
    parser.add_argument("--host", help="interface to bind ($ROWCAST_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help=f"port ($ROWCAST_PORT, default {default_port})")
    add_db_flags(parser)
    parser.add_argument("--auth", choices=["open", "token"], help="auth mode ($ROWCAST_AUTH)")


def command(
    sub: Any, name: str, handler: Handler, summary: str, details: str = ""
) -> argparse.ArgumentParser:
    """A subcommand whose --help says what it does (and, in `details`, its exit status)."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=summary, description=f"{summary[0].upper()}{summary[1:]}. {details}".strip()
    )
    parser.set_defaults(handler=handler, parser=parser)
    return parser


def listen_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen-url",
        dest="listen_url",
        help="Postgres URL of the notifier's connections, direct to Postgres when DATABASE_URL is a "
        "transaction pooler ($ROWCAST_LISTEN_URL, default: the database URL)",
    )
