"""rowcast: every row change in Postgres as a live event.

One import name with its parts as subpackages: `rowcast.api` (REST), `rowcast.notifier` (fan-out),
`rowcast.db` (schema, migrations, capture SQL), `rowcast.web` (the page and rowcast.js) and
`rowcast.deploy`. They live in the repository's top-level folders `api/`, `notifier/`, `db/`, `web/`
and `deploy/`; the wheel puts them inside this package (setuptools' package-dir, pyproject.toml).
"""

from pathlib import Path as _Path

__version__ = "0.1.0"

_SUBPACKAGES = ("api", "notifier", "db", "web", "deploy")


def _find_subpackages_in_a_checkout() -> None:
    """Run from a source checkout, the subpackages sit beside this folder, not in it: look there
    too. Installed, they are in it and this does nothing."""
    here = _Path(__file__).parent
    root = here.parent
    if any((here / name).is_dir() for name in _SUBPACKAGES):
        return
    if (root / "pyproject.toml").is_file() and all((root / n / "__init__.py").is_file() for n in _SUBPACKAGES):
        __path__.append(str(root))


_find_subpackages_in_a_checkout()
