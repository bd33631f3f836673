"""API errors: one exception carrying status, code and message, rendered as a JSON body."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from rowcast import jsonexact

# HTTP status -> the `error` code a body carries when nothing more specific was chosen.
CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    412: "precondition_failed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    428: "precondition_required",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(Exception):
    """A request the API answers with an error status and a JSON body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        fields: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or CODES.get(status, "error")
        self.message = message
        self.fields = dict(fields) if fields else None
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.fields:
            body["fields"] = self.fields
        body.update(self.extra)
        return body

    def response(self) -> web.Response:
        # Exact JSON: a 412 carries the current row, numerics and all.
        return web.json_response(self.body(), status=self.status, headers=self.headers, dumps=jsonexact.dumps)


def not_found(what: str = "no such resource") -> ApiError:
    return ApiError(404, what)


def invalid(fields: Mapping[str, str], message: str = "the request body is invalid") -> ApiError:
    return ApiError(422, message, fields=fields)


def bad_query(message: str) -> ApiError:
    return ApiError(400, message, code="bad_query")
