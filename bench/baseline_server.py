"""The floor for this stack: one LISTEN connection, each NOTIFY payload sent to every WebSocket.

No subscriptions, matching, filtering, scopes, checkpoints, bounded queues or resume: just
aiohttp + psycopg doing the least a fan-out server can do. `python -m bench.fanout` runs the
same load against it and against the notifier.

    python -m bench.baseline_server --database-url URL --port 8090 [--channel bench_rows]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator

import psycopg
from aiohttp import WSCloseCode, web
from psycopg import sql

from bench.common import HOST, raise_nofile

SOCKETS = web.AppKey("sockets", weakref.WeakSet[web.WebSocketResponse])
LISTENING = web.AppKey("listening", asyncio.Event)


async def websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(compress=False)
    await ws.prepare(request)
    request.app[SOCKETS].add(ws)
    try:
        async for _ in ws:  # nothing to read; keeps the connection open until the client leaves
            pass
    finally:
        request.app[SOCKETS].discard(ws)
    return ws


async def healthz(request: web.Request) -> web.Response:
    ok = request.app[LISTENING].is_set()
    return web.json_response({"listening": ok}, status=200 if ok else 503)


async def forward(app: web.Application, url: str, channel: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        app[LISTENING].set()
        async for note in conn.notifies():
            for ws in tuple(app[SOCKETS]):
                if not ws.closed:
                    # send_str only waits when this socket's buffer is past its high-water mark.
                    with contextlib.suppress(ConnectionError):
                        await ws.send_str(note.payload)


def create_app(url: str, channel: str = "rowcast") -> web.Application:
    app = web.Application()
    app[SOCKETS] = weakref.WeakSet()
    app[LISTENING] = asyncio.Event()

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(forward(app, url, channel), name="baseline-forward")
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def close_all(app: web.Application) -> None:
        await asyncio.gather(
            *(ws.close(code=WSCloseCode.GOING_AWAY) for ws in tuple(app[SOCKETS])), return_exceptions=True
        )

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(close_all)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--port", type=int, default=8090)
    # bench.fanout uses a plain row_to_json trigger's channel: rowcast's own NOTIFY is an empty doorbell.
    parser.add_argument("--channel", default="rowcast")
    args = parser.parse_args()
    raise_nofile()
    web.run_app(
        create_app(args.database_url, args.channel), host=HOST, port=args.port, print=None, shutdown_timeout=5
    )


if __name__ == "__main__":
    main()
