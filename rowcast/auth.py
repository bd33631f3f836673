"""Principals and tokens: who is asking, which tables they may read and write, which rows.

A `Principal` is what the API and the notifier pass around; in `open` mode every request gets
`OPEN` (all tables, no scopes), in `token` mode it comes from a verified HS256 JWT.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt

from rowcast.errors import RowcastError

ALGORITHM = "HS256"
CLAIM = "rowcast"  # namespaced claim holding read / write / scopes


class AuthError(RowcastError):
    """Authentication failed."""

    status = 401


class Forbidden(RowcastError):
    """Not allowed."""

    status = 403


def qualify(table: str) -> str:
    """'books' -> 'public.books'; 'audit.log' stays as it is."""
    return table if "." in table else f"public.{table}"


@dataclass(frozen=True)
class Principal:
    sub: str
    read: frozenset[str] | None = None  # None: every table
    write: frozenset[str] | None = None
    # qualified table -> {column: required value}: the rows this principal may see and touch.
    scopes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    expires_at: float | None = None
    anonymous: bool = False

    def can_read(self, table: str) -> bool:
        return self.read is None or qualify(table) in self.read

    def can_write(self, table: str) -> bool:
        return self.write is None or qualify(table) in self.write

    def scope(self, table: str) -> Mapping[str, Any]:
        return self.scopes.get(qualify(table), {})

    def in_scope(self, table: str, row: Mapping[str, Any] | None) -> bool:
        """True if `row` (a full row image) is one this principal may see."""
        scope = self.scope(table)
        if not scope:
            return True
        if row is None:
            return False
        return all(same_value(row.get(column), value) for column, value in scope.items())

    def seconds_left(self, now: float | None = None) -> float | None:
        if self.expires_at is None:
            return None
        return self.expires_at - (time.time() if now is None else now)


OPEN = Principal(sub="anonymous", anonymous=True)


def same_value(actual: Any, wanted: Any) -> bool:
    """Scope equality across JSON types: `rowcast token --scope books.owner=42` makes the integer
    42, which must match a text column's "42" (the API compares in the column's type likewise)."""
    if actual == wanted:
        return True
    if actual is None or wanted is None or isinstance(actual, bool | dict | list) or isinstance(wanted, bool):
        return False
    return str(actual) == str(wanted)


def _tables(values: Iterable[str] | None) -> list[str] | None:
    return None if values is None else sorted({qualify(v) for v in values})


def parse_scope(text: str) -> tuple[str, str, Any]:
    """'books.owner=alice' -> ('public.books', 'owner', 'alice'); digits become integers."""
    target, sep, raw = text.partition("=")
    table, dot, column = target.strip().rpartition(".")
    if not sep or not dot or not column:
        raise RowcastError(f"scope must look like TABLE.COLUMN=VALUE, not {text!r}")
    value: Any = int(raw) if raw.strip().lstrip("-").isdigit() else raw.strip().strip('"')
    return qualify(table), column, value


def issue_token(
    secret: str,
    sub: str,
    *,
    read: Iterable[str] | None = None,
    write: Iterable[str] | None = None,
    scopes: Iterable[str] = (),
    ttl: float = 3600.0,
    audience: str = "rowcast",
    now: float | None = None,
) -> str:
    issued = int(time.time() if now is None else now)
    scope_claim: dict[str, dict[str, Any]] = {}
    for text in scopes:
        table, column, value = parse_scope(text)
        scope_claim.setdefault(table, {})[column] = value
    claims = {
        "sub": sub,
        "aud": audience,
        "iat": issued,
        "exp": issued + int(ttl),
        CLAIM: {"read": _tables(read), "write": _tables(write), "scopes": scope_claim},
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def decode_token(token: str, secret: str, audience: str = "rowcast") -> Principal:
    """Verify signature, expiry and audience; raises AuthError with a reason safe to show."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],  # never 'none', never a key-confusion algorithm
            audience=audience,
            options={"require": ["sub", "exp", "aud"]},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("token expired") from None
    except jwt.InvalidAudienceError:
        raise AuthError("token audience is not accepted") from None
    except jwt.InvalidSignatureError:
        raise AuthError("token signature is invalid") from None
    except jwt.MissingRequiredClaimError as exc:
        raise AuthError(f"token lacks the {exc.claim!r} claim") from None
    except jwt.InvalidTokenError:
        raise AuthError("token is malformed") from None
    grant = claims.get(CLAIM) or {}
    if not isinstance(grant, dict):
        raise AuthError("token is malformed")
    try:
        read = grant.get("read")
        write = grant.get("write")
        scopes = {qualify(t): dict(cols) for t, cols in (grant.get("scopes") or {}).items()}
        return Principal(
            sub=str(claims["sub"]),
            read=None if read is None else frozenset(qualify(t) for t in read),
            write=None if write is None else frozenset(qualify(t) for t in write),
            scopes=scopes,
            expires_at=float(claims["exp"]),
        )
    except (TypeError, ValueError, AttributeError):
        raise AuthError("token is malformed") from None


def bearer(header: str | None) -> str | None:
    """The token in an `Authorization: Bearer …` header, if any."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise AuthError("Authorization header must be 'Bearer <token>'")
    return value.strip()
