"""The README stays true: every setting is documented, every command it names exists."""

from __future__ import annotations

import re
from pathlib import Path

from rowcast.cli import build_parser
from rowcast.settings import _CONVERT, ENV, Settings, parse_duration

README = (Path(__file__).parents[2] / "README.md").read_text()


def test_every_environment_variable_is_in_the_configuration_table() -> None:
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", README, re.M))
    assert documented == {s.env for s in ENV.values()}


def test_every_rowcast_subcommand_in_the_readme_exists() -> None:
    parser = build_parser()
    subcommands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    named = set(re.findall(r"`rowcast ([a-z-]+)", README))
    assert named <= set(subcommands), named - set(subcommands)
    assert set(subcommands) <= named, f"undocumented: {set(subcommands) - named}"


def test_the_two_commands_come_first() -> None:
    two = README.index("## Two commands")
    assert README.index("pip install . && rowcast up") > two
    assert README.index("pip install '.[test]' && pytest") > two
    assert two < README.index("## Architecture")


def _shown(name: str) -> str:
    """A setting's default as the Limits table writes it: 10s for a duration, 4 for a count."""
    value = getattr(Settings(auth="open"), name)
    if _CONVERT.get(name) is parse_duration:
        return f"{value:g}s"
    return str(value) if isinstance(value, int) else f"{value:g}"


def test_every_default_in_the_limits_table_is_the_settings_default() -> None:
    limits = README[README.index("## Limits") :]
    limits = limits[: limits.index("\n## ")]
    by_env = {s.env: name for name, s in ENV.items()}
    checked = 0
    for row in re.findall(r"^\|.*\|$", limits, re.M):
        cells = [c.strip() for c in row.strip("|").split("|")]
        named = re.findall(r"`(ROWCAST_[A-Z_]+)`", cells[2]) if len(cells) == 4 else []
        if len(named) != 1:  # the header, or a row of two settings
            continue
        assert cells[1].split(" ")[0] == _shown(by_env[named[0]]), row
        checked += 1
    assert checked >= 10
