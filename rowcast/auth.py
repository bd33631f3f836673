"""Principals and tokens: who is asking, which tables they may read and write, which rows.

A `Principal` is what the API and the notifier pass around; in `open` mode every request gets
`OPEN` (all tables, no scopes), in `token` mode it comes from a verified HS256 JWT.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt

from rowcast import names
from rowcast.errors import RowcastError

ALGORITHM = "HS256"
CLAIM = "rowcast"  # namespaced claim holding read / write / scopes


class AuthError(RowcastError):
    """Authentication failed."""

    status = 401


def qualify(table: str) -> str:
    """A table name as written ('books', 'audit.log', 'co."x.y"') -> its canonical key.

    Parsed with Postgres's identifier rules (rowcast.names); BadName (400) if it does not parse.
    """
    return names.qualify(table)


@dataclass(frozen=True)
class Principal:
    sub: str
    read: frozenset[str] | None = None  # None: every table
    write: frozenset[str] | None = None
    # qualified table -> {column: required value}: the rows this principal may see and touch.
    scopes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    expires_at: float | None = None
    anonymous: bool = False
    metrics: bool = False  # may read /metrics when auth is on

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
        # A column the row does not have is never "equal to null": that would be every row.
        return all(column in row and same_value(row[column], value) for column, value in scope.items())

    def seconds_left(self, now: float | None = None) -> float | None:
        if self.expires_at is None:
            return None
        return self.expires_at - (time.time() if now is None else now)


OPEN = Principal(sub="anonymous", anonymous=True)


def same_value(actual: Any, wanted: Any) -> bool:
    """Scope equality that keeps JSON types: the text "42" is not the number 42, true is not 1."""
    if isinstance(actual, bool) or isinstance(wanted, bool):
        return type(actual) is type(wanted) and actual == wanted
    if isinstance(wanted, int) and isinstance(actual, int | float):
        return actual == wanted  # a numeric column may arrive as 42.0
    return type(actual) is type(wanted) and actual == wanted


# -- the grant: one schema for the API, the notifier and `rowcast token` ---------------------------

# Columns as grants name them: lower-case ASCII identifiers. Tables: `schema.table` or `table`
# with unquoted parts in lower-case ASCII, or double-quoted (rowcast.names, strict). Anything else
# (`Books`, a Cyrillic look-alike) can only be a mistake or an attack.
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
GRANT_KEYS = frozenset({"read", "write", "scopes", "metrics"})
ALL_TABLES = "*"
ScopeValue = str | int | bool | None


class BadGrant(AuthError):
    """The token's rowcast grant is malformed."""


def _table_name(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 300:
        raise BadGrant(f"token grant names an invalid table: {str(value)[:80]!r}")
    try:
        return names.qualify(value, strict=True)
    except names.BadName as exc:
        raise BadGrant(f"token grant names an invalid table: {exc}") from None


def _table_list(grant: Mapping[str, Any], key: str) -> frozenset[str] | None:
    """`"*"` (every table) or a list of table names; absent means none."""
    value = grant.get(key, [])
    if value == ALL_TABLES:
        return None
    if not isinstance(value, list) or len(value) > 1000:
        raise BadGrant(f'token grant {key!r} must be "*" or a list of tables')
    return frozenset(_table_name(t) for t in value)


def _column_name(table: str, column: Any) -> str:
    if not isinstance(column, str) or not _NAME.fullmatch(column):
        raise BadGrant(f"token scope on {table} names an invalid column: {str(column)[:80]!r}")
    return column


def _scope_value(value: Any) -> ScopeValue:
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int) and abs(value) < 2**63:
        return value
    raise BadGrant("token scope values must be strings, integers, true/false or null")


def _scopes(value: Any) -> dict[str, dict[str, ScopeValue]]:
    if not isinstance(value, dict):
        raise BadGrant("token grant 'scopes' must be an object of {table: {column: value}}")
    scopes: dict[str, dict[str, ScopeValue]] = {}
    for table, columns in value.items():
        name = _table_name(table)
        if name in scopes:
            raise BadGrant(f"token grant scopes {name} twice")
        if not isinstance(columns, dict) or not columns:
            raise BadGrant(f"token scope on {name} must be a non-empty object of {{column: value}}")
        for column in columns:
            _column_name(name, column)
        scopes[name] = {column: _scope_value(v) for column, v in columns.items()}
    return scopes


