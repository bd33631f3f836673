"""One database address, spelled for each client library."""

from __future__ import annotations


def sqlalchemy_url(url: str) -> str:
    """`postgresql+psycopg://...` for SQLAlchemy from a libpq URL ('' means the PG* variables)."""
    if not url:
        return "postgresql+psycopg://"
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise ValueError(f"not a postgresql:// URL: {url.split('@')[-1]!r}")


def libpq_url(url: str) -> str:
    """The same address for psycopg itself (`url` may be spelled for SQLAlchemy)."""
    return (
        "postgresql://" + url.removeprefix("postgresql+psycopg://")
        if url.startswith("postgresql+psycopg://")
        else url
    )
