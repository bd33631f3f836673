"""The wire vocabulary is defined once (rowcast.wire): every error code the notifier emits is
in it, and docs/PROTOCOL.md documents exactly its close codes and every one of its error codes."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from rowcast import wire

ROOT = Path(__file__).resolve().parents[2]
PROTOCOL = (ROOT / "docs" / "PROTOCOL.md").read_text()
SNAKE = re.compile(r"^[a-z]+(_[a-z]+)+$|^(busy|forbidden|unauthorized|unavailable)$")


def emitted_codes(path: Path) -> set[str]:
    """String constants used as an error code: the code argument of an *Error(...) or
    json_error(...) call, and the value of an "error"/"code" key in a dict literal."""
    codes: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name.endswith("Error") or name == "json_error":
                args = [a for a in node.args if not (isinstance(a, ast.Constant) and isinstance(a.value, int))]
                first = args[0] if args else None
                if isinstance(first, ast.Constant) and isinstance(first.value, str) and SNAKE.match(first.value):
                    codes.add(first.value)
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if (
                    isinstance(key, ast.Constant)
                    and key.value in ("error", "code")
                    and isinstance(value, ast.Constant)
                    and isinstance(value.value, str)
                    and SNAKE.match(value.value)
                ):
                    codes.add(value.value)
    return codes


def test_every_error_code_the_notifier_emits_is_in_the_vocabulary() -> None:
    known = wire.FRAME_ERRORS | wire.HTTP_ERRORS
    strays = {
        str(path.relative_to(ROOT)): sorted(emitted_codes(path) - known)
        for path in sorted((ROOT / "notifier").glob("*.py"))
        if emitted_codes(path) - known
    }
    assert not strays, f"error codes not in rowcast.wire: {strays}"


def test_the_protocol_document_names_every_error_code() -> None:
    documented = set(re.findall(r"`([a-z_]+)`", PROTOCOL))
    missing = sorted((wire.FRAME_ERRORS | wire.HTTP_ERRORS) - documented)
    assert not missing, f"docs/PROTOCOL.md does not mention {missing}"


def test_the_close_codes_are_the_documented_ones_and_1006_is_never_sent() -> None:
    line = PROTOCOL[PROTOCOL.index("Close codes:") :].split("\n\n")[0]
    assert {int(code) for code in re.findall(r"`(\d{4})`", line)} == {int(c) for c in wire.Close}
    assert 1006 not in {int(c) for c in wire.Close}
    literals = {
        node.value
        for path in (ROOT / "notifier").glob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, int) and 1000 <= node.value < 5000
        and node.value in (1001, 1006, 1008, 1009, 1011, 4001, 4008, 4029)
    }
    assert not literals, f"close codes spelled as literals in notifier/: {sorted(literals)} (use rowcast.wire.Close)"


def test_the_notifier_builds_error_bodies_and_frames_only_through_wire_error() -> None:
    """No hand-made `{"error": ...}` or `{"code": ...}` dict in the notifier: one shape, one maker."""
    handmade = []
    for path in sorted((ROOT / "notifier").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Dict):
                pairs = {k.value: v for k, v in zip(node.keys, node.values, strict=True) if isinstance(k, ast.Constant)}
                # An SSE close is {code, reason}: a close code. A long-poll entry's "error" is made by a call.
                coded = "code" in pairs and "reason" not in pairs
                if coded or ("error" in pairs and not isinstance(pairs["error"], ast.Call)):
                    handmade.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not handmade, f"error dicts built by hand (use rowcast.wire.error): {handmade}"
