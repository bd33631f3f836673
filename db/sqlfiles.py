"""The versioned SQL files shipped inside the package."""

from __future__ import annotations

from importlib import resources


def read(name: str) -> str:
    """Text of `db/sql/<name>`, e.g. read('capture_v1.sql')."""
    return resources.files("rowcast.db.sql").joinpath(name).read_text(encoding="utf-8")


def function(name: str, signature: str, *, replace: bool = True) -> str:
    """One `CREATE FUNCTION <signature>` statement of a shipped file, as it was shipped.

    Down-migrations restore older function bodies from their frozen files instead of keeping a
    second copy of them. With `replace`, the statement becomes CREATE OR REPLACE.
    """
    lines = read(name).splitlines()
    heads = ("CREATE FUNCTION " + signature, "CREATE OR REPLACE FUNCTION " + signature)
    start = next(i for i, line in enumerate(lines) if line.startswith(heads))
    quoted = False  # inside a $$ body
    end = start
    for end in range(start, len(lines)):
        quoted ^= lines[end].count("$$") % 2 == 1
        if not quoted and lines[end].rstrip().endswith(";"):
            break
    text = "\n".join(lines[start : end + 1])
    if replace and text.startswith("CREATE FUNCTION"):
        text = "CREATE OR REPLACE FUNCTION" + text.removeprefix("CREATE FUNCTION")
    return text + "\n"


def without(name: str, *lines: str) -> str:
    """A shipped file with some of its lines left out, each of which must be there.

    For a revision that runs a frozen file on a database that lacks what those lines name (the
    demo tables, which new installations no longer get), without keeping a second copy of it.
    """
    kept = read(name).splitlines()
    for line in lines:
        if line not in kept:
            raise ValueError(f"{name} has no line {line!r}")
        kept.remove(line)
    return "\n".join(kept) + "\n"
