"""Typed keys for what the API keeps on the aiohttp application."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from rowcast.settings import Settings

if TYPE_CHECKING:
    from rowcast.api.resources import Resource

SETTINGS = web.AppKey("rowcast.api.settings", Settings)
ENGINE = web.AppKey("rowcast.api.engine", AsyncEngine)
# qualified table name -> its Resource: every table a token's scope may name on this API.
TABLES: web.AppKey[dict[str, Resource]] = web.AppKey("rowcast.api.tables")
# The OpenAPI document: complete once the served tables have been reflected at start-up.
DOCUMENT: web.AppKey[dict[str, Any]] = web.AppKey("rowcast.api.document")
