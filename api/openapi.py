"""The OpenAPI 3.1 document, generated from the resource declarations and the auth mode."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rowcast.api import listing, schemas
from rowcast.api.errors import CODES
from rowcast.api.resources import Resource

from rowcast import __version__
from rowcast.settings import Settings

Doc = dict[str, Any]

_DESCRIPTIONS = {
    200: "OK",
    201: "Created",
    204: "Deleted",
    400: "Malformed JSON, query parameter or header",
    401: "Missing or invalid bearer token",
    403: "The token may not touch this table, or this row value",
    404: "No such row (or not in the caller's scope)",
    409: "The database refused the write: a unique, foreign-key, check or not-null constraint",
    412: "If-Match names a version that is no longer current",
    413: "Body larger than the configured limit",
    415: "Body is not application/json",
    422: "Body fails validation; `fields` says why per field",
    428: "If-Match is required",
    503: "The database is unavailable",
}
_HEADER = {"schema": {"type": "string"}, "required": True}


def document(resources: Iterable[Resource], settings: Settings) -> Doc:
    resources = tuple(resources)
    token = settings.auth == "token"
    paths: Doc = {
        "/api/healthz": {"get": _health()},
        "/api/openapi.json": {"get": _self_description()},
    }
    component_schemas: Doc = {"Error": schemas.ERROR}
    for r in resources:
        component_schemas.update(
            {
                r.title: schemas.row(r),
                f"{r.title}Create": schemas.body(r, "create"),
                f"{r.title}Replace": schemas.body(r, "replace"),
                f"{r.title}Patch": schemas.body(r, "patch"),
                f"{r.title}Page": schemas.page(r),
                f"{r.title}Stale": schemas.stale(r),
            }
        )
        paths[r.path] = _collection(r, token, settings)
        paths[r.item_path] = _item(r, token)
    components: Doc = {
        "schemas": component_schemas,
        "headers": {"X-Request-ID": _HEADER, "ETag": _HEADER, "Location": _HEADER},
    }
    if token:
        components["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "rowcast REST API",
            "version": __version__,
            "description": "CRUD with ETag/If-Match; list responses carry a cursor to subscribe from.",
        },
        "paths": paths,
        "components": components,
    }


def _collection(r: Resource, token: bool, settings: Settings) -> Doc:
    reads = _auth_statuses(token)
    return {
        "get": _operation(
            f"list {r.name}",
            {200: f"{r.title}Page"},
            [400, *reads, 503],
            token,
            parameters=_list_parameters(r, settings),
        ),
        "post": _operation(
            f"create a {r.title.lower()}",
            {201: r.title},
            [400, *reads, *_refusals(r), 413, 415, 422, 503],
            token,
            parameters=_write_headers(token),
            body=f"{r.title}Create",
            headers={201: ["ETag", "Location"]},
        ),
    }


def _item(r: Resource, token: bool) -> Doc:
    reads = _auth_statuses(token)
    writes = [400, *reads, 404, *_refusals(r), 412, 428, 503]
    ident = _key_parameters(r)
    precondition = [*ident, _if_match(), *_write_headers(token)]
    etag = {200: ["ETag"]}
    stale = {412: f"{r.title}Stale"}
    return {
        "get": _operation(
            f"read a {r.title.lower()}", {200: r.title}, [*reads, 404, 503], token, ident, headers=etag
        ),
        "put": _operation(
            f"replace a {r.title.lower()}",
            {200: r.title, **stale},
            [*writes, 413, 415, 422],
            token,
            precondition,
            body=f"{r.title}Replace",
            headers=etag,
        ),
        "patch": _operation(
            f"change some fields of a {r.title.lower()}",
            {200: r.title, **stale},
            [*writes, 413, 415, 422],
            token,
            precondition,
            body=f"{r.title}Patch",
            headers=etag,
        ),
        "delete": _operation(
            f"delete a {r.title.lower()}", {204: None, **stale}, writes, token, precondition
        ),
    }


def _key_parameters(r: Resource) -> list[Doc]:
    """One path parameter per primary-key column, in key order, each percent-encoded."""
    params = []
    for name, column in zip(r.key_parameters, r.keys, strict=True):
        schema = schemas.filter_schema(r.fields[column.name])
        param: Doc = {"name": name, "in": "path", "required": True, "schema": schema}
        if name != column.name:
            param["description"] = f"the value of {column.name}"
        params.append(param)
    return params


def _operation(
    summary: str,
    success: dict[int, str | None],
    errors: list[int],
    token: bool,
    parameters: list[Doc],
    *,
    body: str | None = None,
    headers: dict[int, list[str]] | None = None,
) -> Doc:
    responses: Doc = {}
    for status, schema in sorted({**{e: "Error" for e in errors}, **success}.items()):
        response: Doc = {"description": _DESCRIPTIONS.get(status, CODES.get(status, ""))}
        if schema is not None:
            response["content"] = {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}
        names = ["X-Request-ID", *(headers or {}).get(status, [])]
        response["headers"] = {n: {"$ref": f"#/components/headers/{n}"} for n in names}
        responses[str(status)] = response
    operation: Doc = {"summary": summary, "parameters": [*parameters, _request_id()], "responses": responses}
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}},
        }
    if token:
        operation["security"] = [{"bearer": []}]
    return operation


def _refusals(r: Resource) -> list[int]:
    """409 where the table's own constraints decide (a declared resource mirrors them instead)."""
    return [409] if r.reflected else []


