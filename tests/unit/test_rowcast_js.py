"""rowcast.js's unit tests (tests/js/*.test.mjs) under node's built-in runner, as part of pytest."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_rowcast_js_unit_tests_pass() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed; the rowcast.js tests need Node 20 or later")
    result = subprocess.run(
        [node, "--test", "--test-reporter=tap", "tests/js/"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"node --test failed:\n{result.stdout}\n{result.stderr}"
    assert "\n# fail 0\n" in result.stdout, result.stdout
    assert "\n# pass 0\n" not in result.stdout, "no rowcast.js tests ran"
