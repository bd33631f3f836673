"""Typed keys for what the notifier keeps on the aiohttp application."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from rowcast.notifier.access import ConnectionLimiter, LongPollLimiter
    from rowcast.notifier.listener import Listener
    from rowcast.notifier.service import Notifier

NOTIFIER: web.AppKey[Notifier] = web.AppKey("rowcast_notifier")
LISTENER: web.AppKey[Listener] = web.AppKey("rowcast_listener")
ACCESS: web.AppKey[ConnectionLimiter] = web.AppKey("rowcast_access")
LONGPOLLS: web.AppKey[LongPollLimiter] = web.AppKey("rowcast_longpolls")
# A plain set: every handler removes its socket in `finally` (a WeakSet costs more per entry).
SOCKETS: web.AppKey[set[web.WebSocketResponse]] = web.AppKey("rowcast_sockets")
STREAMS: web.AppKey[set[asyncio.Event]] = web.AppKey("rowcast_streams")
# Set by rowcast.workers: which of the processes sharing the port answers (absent: the only one).
WORKER: web.AppKey[int] = web.AppKey("rowcast_worker")
