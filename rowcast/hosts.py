"""Which Host names the servers answer: the guard against DNS rebinding.

A page on evil.example can make its own name resolve to 127.0.0.1 and then talk to a rowcast
on the loopback as "same origin" (Host and Origin both say evil.example). Answering only the
names the server is really reached by closes that door, in open mode and in token mode alike.
Forwarded headers come from whoever connects, so they count only when configured to
(ROWCAST_TRUST_FORWARDED, behind a proxy that sets them).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from rowcast import wire
from rowcast.settings import Settings

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
WILDCARD_BINDS = ("0.0.0.0", "::", "")  # noqa: S104 -- names of the wildcard bind, not a bind
_INSTALLED: web.AppKey[bool] = web.AppKey("rowcast_hosts_installed")
# Probes (a load balancer, Kubernetes) ask by IP address; a health answer tells a rebound page
# nothing, so these paths answer under any Host name.
HEALTH_PATHS = frozenset({"/healthz", "/api/healthz"})


def _split(name: str) -> tuple[str, int | None]:
    """'Example.com.:8080' -> ('example.com', 8080); '[::1]' -> ('[::1]', None)."""
    name = name.strip().lower()
    host, colon, port = name.rpartition(":")
    if colon and port.isdigit() and (not host.startswith("[") or host.endswith("]")):
        return host.rstrip("."), int(port)
    return name.rstrip("."), None


def _is_loopback(bind: str) -> bool:
    if bind == "localhost":
        return True
    try:
        return ipaddress.ip_address(bind.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class HostPolicy:
    exact: frozenset[tuple[str, int | None]]  # (host, port) pairs; port None: the request named none
    any_port: frozenset[str]
    anything: bool = False
    # Names allowed with the port the connection arrived on (the port the server listens on,
    # whatever number a test or a supervisor gave it).
    on_local_port: frozenset[str] = frozenset()

    def allows(self, host_header: str, local_port: int | None = None) -> bool:
        if self.anything:
            return True
        host, port = _split(host_header)
        if host in self.any_port or (host, port) in self.exact:
            return True
        if host in self.on_local_port and local_port is not None:
            return port == local_port or (port is None and local_port == 80)
        return False

    def describe(self) -> str:
        if self.anything:
            return "any"
        names = sorted(self.any_port) + sorted(f"{h}:{p}" if p else h for h, p in self.exact)
        names += [f"{h}:<port>" for h in sorted(self.on_local_port)]
        return ", ".join(names)


def policy(settings: Settings) -> HostPolicy:
    """The configured allow-list, or the default for the bind address (README, Security).

    Loopback bind: the loopback names with the server's own port. Wildcard bind (0.0.0.0): in token mode any
    name (tokens are not ambient: a rebound page has none); in open mode only the loopback names
    on any port (a container's port may be published under another number), so reaching an open
    server by another name needs ROWCAST_ALLOWED_HOSTS. Any other address: itself with the port.
    "The port" is the one the connection arrived on: the server's listening port.
    """
    if settings.allowed_hosts:
        if "*" in settings.allowed_hosts:
            return HostPolicy(frozenset(), frozenset(), anything=True)
        exact: set[tuple[str, int | None]] = set()
        any_port: set[str] = set()
        for entry in settings.allowed_hosts:
            host, port = _split(entry)
            if port is None:
                any_port.add(host)
            else:
                exact.add((host, port))
        return HostPolicy(frozenset(exact), frozenset(any_port))
    if settings.host in WILDCARD_BINDS:
        if settings.auth == "token":
            return HostPolicy(frozenset(), frozenset(), anything=True)
        return HostPolicy(frozenset(), frozenset(LOOPBACK_NAMES))
    if _is_loopback(settings.host):
        return HostPolicy(frozenset(), frozenset(), on_local_port=frozenset(LOOPBACK_NAMES))
    address = f"[{settings.host}]" if ":" in settings.host else settings.host.lower()
    return HostPolicy(frozenset(), frozenset(), on_local_port=frozenset({address}))


def request_host(request: web.BaseRequest, settings: Settings) -> str:
    """The name the client used: Host, or X-Forwarded-Host when a trusted proxy sets it."""
    if settings.trust_forwarded:
        forwarded = request.headers.get("X-Forwarded-Host")
        if forwarded:
            return forwarded.split(",")[0].strip()
    # The header as parsed (request.host would cache a copy on every request, for its lifetime).
    return request.headers.get("Host") or request.host


def _local_port(request: web.BaseRequest) -> int | None:
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    return int(sockname[1]) if isinstance(sockname, tuple) and len(sockname) >= 2 else None


def install(app: web.Application, settings: Settings) -> None:
    """Refuse requests for other Host names on every route of `app` (once per app)."""
    if app.get(_INSTALLED):
        return
    app[_INSTALLED] = True
    app.middlewares.insert(0, host_middleware(settings))


def host_middleware(settings: Settings) -> Middleware:
    allowed = policy(settings)

    async def refuse() -> web.StreamResponse:
        message = "this server does not answer that Host name (ROWCAST_ALLOWED_HOSTS)"
        return web.json_response(wire.error("host_not_allowed", message), status=403)

    # Not a coroutine: it returns the handler's own awaitable, so a request that lives for hours (a
    # WebSocket) holds no frame of ours; a suspended middleware coroutine cost ~0.5 KB per client.
    @web.middleware
    def middleware(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
        # A request without Host (HTTP/1.0 tools) is no browser: rebinding needs one.
        named = "Host" in request.headers or (
            settings.trust_forwarded and "X-Forwarded-Host" in request.headers
        )
        if (
            named
            and request.path not in HEALTH_PATHS
            and not allowed.allows(request_host(request, settings), _local_port(request))
        ):
            return refuse()
        return handler(request)

    return middleware  # type: ignore[return-value]
