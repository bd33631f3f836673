"""Request bodies: read within the size limit, parse as JSON, check against the resource's fields."""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from rowcast.api.errors import ApiError, invalid
from rowcast.api.fields import FieldError
from rowcast.api.resources import Resource

from rowcast import jsoninput

Mode = Literal["create", "replace", "patch"]
MAX_REPORTED = 50  # field errors listed in one response; a hostile body could name thousands


def is_json(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


async def read_json(request: web.Request, max_bytes: int) -> Any:
    """The request body as JSON: 415 unless it is JSON, 413 above `max_bytes`, 400 if malformed."""
    if not is_json(request.content_type):
        raise ApiError(415, f"send the body as application/json, not {request.content_type[:100]!r}")
    if request.charset and request.charset.lower() not in ("utf-8", "utf8"):
        raise ApiError(415, f"send the body as UTF-8, not {request.charset[:40]!r}")
    if request.content_length is not None and request.content_length > max_bytes:
        raise _too_large(max_bytes)
    raw = await _read_limited(request, max_bytes)
    try:
        # Exact: a numeric column gets the digits the client sent, never a float's approximation.
        return jsoninput.parse(raw.decode("utf-8"), exact=True)
    except ValueError as exc:  # UnicodeDecodeError and JSONInputError are ValueErrors
        raise ApiError(400, f"the body is not valid JSON: {str(exc)[:200]}", code="bad_json") from None


def validate(resource: Resource, body: Any, mode: Mode) -> dict[str, Any]:
    """The column values a write sets, checked; 422 with one message per bad field."""
    if not isinstance(body, dict):
        raise ApiError(422, "the body must be a JSON object")
    if mode == "patch" and not body:
        raise ApiError(422, "a PATCH needs at least one field")
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    for name, value in body.items():
        field = resource.fields.get(name)
        if field is None:
            errors[name] = "unknown field"
        elif field.kind == "other":
            errors[name] = f"read-only field: the API cannot check a {field.type_name} value"
        elif not field.writable:
            errors[name] = "read-only field"
        else:
            try:
                values[name] = field.from_json(value)
            except FieldError as exc:
                errors[name] = str(exc)
    for field in resource.fields.values():
        needed = mode == "replace" or (mode == "create" and field.required_on_create)
        if field.writable and needed and field.name not in body:
            errors[field.name] = "required"
    if errors:
        shown = dict(list(errors.items())[:MAX_REPORTED])
        raise invalid(shown, f"{len(errors)} field(s) are invalid")
    return values


async def _read_limited(request: web.Request, max_bytes: int) -> bytes:
    # Read the stream ourselves: the app's client_max_size belongs to whoever created the app.
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(64 * 1024):
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(max_bytes: int) -> ApiError:
    return ApiError(413, f"the body is larger than {max_bytes} bytes")
