"""SQL LIKE in linear time: `%` any run, `_` one character, backslash escapes (as in Postgres).

No regular expression: `re` backtracks, and a pattern like `%a%a%a%a!` against a long value
blocked the event loop for seconds. Here the pattern is split at `%` into segments; the first
must match at the start, the last at the end, and each one between is taken at its leftmost
occurrence after the previous one (leftmost is always safe, so nothing is ever retried).
A segment of plain text is found with `str.find`. A segment with `_` wildcards is found with
bit masks: one big integer per distinct character marks where it occurs in the value, and the
segment's start positions are the AND of those masks shifted by each character's offset, so
the work is a few C-level integer operations per pattern character, never per position pair.
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_PATTERN = 64  # characters in a like pattern: bounds the bit-mask work per value


class LikeSyntaxError(ValueError):
    """The pattern is too long or ends with a lone escape character."""


class Segment:
    """A run of the pattern between two `%`: literal pieces at fixed offsets, `_` in the gaps."""

    __slots__ = ("chars", "length", "pieces")

    def __init__(self, chars: Sequence[str | None]) -> None:
        self.length = len(chars)
        self.chars = tuple(chars)  # None: `_`
        pieces: list[tuple[int, str]] = []
        run: list[str] = []
        for offset, ch in enumerate([*chars, None]):
            if ch is None:
                if run:
                    pieces.append((offset - len(run), "".join(run)))
                    run = []
            else:
                run.append(ch)
        self.pieces = tuple(pieces)

    def at(self, value: str, start: int) -> bool:
        """Does the segment match `value` at `start` (which leaves room for it)?"""
        return all(value.startswith(piece, start + offset) for offset, piece in self.pieces)

    def find(self, value: str, start: int, end: int, cache: list[_Bits]) -> int:
        """The leftmost position in [start, end - length] where the segment matches, or -1."""
        last = end - self.length
        if last < start:
            return -1
        if not self.pieces:
            return start
        if len(self.pieces) == 1:
            offset, piece = self.pieces[0]
            found = value.find(piece, start + offset, last + offset + len(piece))
            return found - offset if found >= 0 else -1
        if any(piece not in value for _, piece in self.pieces):
            return -1
        if not cache:
            cache.append(_Bits(value))
        bits = cache[0]
        hits = -1  # every position
        for offset, ch in enumerate(self.chars):
            if ch is not None:
                hits &= bits.of(ch) >> (8 * offset)
                if not hits:
                    return -1
        hits = (hits >> (8 * start)) & ((1 << (8 * (last - start + 1))) - 1)
        if not hits:
            return -1
        return start + ((hits & -hits).bit_length() - 1) // 8


class _Bits:
    """Where each pattern character occurs in one value: integers with bit 8*i for position i.

    A Latin-1 value is one byte per character already. Any other is encoded as UTF-32 and cut
    into byte lanes (lane j holds byte j of every character): a character is where each lane
    holds its byte. `encode`, slicing, `translate` and `int.from_bytes` do the work in C.
    """

    __slots__ = ("lanes", "masks")

    def __init__(self, value: str) -> None:
        try:
            self.lanes = [value.encode("latin-1")]
        except UnicodeEncodeError:
            wide = value.encode("utf-32-le")
            self.lanes = [wide[j::4] for j in range(3)]  # byte 3 of a code point is always 0
        self.masks: dict[tuple[int, int], int] = {}

    def of(self, ch: str) -> int:
        code = ord(ch)
        if len(self.lanes) == 1 and code > 0xFF:
            return 0
        mask = -1
        for lane, byte in enumerate(code.to_bytes(4, "little")[: len(self.lanes)]):
            mask &= self._lane(lane, byte)
        return mask

    def _lane(self, lane: int, byte: int) -> int:
        mask = self.masks.get((lane, byte))
        if mask is None:
            data = self.lanes[lane]
            mask = self.masks[(lane, byte)] = int.from_bytes(data.translate(_TABLES[byte]), "little")
        return mask


# _TABLES[b] turns the byte b into 1 and every other byte into 0: bit 8*i marks position i.
_TABLES = [bytes(1 if i == b else 0 for i in range(256)) for b in range(256)]


class Like:
    """A compiled LIKE pattern; `match(value)` is the whole-value match SQL LIKE performs."""

    __slots__ = ("segments",)

    def __init__(self, pattern: str) -> None:
        if len(pattern) > MAX_PATTERN:
            raise LikeSyntaxError(f"a like pattern has at most {MAX_PATTERN} characters")
        segments: list[Segment] = []
        chars: list[str | None] = []
        escaped = False
        for ch in pattern:
            if escaped:
                chars.append(ch)
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == "%":
                segments.append(Segment(chars))
                chars = []
            elif ch == "_":
                chars.append(None)
            else:
                chars.append(ch)
        if escaped:
            raise LikeSyntaxError("a like pattern may not end with the escape character (backslash)")
        segments.append(Segment(chars))
        self.segments = tuple(segments)

    def match(self, value: str) -> bool:
        segments = self.segments
        head, tail = segments[0], segments[-1]
        if len(segments) == 1:
            return len(value) == head.length and head.at(value, 0)
        end = len(value) - tail.length
        if end < head.length or not head.at(value, 0) or not tail.at(value, end):
            return False
        position = head.length
        cache: list[_Bits] = []  # built on first need, shared by the segments
        for segment in segments[1:-1]:
            found = segment.find(value, position, end, cache)
            if found < 0:
                return False
            position = found + segment.length
        return True
