"""Every CLI error is one line on stderr and a non-zero exit: unknown flags, bad or unreachable
database URLs. Each case runs the real `rowcast` console script."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rowcast.cli import build_parser
from tests.integration.test_cli import rowcast
from tests.pg import Server
from tests.servers import free_port

# One invocation per subcommand and action, each complete but for what the test adds.
EVERY_COMMAND: list[tuple[str, ...]] = [
    ("up",),
    ("stack",),
    ("api",),
    ("notifier",),
    ("migrate",),
    ("roles", "install"),
    ("demo", "install"),
    ("demo", "remove"),
    ("capture", "enable", "books"),
    ("capture", "disable", "books"),
    ("capture", "list"),
    ("capture", "verify"),
    ("wake-mode",),
    ("prune",),
    ("status",),
    ("token", "--sub", "alice"),
    ("tail", "books"),
    ("db", "start"),
    ("db", "stop"),
    ("db", "status"),
    ("db", "url"),
    ("db", "psql"),
]

# The commands that connect to Postgres before anything else.
DATABASE_COMMANDS = [
    c
    for c in EVERY_COMMAND
    if c[0] in ("up", "stack", "migrate", "roles", "demo", "capture", "wake-mode", "prune", "status")
    or c[:2] == ("db", "psql")
]


def _actions(parser: object) -> dict[str, object]:
    return dict(parser._subparsers._group_actions[0].choices)  # type: ignore[attr-defined]


def test_the_list_names_every_subcommand_and_action() -> None:
    listed = {c[0] if c[0] not in ("db", "capture", "demo") else c[:2] for c in EVERY_COMMAND}
    expected: set[object] = set()
    for name, sub in _actions(build_parser()).items():
        if name in ("db", "capture", "demo"):
            expected |= {(name, action) for action in _actions(sub)}
        else:
            expected.add(name)
    assert listed == expected


def run_all(commands: list[tuple[str, ...]], env: dict[str, str]) -> list[subprocess.CompletedProcess[str]]:
    with ThreadPoolExecutor(2) as pool:  # two cores, shared
        return list(pool.map(lambda argv: rowcast(*argv, env=env), commands))


def assert_one_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    command = " ".join(result.args[1:])
    assert "Traceback" not in result.stderr, command + "\n" + result.stderr
    assert result.returncode == code, f"{command}: {result.returncode}\n{result.stderr}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"{command}:\n{result.stderr}"
    return lines[0]


def test_an_unknown_flag_is_one_usage_line_and_exit_2(pg_tmp: Path) -> None:
    env = {"ROWCAST_DATA_DIR": str(pg_tmp / "never"), "ROWCAST_JWT_SECRET": "k" * 32}
    for argv, result in zip(
        EVERY_COMMAND, run_all([(*c, "--bogus-flag") for c in EVERY_COMMAND], env), strict=True
    ):
        prog = "rowcast " + " ".join(argv[:2] if argv[0] in ("db", "capture", "demo") else argv[:1])
        assert assert_one_line(result, 2) == (
            f"{prog}: unrecognized arguments: --bogus-flag (see {prog} --help)"
        )
    assert not (pg_tmp / "never").exists()


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("notaurl", "not a URL: it must start with postgresql:// or postgres://"),
        (
            "mysql://app@db/app",
            "scheme mysql:// is not Postgres: it must start with postgresql:// or postgres://",
        ),
        ("postgresql://app@db:notaport/app", "port notaport is not a number"),
        ("postgresql://app@db/app?bogus_option=1", 'invalid URI query parameter: "bogus_option"'),
    ],
)
def test_a_bad_database_url_is_one_line_and_exit_2_for_every_command(
    pg_tmp: Path, url: str, why: str
) -> None:
    env = {"DATABASE_URL": url, "ROWCAST_DATA_DIR": str(pg_tmp / "never"), "ROWCAST_JWT_SECRET": "k" * 32}
    for result in run_all(EVERY_COMMAND, env):
        assert assert_one_line(result, 2) == f"rowcast: DATABASE_URL {url!r}: {why}"


def test_the_password_of_a_bad_url_is_not_printed() -> None:
    result = rowcast("capture", "list", env={"DATABASE_URL": "mysql://app:s3cret@db/app"})
    assert assert_one_line(result, 2).startswith("rowcast: DATABASE_URL 'mysql://app:***@db/app': ")


def test_an_unreachable_postgres_is_one_line_naming_host_and_port_and_exit_1(pg_tmp: Path) -> None:
    port = free_port()
    env = {
        "DATABASE_URL": f"postgresql://app@127.0.0.1:{port}/app",
        "ROWCAST_DATA_DIR": str(pg_tmp / "never"),
    }
    for result in run_all(DATABASE_COMMANDS, env):
        line = assert_one_line(result, 1)
        assert line.startswith(f"rowcast: cannot connect to Postgres at 127.0.0.1:{port}: "), line
        assert line.endswith("is the server running? check DATABASE_URL (unset it for the embedded one)"), (
            line
        )


def test_an_unknown_migration_revision_is_one_line_and_exit_2(db_url: str) -> None:
    for argv in (("migrate", "nosuchrev"), ("migrate", "--downgrade", "nosuchrev")):
        result = rowcast(*argv, env={"DATABASE_URL": db_url})
        assert (
            assert_one_line(result, 2) == "rowcast: migrate: Can't locate revision identified by 'nosuchrev'"
        )


def test_what_postgres_refuses_is_one_line_and_exit_1(pg_server: Server) -> None:
    with pg_server.database(None) as empty:  # rowcast was never migrated here
        result = rowcast("wake-mode", env={"DATABASE_URL": empty})
    line = assert_one_line(result, 1)
    assert line == 'rowcast: Postgres refused: schema "rowcast" does not exist', line


@pytest.mark.parametrize(
    ("flag", "env", "shown"),
    [
        (["--url", "notaurl"], {}, "--url 'notaurl'"),
        ([], {"ROWCAST_URL": "ftp://127.0.0.1:8080"}, "ROWCAST_URL 'ftp://127.0.0.1:8080'"),
        (["--url", "http://"], {}, "--url 'http://'"),
    ],
)
def test_a_bad_notifier_url_is_one_line_and_exit_2(flag: list[str], env: dict[str, str], shown: str) -> None:
    result = rowcast("tail", "books", *flag, env=env)
    assert assert_one_line(result, 2) == (
        f"rowcast: {shown} is not a notifier URL: use http(s)://HOST:PORT or ws(s)://HOST:PORT"
    )


def test_a_data_dir_that_cannot_be_made_is_one_line_naming_it() -> None:
    result = rowcast("db", "start", "--data-dir", "/proc/no-such/rowcast")
    assert assert_one_line(result, 2) == "rowcast: No such file or directory: /proc/no-such"


def test_db_url_before_any_start_says_what_to_run(pg_tmp: Path) -> None:
    result = rowcast("db", "url", "--data-dir", str(pg_tmp / "fresh"))
    assert assert_one_line(result, 2) == (
        f"rowcast: no embedded Postgres initialised in {pg_tmp / 'fresh'}: run `rowcast db start` first"
    )