def _auth_statuses(token: bool) -> list[int]:
    return [401, 403] if token else []


def _list_parameters(r: Resource, settings: Settings) -> list[Doc]:
    sortable = "|".join(r.sort_fields)
    params: list[Doc] = [
        _query("limit", {"type": "integer", "minimum": 0, "maximum": settings.max_page_size}),
        _query("offset", {"type": "integer", "minimum": 0, "maximum": listing.MAX_OFFSET}),
        _query(
            "sort",
            {"type": "string", "pattern": f"^-?({sortable})(,-?({sortable}))*$"},
            "comma-separated columns, `-` for descending; ties are broken by the primary key",
        ),
    ]
    for name, field in r.filter_fields.items():
        value = schemas.filter_schema(field)
        params.append(_query(name, value, f"{name} equals"))
        for op in listing.OPERATORS:
            if op == "like" and field.kind != "text":
                continue
            schema = {"type": "boolean"} if op == "is_null" else _in_list(field.kind) if op == "in" else value
            params.append(_query(f"{name}.{op}", schema, _OP_TEXT[op]))
    return params


def _in_list(kind: str) -> Doc:
    if kind == "integer":
        return {"type": "string", "pattern": r"^[+-]?[0-9]{1,10}(,[+-]?[0-9]{1,10})*$"}
    return {"type": "string"}


_OP_TEXT = {
    "eq": "equals",
    "neq": "differs (null never matches)",
    "lt": "less than",
    "lte": "at most",
    "gt": "greater than",
    "gte": "at least",
    "like": "SQL LIKE pattern (% and _)",
    "in": "one of a comma-separated list",
    "is_null": "true: null; false: not null",
}


def _query(name: str, schema: Doc, description: str = "") -> Doc:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _if_match() -> Doc:
    return {
        "name": "If-Match",
        "in": "header",
        "required": True,
        "description": 'the ETag you read, e.g. "3"; * overwrites any version',
        "schema": {"type": "string", "pattern": r'^(\*|"[0-9]{1,10}")$'},
    }


def _request_id() -> Doc:
    return {
        "name": "X-Request-ID",
        "in": "header",
        "required": False,
        "description": (
            "echoed back and recorded with the change; up to 128 of A-Z a-z 0-9 . _ : -, "
            "anything else is replaced by a generated id (never rejected)"
        ),
        "schema": {"type": "string"},
    }


def _write_headers(token: bool) -> list[Doc]:
    if token:
        return []  # the actor is the token's subject
    return [
        {
            "name": "X-Actor",
            "in": "header",
            "required": False,
            "description": "who to record as the writer (open mode only); percent-encoded UTF-8 beyond ASCII",
            "schema": {"type": "string", "pattern": r"^[\x20-\x7e]{1,300}$"},
        }
    ]


def _health() -> Doc:
    return {
        "summary": "200 while the database answers",
        "parameters": [_request_id()],
        "responses": {
            str(status): {
                "description": "ok" if status == 200 else "database unavailable",
                "headers": {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}},
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {"status": {"type": "string"}},
                            "required": ["status"],
                        }
                    }
                },
            }
            for status in (200, 503)
        },
    }


def _self_description() -> Doc:
    return {
        "summary": "this document",
        "parameters": [_request_id()],
        "responses": {
            "200": {
                "description": "OpenAPI 3.1",
                "headers": {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}},
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
    }
