"""rowcast: every row change in Postgres as a live event."""

__version__ = "0.1.0"
