"""DDL on a captured table, as the notifier learns it: from the change log, in order with the data.

The DDL event trigger (db/sql/capture_v4.sql) appends one log row per DDL command on a captured
table: op `schema` (its columns, key and maybe its former name after an ALTER) or op `drop`.
Reading it like any other change means no restart, no second channel and no race: a change
logged after an `ADD COLUMN` reaches the hub after the catalog knows the column.

What a subscriber sees (docs/PROTOCOL.md "Schema changes"):
- `schema_changed` with the table's columns, key and `renamed_from`, for every ALTER;
- if its filter, projection or token scope names a column that is gone (or changed type), or a
  rename takes the table out of what its token may read: an `error` frame, and it ends;
- a renamed table: the subscription follows it (same table, new name);
- a dropped table: `resync_required` with reason `table_dropped`, and it ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rowcast.notifier.events import DROP, Event

from rowcast import names
from rowcast.auth import Principal


@dataclass(frozen=True)
class TableChange:
    schema: str
    table: str
    columns: dict[str, str]  # name -> pg_type.typcategory, in column order
    types: tuple[tuple[str, str], ...]  # (name, format_type) as the frame shows them
    pk: tuple[str, ...]
    renamed_from: tuple[str, str] | None
    dropped: bool

    @property
    def key(self) -> str:
        return names.canonical(self.schema, self.table)

    @property
    def old_key(self) -> str | None:
        return names.canonical(*self.renamed_from) if self.renamed_from else None

    @classmethod
    def from_event(cls, event: Event) -> TableChange:
        """Raises ValueError if the log row is not what the event trigger writes."""
        body = event.row
        if not isinstance(body, dict):
            raise ValueError(f"DDL log row {event.id} has no description")
        try:
            columns = [
                (str(c["name"]), str(c.get("type", "")), str(c.get("category", ""))) for c in body["columns"]
            ]
            pk = tuple(str(c) for c in body["pk"])
            renamed = body.get("renamed_from")
            renamed_from = (str(renamed["schema"]), str(renamed["table"])) if renamed else None
        except (KeyError, TypeError) as exc:
            raise ValueError(f"DDL log row {event.id} is malformed: {exc!r}") from None
        return cls(
            event.schema,
            event.table,
            {name: category for name, _, category in columns},
            tuple((name, type_) for name, type_, _ in columns),
            pk,
            renamed_from,
            event.op == DROP,
        )

    def payload(self, event: Event) -> dict[str, Any]:
        """The fields a `schema_changed` frame (or a long-poll entry) carries: never row data or
        who ran the DDL."""
        renamed = (
            {"schema": self.renamed_from[0], "table": self.renamed_from[1]} if self.renamed_from else None
        )
        return {
            "id": event.id,
            "schema": self.schema,
            "table": self.table,
            "op": event.op,
            "columns": [{"name": n, "type": t} for n, t in self.types],
            "pk": list(self.pk),
            "renamed_from": renamed,
            "at": event.at,
        }


def problem(
    change: TableChange,
    principal: Principal,
    old_key: str,
    filter_columns: dict[str, str],
    projection: tuple[str, ...] | None,
) -> tuple[str, str] | None:
    """Why a subscription to `old_key` cannot go on after `change` (code, message), or None.

    Fails closed: a rename must not move a scoped subscription out of its scope (scopes are keyed
    by table name), and a column the subscription depends on must still mean what it meant.
    """
    new_key = change.key
    if new_key != old_key:
        if not principal.can_read(new_key):
            return (
                "forbidden",
                f"table {old_key} was renamed to {new_key}, which your token does not allow reading",
            )
        if dict(principal.scope(new_key)) != dict(principal.scope(old_key)):
            return (
                "forbidden",
                f"table {old_key} was renamed to {new_key}: your token's scope does not cover it",
            )
    for column, category in filter_columns.items():
        if change.columns.get(column) != category:
            return "unknown_column", f"column {column} of {new_key} was dropped, renamed or changed type"
    for column in projection or ():
        if column not in change.columns:
            return "unknown_column", f"column {column} of {new_key} was dropped or renamed"
    for column in principal.scope(new_key):
        if column not in change.columns:
            return "forbidden", f"your token's scope names a column {new_key} no longer has: {column}"
    return None
