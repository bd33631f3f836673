"""Who is asking: the principal of a request, what it may touch, and the actor its writes record."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from rowcast.api.errors import ApiError
from rowcast.api.fields import FieldError
from rowcast.api.resources import Resource

from rowcast.auth import OPEN, AuthError, Principal, bearer, decode_token
from rowcast.settings import Settings

ACTOR_HEADER = "X-Actor"
MAX_ACTOR = 100
# Header bytes beyond printable ASCII have no agreed encoding (browsers refuse to send them), so
# a name like "José" travels percent-encoded as UTF-8 (encodeURIComponent) and is decoded here.
_ACTOR = re.compile(r"[\x20-\x7e]{1,300}")


def authenticate(request: web.Request, settings: Settings) -> Principal:
    """OPEN in open mode; in token mode the verified bearer token's principal, else 401."""
    if settings.auth == "open":
        return OPEN
    try:
        token = bearer(request.headers.get("Authorization"))
    except AuthError as exc:
        raise _unauthorized(str(exc), 'Bearer realm="rowcast", error="invalid_request"') from None
    if token is None:
        raise _unauthorized(
            "this API needs an 'Authorization: Bearer <token>' header", 'Bearer realm="rowcast"'
        )
    if not settings.jwt_secret:  # Settings refuses token mode without a secret; keep mypy and us honest.
        raise ApiError(500, "token auth is not configured")
    try:
        return decode_token(token, settings.jwt_secret, settings.jwt_audience)
    except AuthError as exc:
        raise _unauthorized(str(exc), 'Bearer realm="rowcast", error="invalid_token"') from None


def require(
    principal: Principal, resource: Resource, *, write: bool, known: dict[str, Resource]
) -> Mapping[str, Any]:
    """The principal's row scope on `resource`, or 403 if it may not read (or write) the table.

    A scope naming a table this API does not have refuses the token everywhere: ignoring it
    would turn a typo (`book`) into "every row" of the table it meant. One naming an unknown
    column refuses its own table (see _scope_value).
    """
    for table in principal.scopes:
        if table not in known:
            raise ApiError(403, f"this token's scope names an unknown table: {table}")
    allowed = principal.can_write(resource.name) if write else principal.can_read(resource.name)
    if not allowed:
        verb = "write" if write else "read"
        raise ApiError(403, f"this token may not {verb} {resource.name}")
    return {
        column: _scope_value(resource, column, value)
        for column, value in principal.scope(resource.name).items()
    }


def actor(request: web.Request, principal: Principal, settings: Settings) -> str:
    """The name writes are stamped with: the token subject, or in open mode `X-Actor`."""
    if settings.auth == "token":
        return principal.sub
    header = request.headers.get(ACTOR_HEADER)
    if header is None:
        return "anonymous"
    try:
        name = unquote(header, errors="strict") if _ACTOR.fullmatch(header) else ""
    except UnicodeDecodeError:
        name = ""
    if not name or len(name) > MAX_ACTOR or not name.isprintable():
        raise ApiError(
            400,
            f"{ACTOR_HEADER} must be 1 to {MAX_ACTOR} printable characters (percent-encoded UTF-8 beyond ASCII)",
            code="bad_header",
        )
    return name


def _scope_value(resource: Resource, column: str, value: Any) -> Any:
    """A scope value checked against the column's type, as written: "42" never matches 42."""
    field = resource.fields.get(column)
    if value is None and field is not None:
        return None
    try:
        if field is None:
            raise FieldError("no such column")
        return field.from_json(value)
    except FieldError:
        # Fail closed: a scope we cannot enforce must never widen into "every row".
        raise ApiError(403, f"this token's scope on {resource.name}.{column} cannot be enforced") from None


def _unauthorized(message: str, challenge: str) -> ApiError:
    return ApiError(401, message, headers={"WWW-Authenticate": challenge})
