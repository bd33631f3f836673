"""The HTTP handlers, written once for any declared resource, and the routes that reach them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from aiohttp import web
from rowcast.api import listing, principal, store
from rowcast.api.errors import ApiError, not_found
from rowcast.api.fields import Field, FieldError
from rowcast.api.middleware import request_id
from rowcast.api.preconditions import etag, if_match
from rowcast.api.resources import ETAG, Resource
from rowcast.api.state import ENGINE, SETTINGS, TABLES
from rowcast.api.validation import Mode, read_json, validate
from yarl import URL

from rowcast import jsonexact
from rowcast.auth import Principal

# An integer key in a URL: no sign (`+5` is not the URL of row 5), a minus for negative keys.
_KEY_INTEGER = re.compile(r"-?[0-9]{1,19}")


class ResourceView:
    """List, create, read, replace, patch and delete rows of one resource."""

    def __init__(self, resource: Resource) -> None:
        self.resource = resource

    def add_routes(self, app: web.Application) -> None:
        collection = self.resource.path
        item = _routable(collection) + "".join(f"/{{{p}}}" for p in self.resource.key_parameters)
        app.router.add_get(collection, self.index, allow_head=False)
        app.router.add_post(collection, self.create)
        app.router.add_get(item, self.get, allow_head=False)
        app.router.add_put(item, self.replace)
        app.router.add_patch(item, self.patch)
        app.router.add_delete(item, self.delete)

    async def index(self, request: web.Request) -> web.Response:
        _, scope = self._access(request, write=False)
        settings = request.app[SETTINGS]
        query = listing.parse(self.resource, request.query, settings.max_page_size)
        page = await store.list_page(request.app[ENGINE], self.resource, query, scope)
        return _json(
            {
                "items": [self.resource.to_json(row) for row in page.rows],
                "cursor": page.cursor,
                "limit": query.limit,
                "offset": query.offset,
                "total": page.total,
            }
        )

    async def get(self, request: web.Request) -> web.Response:
        _, scope = self._access(request, write=False)
        key = self._key(request)
        row = await store.get(request.app[ENGINE], self.resource, key, scope)
        if row is None:
            raise self._missing(key)
        return self._row(row)

    async def create(self, request: web.Request) -> web.Response:
        who, scope = self._access(request, write=True)
        values = await self._body(request, "create")
        for column, wanted in scope.items():
            if not self.resource.fields[column].writable:
                raise ApiError(403, f"this token may not create {self.resource.name} rows")
            values.setdefault(column, wanted)  # omitted: the row lands in the caller's scope
        _check_scope(values, scope)
        row = await store.insert(request.app[ENGINE], self.resource, values, self._stamp(request, who))
        response = self._row(row, status=201)
        response.headers["Location"] = self._location(row)
        return response

    async def replace(self, request: web.Request) -> web.Response:
        return await self._update(request, "replace")

    async def patch(self, request: web.Request) -> web.Response:
        return await self._update(request, "patch")

    async def delete(self, request: web.Request) -> web.Response:
        who, scope = self._access(request, write=True)
        key = self._key(request)
        match = if_match(request)
        stamp = self._stamp(request, who)
        outcome = await store.delete(request.app[ENGINE], self.resource, key, match, scope, stamp)
        self._written(key, outcome)
        return web.Response(status=204)

    async def _update(self, request: web.Request, mode: Mode) -> web.Response:
        who, scope = self._access(request, write=True)
        key = self._key(request)
        match = if_match(request)
        values = await self._body(request, mode)
        _check_scope(values, scope)  # a write may not move a row out of the caller's scope
        stamp = self._stamp(request, who)
        outcome = await store.update(request.app[ENGINE], self.resource, key, values, match, scope, stamp)
        return self._row(self._written(key, outcome))

    # -- helpers ---------------------------------------------------------------------------

    def _access(self, request: web.Request, *, write: bool) -> tuple[Principal, Mapping[str, Any]]:
        """Who asks (401 if unknown) and their row scope (403 if the table is off limits)."""
        who = principal.authenticate(request, request.app[SETTINGS])
        return who, principal.require(who, self.resource, write=write, known=request.app[TABLES])

    def _stamp(self, request: web.Request, who: Principal) -> store.Stamp:
        return store.Stamp(principal.actor(request, who, request.app[SETTINGS]), request_id(request))

    async def _body(self, request: web.Request, mode: Mode) -> dict[str, Any]:
        body = await read_json(request, request.app[SETTINGS].max_body_bytes)
        return validate(self.resource, body, mode)

    def _key(self, request: web.Request) -> store.Key:
        """The row's key from the URL, one segment per key column; 404 if it cannot be one."""
        raw = [request.match_info[p] for p in self.resource.key_parameters]
        try:
            return tuple(
                _key_value(self.resource.fields[c.name], text)
                for c, text in zip(self.resource.keys, raw, strict=True)
            )
        except FieldError:
            raise not_found(f"no {self.resource.name} row with key {'/'.join(raw)[:80]!r}") from None

    def _location(self, row: Mapping[str, Any]) -> str:
        """The row's URL, percent-encoded: `"` of a quoted table name, and a `/` inside a key value."""
        parts = (self.resource.fields[c.name].to_json(row[c.name]) for c in self.resource.keys)
        return quote(self.resource.path) + "".join(f"/{quote(str(p), safe='')}" for p in parts)

    def _missing(self, key: store.Key) -> ApiError:
        # Also for rows outside the caller's scope: a 403 would reveal that the row exists.
        return not_found(f"no {self.resource.name} row with {_describe(self.resource, key)}")

    def _written(self, key: store.Key, outcome: store.Outcome) -> store.Row:
        if outcome.row is not None:
            return outcome.row
        if outcome.current is None:
            raise self._missing(key)
        current = outcome.current
        raise ApiError(
            412,
            f"{self.resource.name} {_describe(self.resource, key)} is at version {current[ETAG]}, "
            "not the one in If-Match; reload it (the current row is in `current`) "
            "or send If-Match: * to overwrite",
            headers={"ETag": etag(current[ETAG])},
            extra={"current": self.resource.to_json(current)},
        )

    def _row(self, row: Mapping[str, Any], status: int = 200) -> web.Response:
        return _json(self.resource.to_json(row), status=status, headers={"ETag": etag(row[ETAG])})


