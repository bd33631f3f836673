"""The versioned SQL files shipped inside the package."""

from __future__ import annotations

from importlib import resources


def read(name: str) -> str:
    """Text of `db/sql/<name>`, e.g. read('capture_v1.sql')."""
    return resources.files("db.sql").joinpath(name).read_text(encoding="utf-8")
