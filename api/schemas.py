"""JSON Schemas (2020-12, as OpenAPI 3.1 uses them) for a resource's rows and request bodies."""

from __future__ import annotations

from typing import Any

from rowcast.api.fields import Field
from rowcast.api.resources import Resource

Schema = dict[str, Any]


def value_schema(field: Field, *, limits: bool = True) -> Schema:
    """The JSON Schema of one column's values (with its length and range limits if asked)."""
    schema: Schema
    if field.kind == "text":
        schema = {"type": "string"}
        if limits and field.min_length:
            schema["minLength"] = field.min_length
        if limits and field.max_length is not None:
            schema["maxLength"] = field.max_length
    elif field.kind == "integer":
        schema = {"type": "integer"}
        if limits and field.minimum is not None:
            schema["minimum"] = field.minimum
        if limits and field.maximum is not None:
            schema["maximum"] = field.maximum
    elif field.kind == "boolean":
        schema = {"type": "boolean"}
    else:
        schema = dict(_SCHEMAS[field.kind])
        if field.kind in ("numeric", "float", "other"):
            schema["description"] = f"Postgres {field.type_name}" + _NOTES.get(field.kind, "")
    if field.nullable and "type" in schema:
        schema["type"] = [schema["type"], "null"]
    return schema


_NOTES = {"numeric": "; a write may send the number as a string to keep every digit"}
# Kinds without limits. A numeric is written as a JSON number, digit for digit.
_SCHEMAS: dict[str, Schema] = {
    "timestamp": {"type": "string", "format": "date-time"},
    "date": {"type": "string", "format": "date"},
    "uuid": {"type": "string", "format": "uuid"},
    "numeric": {"type": "number"},
    "float": {"type": "number"},
    "json": {},
    "other": {},  # read-only: its JSON form when it has one (an array), else its text
}


def filter_schema(field: Field) -> Schema:
    """A filter value: any value of the column's type (filters compare; limits bind writes only)."""
    schema = value_schema(field, limits=False)
    if field.nullable and "type" in schema:
        schema["type"] = schema["type"][0]  # null is asked for with is_null
    if field.bounds is not None:
        schema["minimum"], schema["maximum"] = field.bounds
    return schema


def row(resource: Resource) -> Schema:
    return {
        "type": "object",
        "properties": {name: value_schema(f, limits=False) for name, f in resource.fields.items()},
        "required": list(resource.fields),
        "additionalProperties": False,
    }


def body(resource: Resource, mode: str) -> Schema:
    """The body of a create, replace (PUT: every writable field) or patch (any of them)."""
    writable = {name: f for name, f in resource.fields.items() if f.writable}
    schema: Schema = {
        "type": "object",
        "properties": {name: value_schema(f) for name, f in writable.items()},
        "additionalProperties": False,
    }
    if mode == "create":
        schema["required"] = [name for name, f in writable.items() if f.required_on_create]
    elif mode == "replace":
        schema["required"] = list(writable)
    else:
        schema["minProperties"] = 1
    return schema


def page(resource: Resource) -> Schema:
    return {
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": {"$ref": f"#/components/schemas/{resource.title}"}},
            "cursor": {
                "type": "string",
                "description": "Opaque resume point: subscribe with it to get every change this list missed.",
            },
            "limit": {"type": "integer", "minimum": 0},
            "offset": {"type": "integer", "minimum": 0},
            "total": {"type": "integer", "minimum": 0},
        },
        "required": ["items", "cursor", "limit", "offset", "total"],
        "additionalProperties": False,
    }


ERROR: Schema = {
    "type": "object",
    "properties": {
        "error": {"type": "string", "description": "machine-readable code, e.g. validation_failed"},
        "message": {"type": "string"},
        "fields": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "required": ["error", "message"],
}


def stale(resource: Resource) -> Schema:
    """The 412 body: the error plus the row as it is now."""
    return {
        "type": "object",
        "properties": {
            **ERROR["properties"],
            "error": {"const": "precondition_failed"},
            "current": {"$ref": f"#/components/schemas/{resource.title}"},
        },
        "required": ["error", "message", "current"],
    }
