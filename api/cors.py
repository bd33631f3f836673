"""CORS for /api: headers only for the configured origins (none by default)."""

from __future__ import annotations

from collections.abc import Collection

from aiohttp import web

ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE"
ALLOW_HEADERS = "Authorization, Content-Type, If-Match, X-Request-ID, X-Actor"
EXPOSE_HEADERS = "ETag, Location, X-Request-ID"
MAX_AGE = "600"


def is_preflight(request: web.Request, origins: Collection[str]) -> bool:
    return (
        request.method == "OPTIONS"
        and request.headers.get("Origin") in origins
        and "Access-Control-Request-Method" in request.headers
    )


def preflight() -> web.Response:
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Methods": ALLOW_METHODS,
            "Access-Control-Allow-Headers": ALLOW_HEADERS,
            "Access-Control-Max-Age": MAX_AGE,
        },
    )


def decorate(request: web.Request, response: web.StreamResponse, origins: Collection[str]) -> None:
    """Add the CORS headers a response to an allowed origin needs; nothing for any other."""
    if not origins:
        return
    # The answer depends on Origin, so caches must not share it across origins.
    response.headers.add("Vary", "Origin")
    origin = request.headers.get("Origin")
    if origin is not None and origin in origins:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
