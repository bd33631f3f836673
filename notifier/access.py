"""Who may connect: token, Origin allow-list, per-subject connection limit, frame rate."""

from __future__ import annotations

import time
from collections import Counter
from typing import Protocol
from urllib.parse import urlsplit

from aiohttp import web

from rowcast.auth import OPEN, AuthError, Principal, bearer, decode_token
from rowcast.hosts import request_host
from rowcast.settings import Settings
from rowcast.wire import error

SUBPROTOCOL = "rowcast.v1"
_BEARER_PROTOCOL = "bearer."


def token_from(request: web.Request) -> str | None:
    """The token from the Authorization header, a `bearer.<jwt>` subprotocol, or ?token=."""
    header = bearer(request.headers.get("Authorization"))
    if header:
        return header
    for proto in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
        proto = proto.strip()
        if proto.startswith(_BEARER_PROTOCOL):
            return proto[len(_BEARER_PROTOCOL) :]
    return request.query.get("token") or None


def principal_for(request: web.Request, settings: Settings) -> Principal:
    if settings.auth == "open":
        return OPEN
    token = token_from(request)
    if not token:
        raise AuthError("a token is required (Authorization: Bearer, subprotocol bearer.<token>, or ?token=)")
    assert settings.jwt_secret is not None
    return decode_token(token, settings.jwt_secret, settings.jwt_audience)


def origin_allowed(request: web.Request, settings: Settings) -> bool:
    """Cross-site WebSocket hijacking guard: a browser's Origin must be allowed.

    Clients that send no Origin (servers, CLIs) are not browsers riding a user's cookies.
    Without a configured allow-list, only the page's own origin (same host) is allowed.
    """
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    if settings.allowed_origins:
        return origin in settings.allowed_origins or "*" in settings.allowed_origins
    # X-Forwarded-Host counts only when configured: anyone can send it.
    return urlsplit(origin).netloc.lower() == request_host(request, settings).lower()


class ConnectionLimiter:
    """Open connections per token subject (token mode only: open mode has no subjects)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.counts: Counter[str] = Counter()

    def acquire(self, principal: Principal) -> web.Response | None:
        """None when admitted (call release later), else the answer to send instead."""
        if principal.anonymous:
            return None
        if self.counts[principal.sub] >= self.limit:
            return json_error(429, "too_many_connections", f"at most {self.limit} connections per subject")
        self.counts[principal.sub] += 1
        return None

    def release(self, principal: Principal) -> None:
        if principal.anonymous:
            return
        self.counts[principal.sub] -= 1
        if self.counts[principal.sub] <= 0:
            del self.counts[principal.sub]


class LongPollLimiter:
    """Long-polls in flight, per token subject and in all.

    Each waiting poll holds a task, a hub waiter and, while it reads, a pooled connection: without
    a bound, one token's parallel loops slowed every other client. Open mode has no subjects (all
    are anonymous), so only the total applies there.
    """

    def __init__(self, per_subject: int, total: int) -> None:
        self.per_subject = per_subject
        self.total = total
        self.in_flight = 0
        self.counts: Counter[str] = Counter()

    def acquire(self, principal: Principal) -> web.Response | None:
        """None when admitted (call release later), else the answer to send instead."""
        if not principal.anonymous and self.counts[principal.sub] >= self.per_subject:
            return json_error(
                429, "too_many_longpolls", f"at most {self.per_subject} long-polls in flight per subject"
            )
        if self.in_flight >= self.total:
            return json_error(503, "busy", "too many long-polls in flight; retry shortly")
        self.in_flight += 1
        if not principal.anonymous:
            self.counts[principal.sub] += 1
        return None

    def release(self, principal: Principal) -> None:
        self.in_flight -= 1
        if not principal.anonymous:
            self.counts[principal.sub] -= 1
            if self.counts[principal.sub] <= 0:
                del self.counts[principal.sub]


class RateLimiter:
    """Token bucket for client frames: `rate` per second, bursts up to twice that."""

    __slots__ = ("capacity", "rate", "stamp", "tokens", "violations")

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(2.0 * rate, 1.0)
        self.tokens = self.capacity
        self.stamp = time.monotonic()
        self.violations = 0

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        self.violations += 1
        return False


def json_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response(error(code, message), status=status)


class Limiter(Protocol):
    def acquire(self, principal: Principal) -> web.Response | None: ...
    def release(self, principal: Principal) -> None: ...


def admit(request: web.Request, settings: Settings, limiter: Limiter) -> Principal | web.Response:
    """The one admission path of /ws, /sse and /changes: Origin, token, then the transport's
    limiter (connections per subject; long-polls in flight per subject and in all).

    Returns the principal, holding one of the limiter's slots (release it when the request
    ends), or the JSON error response to send instead.
    """
    if not origin_allowed(request, settings):
        return json_error(403, "origin_not_allowed", "this Origin may not open rowcast streams")
    try:
        principal = principal_for(request, settings)
    except AuthError as exc:
        return json_error(401, "unauthorized", str(exc))
    refused = limiter.acquire(principal)
    return principal if refused is None else refused
