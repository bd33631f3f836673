"""Every error rowcast raises on purpose; each docstring is its default message."""

from __future__ import annotations


class RowcastError(Exception):
    """rowcast failed."""

    exit_code = 2  # the CLI's exit status: 2 is a usage or configuration error

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigError(RowcastError):
    """The configuration is invalid."""


class Unreachable(RowcastError):
    """Nothing answered: the server is down or the address is wrong."""

    exit_code = 1


class EmbeddedPostgresError(RowcastError):
    """The embedded Postgres server could not be run."""


class CaptureError(RowcastError):
    """Capture could not be changed on that table."""


class PoolerDetected(RowcastError):
    """LISTEN is not possible through a transaction-pooling PgBouncer; connect the notifier directly to Postgres."""
