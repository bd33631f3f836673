"""Alembic configured in code, so migrations run from the installed wheel too."""

from __future__ import annotations

from importlib import resources

from alembic import command
from alembic.config import Config


def config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("db").joinpath("migrations")))
    # '%' would be read as ConfigParser interpolation.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(config(url), revision)
