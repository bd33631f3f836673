"""Registry of subcommands defined outside cli.py; each entry adds its subparser."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

REGISTRY: list[Callable[[Any], None]] = []
