"""The whole rowcast stack on a real port, run in-process on an event loop of its own thread.

Playwright's sync API and pytest stay on the main thread; the server's loop runs beside them,
so a test can stop the server (notifier interruption) and start it again on the same port.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from aiohttp import web

from rowcast import embedded
from rowcast.settings import Settings

T = TypeVar("T")

START_TIMEOUT = 30.0

# An init script that blocks both live transports (a hostile proxy) while REST stays reachable:
# WebSocket and EventSource connect to addresses that never answer.
BLOCK_LIVE_TRANSPORTS = """
  const RealWS = window.WebSocket, RealES = window.EventSource;
  window.WebSocket = class extends RealWS {
    constructor(url, protocols) { super("ws://127.0.0.1:9/blocked", protocols); }
  };
  window.EventSource = class extends RealES {
    constructor(url, init) { super(new URL("/blocked-sse", location.href).href, init); }
  };
"""


class LiveServer:
    """`rowcast.server.create_app(settings)` behind an AppRunner + TCPSite, in a thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="rowcast-live-server", daemon=True)
        self.runner: web.AppRunner | None = None
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = START_TIMEOUT) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> None:
        self._call(self._start())

    def stop(self) -> None:
        """Shut the server down gracefully: sockets get 1001, streams end, the listener stops."""
        self._call(self._stop())

    def close(self) -> None:
        try:
            self.stop()
        finally:
            self._call(self._cancel_leftovers())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(START_TIMEOUT)
            self.loop.close()

    async def _cancel_leftovers(self) -> None:
        # Whatever a failed start left running (pool workers, listener), ended before the loop.
        current = asyncio.current_task()
        tasks = [task for task in asyncio.all_tasks() if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _start(self) -> None:
        from rowcast.server import create_app

        runner = web.AppRunner(create_app(self.settings), handle_signals=False, shutdown_timeout=5.0)
        self.runner = runner  # set first, so a failed start is still cleaned up
        await runner.setup()
        await web.TCPSite(runner, self.settings.host, self.settings.port).start()

    async def _stop(self) -> None:
        runner, self.runner = self.runner, None
        if runner is not None:
            await runner.cleanup()


def psql(db_url: str, sql: str) -> str:
    """Run SQL through the bundled psql, as a DBA would: the change reads "postgres via psql"."""
    result = subprocess.run(
        [str(embedded.binary("psql")), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-d", db_url, "-c", sql],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},  # no PGAPPNAME or PGOPTIONS from the environment
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"psql failed: {result.stderr.strip()}")
    return result.stdout.strip()
