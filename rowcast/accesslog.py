"""An access log that never prints query strings (tokens travel in ?token= for EventSource)."""

from __future__ import annotations

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger


class RedactingAccessLogger(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %s %s %.3fs',
            request.remote,
            request.method,
            request.path,  # the path only: ?token=... and filters stay out of logs
            response.status,
            response.body_length,
            time,
        )
