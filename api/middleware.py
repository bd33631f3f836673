"""The /api middleware: request id, CORS, and every failure turned into a JSON error body.

It touches only paths under /api: the same aiohttp app also serves the notifier and the web page.
"""

from __future__ import annotations

import logging
import re
import uuid

import psycopg.errors
import sqlalchemy.exc
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from rowcast.api import cors
from rowcast.api.errors import ApiError

from rowcast.settings import Settings

log = logging.getLogger("rowcast.api")

REQUEST_ID_HEADER = "X-Request-ID"
# web.RequestKey needs aiohttp >= 3.14 (string keys warn there).
_REQUEST_ID_KEY = web.RequestKey("rowcast.api.request_id", str)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Errors that mean "the database is not reachable right now", not "the API is broken".
_UNAVAILABLE = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.TimeoutError)


_RETRY = {"Retry-After": "1"}


def is_api(request: web.BaseRequest) -> bool:
    return request.path == "/api" or request.path.startswith("/api/")


def request_id(request: web.Request) -> str:
    """The id of this request: the client's valid `X-Request-ID`, else a generated one."""
    return request[_REQUEST_ID_KEY]


def choose_request_id(header: str | None) -> str:
    if header is not None and _REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


def api_middleware(settings: Settings) -> Middleware:
    origins = frozenset(settings.cors_origins)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not is_api(request):
            return await handler(request)
        rid = choose_request_id(request.headers.get(REQUEST_ID_HEADER))
        request[_REQUEST_ID_KEY] = rid
        if cors.is_preflight(request, origins):
            response: web.StreamResponse = cors.preflight()
        else:
            response = await _json_errors(request, handler, rid)
        response.headers[REQUEST_ID_HEADER] = rid
        cors.decorate(request, response, origins)
        return response

    return middleware


async def _json_errors(request: web.Request, handler: Handler, rid: str) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _from_http_exception(exc).response()
    except sqlalchemy.exc.IntegrityError as exc:
        return _refused(exc, 409, "conflict").response()
    except sqlalchemy.exc.DataError as exc:
        return _refused(exc, 422, "validation_failed").response()
    except _UNAVAILABLE as exc:
        if isinstance(getattr(exc, "orig", None), psycopg.errors.LockNotAvailable):
            return ApiError(
                503, "the row is locked by another transaction; try again", headers=_RETRY
            ).response()
        log.warning("database unavailable (request %s): %s", rid, str(exc).splitlines()[0])
        return ApiError(503, "the database is unavailable; try again shortly", headers=_RETRY).response()
    except Exception:
        log.exception("unexpected error answering %s %s (request %s)", request.method, request.path, rid)
        return ApiError(500, f"internal error; quote request id {rid} when reporting it").response()


def _refused(exc: sqlalchemy.exc.DBAPIError, status: int, code: str) -> ApiError:
    """A write the database refused: a served table's constraints are its own, not the API's.

    409 for a constraint (unique, foreign key, check, not null), 422 for a value its type refuses
    (numeric overflow, a label not in an enum). Postgres's first line says which, for the client.
    """
    diag = getattr(exc.orig, "diag", None)
    detail = getattr(diag, "message_primary", None) or "the database refused the write"
    constraint = getattr(diag, "constraint_name", None)
    extra = {"constraint": constraint} if constraint else {}
    return ApiError(status, str(detail)[:300], code=code, extra=extra)


def _from_http_exception(exc: web.HTTPException) -> ApiError:
    """aiohttp's own errors (unknown path, wrong method) as JSON, keeping the Allow header."""
    allow = exc.headers.get("Allow")
    if exc.status == 404:
        return ApiError(404, "no such resource")
    if exc.status == 405 and allow is not None:
        return ApiError(405, f"method not allowed here; allowed: {allow}", headers={"Allow": allow})
    return ApiError(exc.status, exc.reason)
