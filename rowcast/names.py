"""Table names: schema and table as two fields, and dotted names read the way Postgres reads them.

A table is identified by `(schema, table)`. Where one string has to name it (a subscribe frame's
`table`, a token grant, the CLI), the string is parsed with Postgres's identifier rules: unquoted
parts fold to lower case and end at a dot, `"double quoted"` parts are taken exactly (`""` is a
quote), a name without a schema is in `public`. So table `x.y` in schema `co` is `co."x.y"` and
table `y` in schema `co.x` is `"co.x".y`: two names that the old split-at-the-dot read as one.
A name of three or more parts is refused as ambiguous, never guessed at.

`canonical()` is the one string form used as a key everywhere (hub, grants, scopes): parts quoted
only when they need it, so `public.books` stays `public.books`.
"""

from __future__ import annotations

import functools
import re

from rowcast.errors import RowcastError

DEFAULT_SCHEMA = "public"
MAX_IDENTIFIER_BYTES = 63  # NAMEDATALEN - 1: Postgres would truncate a longer one
_PLAIN = re.compile(r"[a-z_][a-z0-9_$]*")
_STRICT_PART = re.compile(r"[a-z_][a-z0-9_]*")


class BadName(RowcastError):
    """A table name that does not parse, or parses to more than schema and table."""

    status = 400


def split(text: str, *, strict: bool = False) -> list[str]:
    """The parts of a dotted name, by Postgres's rules.

    `strict` (token grants) refuses unquoted parts that Postgres would fold (`Books`) or that are
    not plain ASCII identifiers (a Cyrillic look-alike): in a grant they can only be a mistake or
    an attack, so they must fail rather than silently name something else.
    """
    parts: list[str] = []
    i, n = 0, len(text)
    while True:
        if i < n and text[i] == '"':
            j, chars = i + 1, []
            while True:
                k = text.find('"', j)
                if k < 0:
                    raise BadName(f"unterminated quoted identifier in {text[:80]!r}")
                chars.append(text[j:k])
                if text.startswith('"', k + 1):
                    chars.append('"')
                    j = k + 2
                    continue
                i = k + 1
                break
            part = "".join(chars)
        else:
            k = text.find(".", i)
            k = n if k < 0 else k
            raw = text[i:k]
            if '"' in raw:
                raise BadName(f"a quote inside an unquoted identifier in {text[:80]!r}")
            if strict and not _STRICT_PART.fullmatch(raw):
                raise BadName(f"invalid identifier {raw[:80]!r}: lower-case ASCII, or double-quote it")
            part, i = raw.lower(), k
        _check_part(part, text)
        parts.append(part)
        if i == n:
            return parts
        if text[i] != ".":
            raise BadName(f"unexpected {text[i]!r} after a quoted identifier in {text[:80]!r}")
        i += 1


def _check_part(part: str, text: str) -> None:
    if not part:
        raise BadName(f"empty identifier in {text[:80]!r}")
    if "\x00" in part:
        raise BadName("identifiers cannot contain NUL")
    if len(part.encode()) > MAX_IDENTIFIER_BYTES:
        raise BadName(f"identifier longer than {MAX_IDENTIFIER_BYTES} bytes in {text[:80]!r}")


def parse(text: str, *, strict: bool = False) -> tuple[str, str]:
    """`books` → ('public', 'books'); `co."x.y"` → ('co', 'x.y'); `a.b.c` → BadName."""
    parts = split(text, strict=strict)
    if len(parts) == 1:
        return DEFAULT_SCHEMA, parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise BadName(
        f"ambiguous table name {text[:80]!r}: write schema.table, double-quoting a part "
        'that contains a dot (co."x.y"), or give schema and table as two fields'
    )


def exact(schema: str, table: str) -> tuple[str, str]:
    """Two fields taken literally (no folding, no quoting rules), checked like parsed parts."""
    for part in (schema, table):
        _check_part(part, f"{schema}.{table}")
    return schema, table


def ident(part: str) -> str:
    """A part quoted only when reading it back unquoted would not give the same part."""
    return part if _PLAIN.fullmatch(part) else '"' + part.replace('"', '""') + '"'


@functools.lru_cache(maxsize=4096)
def canonical(schema: str, table: str) -> str:
    """The one string key for a table: `public.books`, `co."x.y"`, `"co.x".y`."""
    return f"{ident(schema)}.{ident(table)}"


@functools.lru_cache(maxsize=4096)
def qualify(text: str, *, strict: bool = False) -> str:
    """A name as written (dotted, quoted or not, maybe without schema) → its canonical key."""
    return canonical(*parse(text, strict=strict))