def _routable(path: str) -> str:
    """`path` as the fixed start of a route with parameters.

    aiohttp percent-encodes the fixed parts of such a route (`"` becomes %22) but matches it
    against the decoded request path, so a table name that needs encoding (`sales."Q1"`) would
    never match; it goes in as a parameter that matches only that name instead.
    """
    if URL.build(path=path).raw_path == path:
        return path
    prefix, _, name = path.rpartition("/")
    return f"{prefix}/{{_rowcast_table:{re.escape(name)}}}"


def _json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """A JSON response whose numerics are written digit for digit, as the notifier writes them."""
    return web.json_response(body, status=status, headers=headers, dumps=jsonexact.dumps)


def _key_value(field: Field, text: str) -> Any:
    if field.kind == "integer" and not _KEY_INTEGER.fullmatch(text):
        raise FieldError(f"{text!r} is not an integer")
    return field.from_query(text)


def _describe(resource: Resource, key: store.Key) -> str:
    """`id 7`, or for a composite key `order_id 17, line_no 3`."""
    return ", ".join(f"{c.name} {v}" for c, v in zip(resource.keys, key, strict=True))


def _check_scope(values: Mapping[str, Any], scope: Mapping[str, Any]) -> None:
    for column, wanted in scope.items():
        if column in values and values[column] != wanted:
            raise ApiError(403, f"{column} must be {wanted!r} for this token")
