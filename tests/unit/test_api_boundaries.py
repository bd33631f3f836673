"""The API stands alone: importing it connects to nothing and pulls in no notifier code."""

from __future__ import annotations

import subprocess
import sys

from rowcast.api.middleware import choose_request_id


def test_importing_and_building_the_api_loads_no_notifier_and_opens_no_connection() -> None:
    code = (
        "import sys\n"
        "from rowcast.api import app as api_app\n"
        "from rowcast.settings import Settings\n"
        "api_app.create_app(Settings(database_url='postgresql://nobody@127.0.0.1:1/x', auth='open'))\n"
        "loaded = sorted(m for m in sys.modules if m == 'rowcast.notifier' or m.startswith('rowcast.notifier.'))\n"
        "assert not loaded, loaded\n"
        "assert 'rowcast.embedded' not in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_request_ids_are_kept_when_valid_and_generated_otherwise() -> None:
    assert choose_request_id("abc-123.x:y_z") == "abc-123.x:y_z"
    for bad in (None, "", "has space", "x" * 129, "semi;colon", "é"):
        generated = choose_request_id(bad)
        assert len(generated) == 32 and generated != bad
    assert choose_request_id(None) != choose_request_id(None)
