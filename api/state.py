"""Typed keys for what the API keeps on the aiohttp application."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from rowcast.settings import Settings

SETTINGS = web.AppKey("rowcast.api.settings", Settings)
ENGINE = web.AppKey("rowcast.api.engine", AsyncEngine)
