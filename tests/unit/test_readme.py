"""The README stays true: every setting is documented, every command it names exists."""

from __future__ import annotations

import re
from pathlib import Path

from rowcast.cli import build_parser
from rowcast.settings import ENV

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
