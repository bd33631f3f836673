"""A change event, parsed once from a NOTIFY payload or a change-log row.

`raw` is the event's JSON text as Postgres built it (the trigger's payload, or the same object
built in SQL during a replay). A subscriber that sees the whole event unfiltered gets that text
verbatim, so the common path encodes nothing; the row images are parsed only when a filter, a
scope or a column projection needs them.
"""

from __future__ import annotations

import json
from typing import Any

# What a replay selects: the routing fields, the key, and the whole event as JSON text.
# json_build_object (text), not jsonb_build_object, and the key as text: measured about 1.5x
# faster per row, and replay speed is bounded by this query.
LOG_COLUMNS = (
    "id, xid::text, schema_name, table_name, op, pk::text, "
    "json_build_object('id', id, 'xid', xid::text, 'at', at, 'schema', schema_name, "
    "'table', table_name, 'op', op, 'pk', pk, 'row', \"row\", 'old', old, "
    "'actor', json_build_object('user', db_user, 'app', application_name, "
    "'addr', host(client_addr), 'actor', actor, 'request_id', request_id))::text, "
    "to_json(at)::text"
)

_UNPARSED: Any = object()


class Event:
    __slots__ = (
        "_actor",
        "_at",
        "_old",
        "_pk",
        "_row",
        "encoded",
        "id",
        "op",
        "raw",
        "schema",
        "table",
        "xid",
    )

    def __init__(
        self,
        id: int,
        xid: int,
        at: str,
        schema: str,
        table: str,
        op: str,
        pk: dict[str, Any] | None,
        row: dict[str, Any] | None = None,
        old: dict[str, Any] | None = None,
        actor: dict[str, Any] | None = None,
        raw: str | None = None,
    ) -> None:
        self.id = id
        self.xid = xid
        self.schema = schema
        self.table = table
        self.op = op
        self._pk: Any = pk
        self.raw = raw
        self._at = at
        self._row = row
        self._old = old
        self._actor = actor if actor is not None else ({} if raw is None else _UNPARSED)
        # Encoded bodies of this event, one per distinct view (see notifier/hub.py).
        self.encoded: dict[Any, str] = {}

    def _parse(self) -> None:
        assert self.raw is not None
        data = json.loads(self.raw)
        self._row, self._old, self._actor, self._at = (
            data.get("row"),
            data.get("old"),
            data.get("actor") or {},
            data["at"],
        )

    @property
    def pk(self) -> dict[str, Any] | None:
        if isinstance(self._pk, str):  # from the log: the key's JSON text
            self._pk = json.loads(self._pk)
        return self._pk  # type: ignore[no-any-return]

    @property
    def row(self) -> dict[str, Any] | None:
        if self._row is _UNPARSED:
            self._parse()
        return self._row

    @property
    def old(self) -> dict[str, Any] | None:
        if self._old is _UNPARSED:
            self._parse()
        return self._old

    @property
    def actor(self) -> dict[str, Any]:
        if self._actor is _UNPARSED:
            self._parse()
        return self._actor  # type: ignore[no-any-return]

    @property
    def at(self) -> str:
        if self._at is _UNPARSED:
            self._parse()
        return self._at  # type: ignore[no-any-return]

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def row_key(self) -> str:
        """Identity of the row across events: the canonical JSON of its primary key."""
        return json.dumps(self.pk, sort_keys=True, separators=(",", ":"))

    def old_image(self) -> dict[str, Any] | None:
        """The full row before the change (an update's `old` holds only the changed columns)."""
        if self.op == "update" and self.row is not None:
            return {**self.row, **(self.old or {})}
        if self.op == "delete":
            return self.old
        return None

    def __repr__(self) -> str:
        return f"Event(id={self.id}, xid={self.xid}, {self.op} {self.qualified} {self.pk})"

    @classmethod
    def from_payload(cls, data: dict[str, Any], raw: str | None = None) -> Event:
        """From the JSON the capture trigger sends; raises KeyError/TypeError/ValueError if malformed."""
        return cls(
            int(data["id"]),
            int(data["xid"]),
            str(data["at"]),
            str(data["schema"]),
            str(data["table"]),
            str(data["op"]),
            data.get("pk"),
            data.get("row"),
            data.get("old"),
            dict(data.get("actor") or {}),
            raw,
        )

    @classmethod
    def from_log_row(cls, r: tuple[Any, ...]) -> Event:
        """From a row selected with LOG_COLUMNS; the images stay unparsed until needed."""
        # `at` comes as its own column so the lag metric never parses the row images.
        return cls(int(r[0]), int(r[1]), r[7][1:-1], r[2], r[3], r[4], r[5], _UNPARSED, _UNPARSED, None, r[6])
