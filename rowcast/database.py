"""Which Postgres rowcast talks to: the configured one, or the embedded one."""

from __future__ import annotations

from rowcast.embedded import EmbeddedPostgres
from rowcast.settings import Settings


def embedded(settings: Settings) -> EmbeddedPostgres:
    return EmbeddedPostgres(settings.data_dir)


def resolve_url(settings: Settings, *, start: bool = True) -> str:
    """The libpq URL to use; with no database configured, the embedded server (started if asked)."""
    if settings.database_url is not None:
        return settings.database_url
    server = embedded(settings)
    if start:
        server.start()
    return server.url()
