"""A change event, parsed once from a NOTIFY payload or a change-log row.

`raw` is the event's JSON text as Postgres built it (the trigger's payload, or the same object
built in SQL during a replay). A subscriber that sees the whole event unfiltered gets that text
verbatim, so the common path encodes nothing; the row images are parsed only when a filter, a
scope or a column projection needs them, with the exact codec (rowcast/jsonexact.py: numbers stay
the text Postgres wrote). Images that cannot be parsed (jsonb nested deeper than the codec allows)
make the event *undecodable*: it still goes out verbatim to unfiltered subscribers, and the hub
tells the others with an error frame.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from rowcast.db import queries

from rowcast import jsonexact, names

# What a replay selects: the routing fields, the key, and the whole event as JSON text.
# json_build_object (text), not jsonb_build_object, and the key as text: measured about 1.5x
# faster per row, and replay speed is bounded by this query.
LOG_COLUMNS = queries.sql("log_columns")  # db/sql/queries.sql; a row of it is a LogRow


class LogRow(NamedTuple):
    """A change-log row as LOG_COLUMNS selects it, column for column."""

    id: int
    xid: str  # xid::text
    schema_name: str
    table_name: str
    op: str
    pk: str  # pk::text
    event: str  # the whole event as JSON text, as Postgres wrote it
    at: str  # to_json(at)::text: a quoted timestamp


_UNPARSED: Any = object()

# Log rows the DDL event trigger writes (db/sql/capture_v4.sql): not row changes but news about
# the table itself. `row` holds {"columns": [{"name", "type", "category"}…], "pk": […],
# "renamed_from": {"schema", "table"} | null}; schema_name/table_name are the names after the DDL.
SCHEMA, DROP = "schema", "drop"
SCHEMA_OPS = frozenset({SCHEMA, DROP})


class UndecodableChange(ValueError):
    """The change's row images cannot be parsed (e.g. jsonb nested deeper than jsonexact.MAX_DEPTH)."""


class Event:
    __slots__ = (
        "_actor",
        "_at",
        "_error",
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
        pk: dict[str, Any] | str | None,  # str: the key's JSON text, parsed when first needed
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
        self._error: str | None = None  # why the images did not parse, once they did not
        self._at = at
        self._row = row
        self._old = old
        self._actor = actor if actor is not None else ({} if raw is None else _UNPARSED)
        # Encoded bodies of this event, one per distinct view (see notifier/hub.py).
        self.encoded: dict[Any, str] = {}

    def _parse(self) -> None:
        assert self.raw is not None
        if self._error is not None:  # failed before: don't scan the text again
            raise UndecodableChange(f"change {self.id} of {self.qualified}: {self._error}")
        try:
            data = jsonexact.loads(self.raw)
        except ValueError as exc:  # jsonexact.TooDeep (or text that is not JSON at all)
            self._error = str(exc)
            raise UndecodableChange(f"change {self.id} of {self.qualified}: {exc}") from None
        self._row, self._old = data.get("row"), data.get("old")
        if self._actor is _UNPARSED:
            self._actor = data.get("actor") or {}
        if self._at is _UNPARSED:
            self._at = data["at"]
        if self._pk is _UNPARSED:
            self._pk = data.get("pk")

    @property
    def decodable(self) -> bool:
        """Whether the row images parse; parses them if that was not done yet."""
        try:
            self.row  # noqa: B018 -- parses
        except UndecodableChange:
            return False
        return True

    @property
    def undecodable_reason(self) -> str | None:
        """Why the images did not parse, once they did not (see `decodable`)."""
        return self._error

    @property
    def pk(self) -> dict[str, Any] | None:
        if self._pk is _UNPARSED:  # from a payload: parsed exactly from `raw` with the images
            self._parse()
        elif isinstance(self._pk, str):  # from the log: the key's JSON text
            try:
                self._pk = jsonexact.loads(self._pk)
            except ValueError as exc:
                raise UndecodableChange(f"change {self.id} of {self.qualified}: key: {exc}") from None
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
        return names.canonical(self.schema, self.table)

    @property
    def row_key(self) -> str:
        """Identity of the row across events: the canonical JSON of its primary key."""
        return jsonexact.dumps(self.pk, sort_keys=True)

    def old_image(self) -> dict[str, Any] | None:
        """The full row before the change (an update's `old` holds only the changed columns)."""
        if self.op == "update" and self.row is not None:
            return {**self.row, **(self.old or {})}
        if self.op == "delete":
            return self.old
        return None

    def __repr__(self) -> str:
        pk = "?" if self._pk is _UNPARSED else self._pk  # never parse (or fail) in a log line
        return f"Event(id={self.id}, xid={self.xid}, {self.op} {self.qualified} {pk})"

    @classmethod
    def from_payload(cls, data: dict[str, Any], raw: str | None = None, *, exact: bool = False) -> Event:
        """From the JSON the capture trigger sends; raises KeyError/TypeError/ValueError if malformed.

        With `raw`, only the routing fields are taken from `data`: the key and the images are
        parsed from `raw` with the exact codec when needed, so numbers the caller's parser
        rounded (or images it replaced, see jsonexact.shallow) never reach a subscriber. Pass
        `exact=True` when `data` is jsonexact.loads(raw) itself, to use its images as they are.
        """
        exact = exact or raw is None
        return cls(
            int(data["id"]),
            int(data["xid"]),
            str(data["at"]),
            str(data["schema"]),
            str(data["table"]),
            str(data["op"]),
            data.get("pk") if exact else _UNPARSED,
            data.get("row") if exact else _UNPARSED,
            data.get("old") if exact else _UNPARSED,
            dict(data.get("actor") or {}),
            raw,
        )

    @classmethod
    def from_log_row(cls, row: LogRow | tuple[Any, ...]) -> Event:
        """From a row selected with LOG_COLUMNS (a LogRow); the images stay unparsed until needed."""
        # Unpacked in LogRow's order: as fast as indexing, and the shape is declared once.
        # `at` comes as its own column so the lag metric never parses the row images.
        id_, xid, schema_name, table_name, op, pk, event, at = row
        return cls(int(id_), int(xid), at[1:-1], schema_name, table_name, op, pk, _UNPARSED, _UNPARSED, None, event)
