"""A change event, parsed once from a NOTIFY payload or a change-log row."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# The columns of rowcast.changes, in the order the replay queries select them.
LOG_COLUMNS = (
    'id, xid::text, at, schema_name, table_name, op, pk, "row", old, '
    "db_user, application_name, host(client_addr), actor, request_id"
)


@dataclass(eq=False)
class Event:
    id: int
    xid: int
    at: str
    schema: str
    table: str
    op: str
    pk: dict[str, Any] | None
    row: dict[str, Any] | None
    old: dict[str, Any] | None
    actor: dict[str, Any]
    # Encoded bodies of this event, one per distinct view (see notifier/views.py).
    encoded: dict[Any, str] = field(default_factory=dict, repr=False)

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

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> Event:
        """From the JSON the capture trigger sends; raises KeyError/TypeError/ValueError if malformed."""
        return cls(
            id=int(data["id"]),
            xid=int(data["xid"]),
            at=str(data["at"]),
            schema=str(data["schema"]),
            table=str(data["table"]),
            op=str(data["op"]),
            pk=data.get("pk"),
            row=data.get("row"),
            old=data.get("old"),
            actor=dict(data.get("actor") or {}),
        )

    @classmethod
    def from_log_row(cls, r: tuple[Any, ...]) -> Event:
        """From a row selected with LOG_COLUMNS."""
        at = r[2]
        return cls(
            id=int(r[0]),
            xid=int(r[1]),
            at=at.isoformat() if hasattr(at, "isoformat") else str(at),
            schema=r[3],
            table=r[4],
            op=r[5],
            pk=r[6],
            row=r[7],
            old=r[8],
            actor={"user": r[9], "app": r[10], "addr": r[11], "actor": r[12], "request_id": r[13]},
        )
