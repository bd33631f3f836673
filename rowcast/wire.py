"""The wire vocabulary shared by the servers, the Python client and docs/PROTOCOL.md: WebSocket
close codes (also the `code` of an SSE `close` event) and the error codes of error frames and
JSON error bodies. Defined once here; tests/unit/test_wire.py checks the protocol document."""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class Close(IntEnum):
    """Close codes a server sends. 1006 is never sent (RFC 6455 7.4.1: it reports a connection
    that ended without a close frame); a lost connection is simply dropped."""

    GOING_AWAY = 1001  # the server shuts down or drains: reconnect (elsewhere) and resume
    TOO_BIG = 1009  # a client frame over ROWCAST_MAX_FRAME_BYTES
    AUTH = 4001  # token missing, invalid or expired: refresh and reconnect
    SLOW = 4008  # slow consumer, the queue overflowed: reconnect and resume from your cursor
    RATE = 4029  # too many messages or connections


# Error codes: the `code` of an `error` frame (WebSocket) and the `error` of a JSON error body
# (handshake refusals, SSE, long-poll) of the notifier; the REST API has its own (api/errors.py).
# docs/PROTOCOL.md lists each where it can occur.
FRAME_ERRORS = frozenset(
    {
        "bad_json", "bad_frame", "unknown_type", "bad_table", "unknown_table", "unknown_column",
        "unknown_operator", "bad_value", "bad_cursor", "duplicate_ref", "unknown_ref", "forbidden",
        "too_many_subscriptions", "rate_limited", "undecodable_change", "too_many_presence_rows",
        "unavailable",
    }
)  # fmt: skip
HTTP_ERRORS = frozenset(
    {
        "upgrade_required", "bad_handshake", "host_not_allowed", "origin_not_allowed", "unauthorized",
        "too_many_connections", "token_expired", "forbidden", "resync_required", "too_many_longpolls",
        "busy", "unavailable", "bad_value", "bad_cursor", "bad_json", "bad_table",
        "unknown_table", "unknown_column", "unknown_operator",
    }
)  # fmt: skip


def error(code: str, message: str, **context: Any) -> dict[str, Any]:
    """The one JSON shape of every error the notifier sends: an HTTP error body, the data of an
    SSE `error` event and the payload of a WebSocket `error` frame are all
    `{"error": code, "message": text, ...context}` (context: `ref`, `about`, a change's `id`, ...).
    Frames also carry `code`, the same value, for clients written before the shapes were one
    (deprecated; docs/PROTOCOL.md). An unknown code is a bug here, not a message for a client."""
    if code not in FRAME_ERRORS and code not in HTTP_ERRORS:
        raise ValueError(f"{code!r} is not an error code of rowcast.wire")
    return {"error": code, "message": message, **context}


def error_frame(code: str, message: str, **context: Any) -> dict[str, Any]:
    """`error(...)` as the payload of a WebSocket `error` frame or an SSE `error` event."""
    return {**error(code, message, **context), "code": code}
