"""An access log that never prints query strings (tokens travel in ?token= for EventSource)."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError


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


class MalformedRequestFilter(logging.Filter):
    """aiohttp logs a request it cannot parse with the bytes it choked on: an over-long request
    line or header quotes its first ~100 bytes, which may be `?token=` or `Bearer` and a token.
    Such records keep who and why, never the bytes."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg = "refused a malformed request from %s: %s (%s); its bytes are not logged"
            record.args = (remote, type(exc).__name__, exc.code)
            record.exc_info = None
            record.exc_text = None
        return True


def redact_server_log() -> None:
    """Install MalformedRequestFilter on aiohttp's server logger (once)."""
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedRequestFilter) for f in logger.filters):
        logger.addFilter(MalformedRequestFilter())
