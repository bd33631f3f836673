"""Serving one aiohttp app in the foreground: the port check, the banner, signals and clean-up."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
from collections.abc import Callable
from typing import Any

from aiohttp import web

from rowcast.accesslog import RedactingAccessLogger, redact_server_log
from rowcast.errors import RowcastError
from rowcast.settings import Settings


def check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise RowcastError(
                f"port {port} on {host} is already in use: stop what runs there or pick another with --port"
            ) from None


def run_app(
    app: Any,
    settings: Settings,
    banner: Callable[[], None] | None = None,
    ready: Callable[[], None] | None = None,
) -> int:
    """Serve until SIGINT or SIGTERM; sockets get 1001 and clean-up runs.

    `ready` makes this a worker of rowcast.workers: its siblings hold the port too (SO_REUSEPORT),
    so the port is not checked, and `ready()` tells the supervisor once it serves.
    """
    if ready is None:
        check_port(settings.host, settings.port)
    if banner is not None:
        banner()
    redact_server_log()

    # Fan-out allocates many short-lived objects: with the default thresholds the cyclic GC took
    # 10-13% of the notifier's CPU under load (bench/results/profile-*). Start-up objects are
    # frozen out of collection and young collections run less often.
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    loop = _event_loop(settings)

    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        print=None if ready is None else lambda *_: ready(),
        shutdown_timeout=5,
        handle_signals=True,
        access_log_class=RedactingAccessLogger,
        # aiohttp closes a connection still waiting for a request's headers when its keep-alive
        # timer fires, and that timer starts at connect: it is the header timeout (slowloris).
        keepalive_timeout=settings.header_timeout,
        reuse_port=ready is not None or None,
        loop=loop,
    )
    return 0


def _event_loop(settings: Settings) -> asyncio.AbstractEventLoop | None:
    """uvloop when asked for (an optional extra: bench/results/uvloop.md says what it buys)."""
    if settings.event_loop != "uvloop":
        return None
    try:
        import uvloop  # optional: rowcast[uvloop]
    except ImportError:
        raise RowcastError("ROWCAST_EVENT_LOOP=uvloop needs uvloop: pip install 'rowcast[uvloop]'") from None
    logging.getLogger("rowcast").info("event loop: uvloop")
    return uvloop.new_event_loop()
