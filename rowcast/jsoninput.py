"""JSON from clients (WebSocket frames, `where` query parameters, REST bodies), depth-checked.

`json.loads` recurses: about 1,000 levels of `[` raise RecursionError, and a value a little
shallower can still overflow the stack of whatever walks it next (repr in an error message).
Everything rowcast accepts is shallow, so anything deeper than MAX_DEPTH is refused clearly.
"""

from __future__ import annotations

import json
from typing import Any

from rowcast import jsonexact

MAX_DEPTH = 32


class JSONInputError(ValueError):
    """The client's JSON is malformed or nested too deeply (the message says which)."""


def parse(text: str | bytes, *, max_depth: int = MAX_DEPTH, exact: bool = False, **options: Any) -> Any:
    """`json.loads(text, **options)`, refusing nesting deeper than `max_depth`.

    With `exact`, numbers keep the text the client wrote (rowcast.jsonexact), so a filter operand
    like 0.1000000000000000001 compares exactly.
    """
    if exact:
        if isinstance(text, bytes | bytearray):
            text = text.decode("utf-8", errors="replace")
        if jsonexact.depth(text) > max_depth:
            raise JSONInputError(f"JSON is nested more than {max_depth} levels deep")
        try:
            return jsonexact.loads(text)
        except ValueError as exc:
            raise JSONInputError(str(exc)[:200]) from None
    try:
        value = json.loads(text, **options)
    except RecursionError:
        raise JSONInputError(f"JSON is nested more than {max_depth} levels deep") from None
    except ValueError as exc:
        raise JSONInputError(str(exc)[:200]) from None
    if _deeper_than(value, max_depth):
        raise JSONInputError(f"JSON is nested more than {max_depth} levels deep")
    return value


def _deeper_than(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False
