"""The distribution: one import name, and every third-party module the package imports declared."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def shipped_sources() -> list[Path]:
    folders = PYPROJECT["tool"]["setuptools"]["package-dir"].values()
    return [path for folder in folders for path in (ROOT / folder).rglob("*.py")]


def imported_top_level_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def optional_imports(path: Path) -> set[str]:
    """Top-level names imported inside `try: ... except ImportError`: an optional extra's module."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Try) and any(
            isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
            for h in node.handlers
        ):
            for inner in node.body:
                if isinstance(inner, ast.Import):
                    names.update(alias.name.split(".")[0] for alias in inner.names)
    return names


def extra_distributions() -> set[str]:
    """Distributions of the extras a user installs for a feature (not the test and bench tools)."""
    extras = PYPROJECT["project"]["optional-dependencies"]
    return {
        _distribution(requirement)
        for name, requirements in extras.items()
        if name not in ("test", "bench")
        for requirement in requirements
    }


def declared_distributions() -> set[str]:
    """Runtime requirements as pyproject.toml declares them (not the extras)."""
    return {_distribution(requirement) for requirement in PYPROJECT["project"]["dependencies"]}


def _distribution(requirement: str) -> str:
    """The normalised distribution name of a requirement ("psycopg[binary]>=3.2" -> "psycopg")."""
    return _normal(re.split(r"[\s\[<>=!~;]", requirement)[0])


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_package_maps_every_folder_under_the_one_name_rowcast() -> None:
    setuptools = PYPROJECT["tool"]["setuptools"]
    assert {package.split(".")[0] for package in setuptools["packages"]} == {"rowcast"}
    assert set(setuptools["package-dir"]) == {
        "rowcast",
        *(f"rowcast.{name}" for name in ("api", "notifier", "db", "web", "deploy")),
    }
    assert not any(folder in ("bench", "tests") for folder in setuptools["package-dir"].values())


def test_every_third_party_module_the_package_imports_is_a_declared_dependency() -> None:
    providers = metadata.packages_distributions()
    declared = declared_distributions()
    undeclared: dict[str, set[str]] = {}
    optional = extra_distributions()
    for path in shipped_sources():
        guarded = optional_imports(path)
        for name in imported_top_level_names(path) - set(sys.stdlib_module_names) - {"rowcast", "__future__"}:
            dists = {_normal(d) for d in providers.get(name, [name])}
            if not dists & declared and not (name in guarded and {_normal(name)} & optional):
                undeclared.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    assert not undeclared, f"imported but not in [project].dependencies: {undeclared}"