def principal_from_claims(claims: Mapping[str, Any]) -> Principal:
    """The principal a verified token's claims grant; BadGrant (401) if the grant is malformed.

    The only reader of the `rowcast` claim. No claim at all is a valid token with no grant: it
    reads and writes nothing (403 wherever it asks). Unknown keys are refused, never ignored.
    """
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > 200:
        raise BadGrant("token 'sub' must be a non-empty string")
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise BadGrant("token 'exp' must be a number")
    if CLAIM not in claims:
        return Principal(sub=sub, read=frozenset(), write=frozenset(), expires_at=float(exp))
    grant = claims[CLAIM]
    if not isinstance(grant, dict):
        raise BadGrant(f"token claim {CLAIM!r} must be an object")
    unknown = set(grant) - GRANT_KEYS
    if unknown:
        raise BadGrant(f"token grant has unknown keys: {', '.join(sorted(map(str, unknown)))[:200]}")
    metrics = grant.get("metrics", False)
    if not isinstance(metrics, bool):
        raise BadGrant("token grant 'metrics' must be true or false")
    return Principal(
        sub=sub,
        read=_table_list(grant, "read"),
        write=_table_list(grant, "write"),
        scopes=_scopes(grant.get("scopes", {})),
        expires_at=float(exp),
        metrics=metrics,
    )


def parse_scope(text: str) -> tuple[str, str, ScopeValue]:
    """A `--scope` flag: 'books.owner=00123' is the string "00123"; 'books.owner:=42' takes JSON.

    `TABLE.COLUMN=VALUE` always means text (the value as written, quotes and all);
    `TABLE.COLUMN:=JSON` means a JSON value: a number, true, false, null or a "string".
    """
    target, sep, raw = text.partition("=")
    typed = target.endswith(":")
    usage = f"scope must look like TABLE.COLUMN=TEXT or TABLE.COLUMN:=JSON, not {text!r}"
    try:
        parts = names.split(target.removesuffix(":").strip(), strict=True) if sep else []
    except names.BadName as exc:
        raise RowcastError(f"scope {text!r} names an invalid table: {exc}") from None
    if not 2 <= len(parts) <= 3:
        raise RowcastError(usage)
    *table_parts, column = parts
    table = names.canonical(*(names.DEFAULT_SCHEMA, *table_parts)[-2:])
    value: Any = raw
    if typed:
        try:
            value = json.loads(raw)
        except ValueError:
            raise RowcastError(
                f"scope {text!r}: after ':=' comes a JSON value (42, true, null, \"text\")"
            ) from None
    try:
        return table, _column_name(table, column), _scope_value(value)
    except BadGrant as exc:
        raise RowcastError(f"scope {text!r}: {exc}") from None


def issue_token(
    secret: str,
    sub: str,
    *,
    read: Iterable[str] | None = None,
    write: Iterable[str] | None = None,
    scopes: Iterable[str] = (),
    metrics: bool = False,
    ttl: float = 3600.0,
    audience: str = "rowcast",
    now: float | None = None,
) -> str:
    """A signed token; read/write None mean every table. Its grant is checked like a received one."""
    issued = int(time.time() if now is None else now)
    scope_claim: dict[str, dict[str, Any]] = {}
    for text in scopes:
        table, column, value = parse_scope(text)
        scope_claim.setdefault(table, {})[column] = value
    try:
        grant: dict[str, Any] = {"read": _tables(read), "write": _tables(write), "scopes": scope_claim}
        if metrics:
            grant["metrics"] = True
        claims = {"sub": sub, "aud": audience, "iat": issued, "exp": issued + int(ttl), CLAIM: grant}
        principal_from_claims(claims)
    except BadGrant as exc:
        raise RowcastError(str(exc)) from None
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def _tables(values: Iterable[str] | None) -> str | list[str]:
    return ALL_TABLES if values is None else sorted({_table_name(v) for v in values})


def decode_token(token: str, secret: str, audience: str = "rowcast") -> Principal:
    """Verify signature, expiry and audience, then the grant; raises AuthError with a reason safe to show."""
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
    return principal_from_claims(claims)


def bearer(header: str | None) -> str | None:
    """The token in an `Authorization: Bearer …` header, if any."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise AuthError("Authorization header must be 'Bearer <token>'")
    return value.strip()
