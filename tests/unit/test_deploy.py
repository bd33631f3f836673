"""The deployment files (Dockerfile, docker-compose.yml, deploy/nginx.conf.template) agree with the code and
with each other. Nothing is built or run: the files are parsed and cross-checked."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from rowcast import stack
from rowcast.cli import build_parser
from rowcast.errors import RowcastError
from rowcast.settings import ENV

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

ROWCAST_SERVICES = ("migrate", "api", "notifier")
SERVERS = ("api", "notifier")
HEALTH_PATHS = {"api": "/api/healthz", "notifier": "/healthz"}
LIVE_PATHS = ("/ws", "/sse", "/changes")
API_PATHS = ("/api", "/")
# Longer than nginx's 60 s default, which would cut idle-but-healthy streams and long polls.
LONG_TIMEOUT_S = 300.0


# -- compose -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), f"{COMPOSE} has no services"
    return data


def service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    services: dict[str, Any] = compose["services"]
    assert name in services, f"docker-compose.yml has no service {name!r}"
    return services[name] or {}


def builds_this_repo(svc: dict[str, Any]) -> bool:
    build = svc.get("build")
    context = build.get("context", ".") if isinstance(build, dict) else build
    return context is not None and (COMPOSE.parent / context).resolve() == ROOT


def command_of(compose: dict[str, Any], name: str) -> list[str]:
    command = service(compose, name).get("command")
    assert isinstance(command, list) and all(isinstance(a, str) for a in command), (
        f"service {name!r}: command must be an exec-form list of strings, got {command!r}"
    )
    return command


def flag_value(command: list[str], flag: str) -> str:
    for i, arg in enumerate(command):
        if arg == flag and i + 1 < len(command):
            return command[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"command {command!r} does not pass {flag}")


def port_of(compose: dict[str, Any], name: str) -> int:
    return int(flag_value(command_of(compose, name), "--port"))


def environment(svc: dict[str, Any]) -> dict[str, str | None]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        return {k: v for k, _, v in (item.partition("=") for item in env)}
    return {str(k): None if v is None else str(v) for k, v in env.items()}


def healthcheck_command(svc: dict[str, Any]) -> str:
    test = (svc.get("healthcheck") or {}).get("test")
    return " ".join(test) if isinstance(test, list) else str(test or "")


def test_compose_defines_the_production_services(compose: dict[str, Any]) -> None:
    missing = {"db", "migrate", "api", "notifier", "proxy"} - set(compose["services"])
    assert not missing, f"docker-compose.yml lacks services {sorted(missing)}"


def test_migrate_api_and_notifier_run_the_image_built_from_this_repo(compose: dict[str, Any]) -> None:
    built = {name for name, svc in compose["services"].items() if builds_this_repo(svc or {})}
    assert built == set(ROWCAST_SERVICES), f"services built from the repo Dockerfile: {sorted(built)}"
    images = {service(compose, name).get("image") for name in ROWCAST_SERVICES}
    assert len(images) == 1, f"rowcast services should share one image name (one build), got {images}"


def test_db_is_official_postgres_17_with_a_volume(compose: dict[str, Any]) -> None:
    db = service(compose, "db")
    assert str(db.get("image", "")).startswith("postgres:17"), f"db image is {db.get('image')!r}"
    assert any(str(v).endswith(":/var/lib/postgresql/data") for v in db.get("volumes", [])), (
        "db must keep /var/lib/postgresql/data on a volume, or a container restart loses the data"
    )


def test_notifier_runs_two_replicas(compose: dict[str, Any]) -> None:
    replicas = (service(compose, "notifier").get("deploy") or {}).get("replicas")
    assert replicas == 2, f"notifier deploy.replicas is {replicas!r}, expected 2"


@pytest.mark.parametrize("name", ["db", "api", "notifier"])
def test_long_running_services_have_healthchecks(compose: dict[str, Any], name: str) -> None:
    check = service(compose, name).get("healthcheck") or {}
    test = check.get("test")
    assert test and not check.get("disable") and test != ["NONE"], f"service {name!r} has no healthcheck"


def test_db_healthcheck_is_pg_isready(compose: dict[str, Any]) -> None:
    assert "pg_isready" in healthcheck_command(service(compose, "db")), "db healthcheck should use pg_isready"


def test_migrate_runs_once_when_db_is_healthy(compose: dict[str, Any]) -> None:
    migrate = service(compose, "migrate")
    condition = ((migrate.get("depends_on") or {}).get("db") or {}).get("condition")
    assert condition == "service_healthy", f"migrate depends on db with condition {condition!r}"
    # An unquoted `no` is YAML for false; compose wants the string.
    assert migrate.get("restart") == "no", f"migrate restart is {migrate.get('restart')!r}, expected 'no'"


def test_services_after_migrate_wait_for_it_to_succeed(compose: dict[str, Any]) -> None:
    waiting = {
        name: (deps.get("migrate") or {}).get("condition")
        for name, svc in compose["services"].items()
        if isinstance(deps := (svc or {}).get("depends_on"), dict) and "migrate" in deps
    }
    assert {"api", "notifier"} <= set(waiting), f"services depending on migrate: {sorted(waiting)}"
    wrong = {name: cond for name, cond in waiting.items() if cond != "service_completed_successfully"}
    assert not wrong, f"depend on migrate with service_completed_successfully, not {wrong}"


@pytest.mark.parametrize("name", ROWCAST_SERVICES)
def test_rowcast_service_command_is_accepted_by_the_cli(
    compose: dict[str, Any], name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    command = command_of(compose, name)
    try:
        args = build_parser().parse_args(command)
    except SystemExit:
        args = None  # argparse printed why; fail below, outside the handler, with just that line
    if args is None:
        error = capsys.readouterr().err.strip().splitlines()
        pytest.fail(
            f"service {name!r}: `rowcast {shlex.join(command)}` is rejected by rowcast.cli.build_parser(): "
            f"{error[-1] if error else 'no message'}",
            pytrace=False,
        )
    assert args.command == command[0]


@pytest.mark.parametrize("name", SERVERS)
def test_server_healthcheck_probes_the_port_the_server_listens_on(compose: dict[str, Any], name: str) -> None:
    port = port_of(compose, name)
    check = healthcheck_command(service(compose, name))
    urls = re.findall(r"https?://(?:127\.0\.0\.1|localhost|\[::1\]):(\d+)(/[^\s'\"]*)", check)
    assert urls, f"service {name!r}: no http://127.0.0.1:PORT/... URL in healthcheck {check!r}"
    assert [(int(p), path) for p, path in urls] == [(port, HEALTH_PATHS[name])], (
        f"service {name!r} listens on {port}; its healthcheck should request "
        f"http://127.0.0.1:{port}{HEALTH_PATHS[name]}, found {urls}"
    )


def test_rowcast_services_get_only_variables_rowcast_reads(compose: dict[str, Any]) -> None:
    known = {"DATABASE_URL"} | {setting.env for setting in ENV.values()}
    for name in ROWCAST_SERVICES:
        unknown = set(environment(service(compose, name))) - known
        assert not unknown, (
            f"service {name!r} sets {sorted(unknown)}, which rowcast never reads (see settings.ENV)"
        )


def test_rowcast_services_require_token_auth_with_a_secret_from_outside(compose: dict[str, Any]) -> None:
    for name in ROWCAST_SERVICES:
        env = environment(service(compose, name))
        assert env.get("ROWCAST_AUTH") == "token", f"service {name!r}: ROWCAST_AUTH should be token"
        secret = env.get("ROWCAST_JWT_SECRET") or ""
        assert re.fullmatch(r"\$\{ROWCAST_JWT_SECRET:\?[^}]*\}", secret), (
            f"service {name!r}: ROWCAST_JWT_SECRET must be ${{ROWCAST_JWT_SECRET:?...}} "
            f"(required, no default baked into the file), got {secret!r}"
        )


def test_database_url_points_at_the_db_service(compose: dict[str, Any]) -> None:
    db_env = environment(service(compose, "db"))
    for name in ROWCAST_SERVICES:
        url = environment(service(compose, name)).get("DATABASE_URL") or ""
        # Compose interpolation (${VAR:?message}) may hold characters that end a URL's netloc.
        parts = urlsplit(re.sub(r"\$\{[^}]*\}", "x", url))
        assert parts.scheme in ("postgresql", "postgres"), f"service {name!r}: DATABASE_URL is {url!r}"
        assert (parts.hostname, parts.port or 5432) == ("db", 5432), (
            f"service {name!r}: {url!r} is not db:5432"
        )
        assert parts.username == db_env.get("POSTGRES_USER", "postgres"), (
            f"service {name!r}: DATABASE_URL user is not db's POSTGRES_USER"
        )
        assert parts.path.lstrip("/") == db_env.get("POSTGRES_DB", parts.username), (
            f"service {name!r}: DATABASE_URL database is not db's POSTGRES_DB"
        )


# -- Dockerfile --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.strip().startswith("#"):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        if pending.strip():
            keyword, _, rest = pending.strip().partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    return instructions


def args_of(dockerfile: list[tuple[str, str]], keyword: str) -> list[str]:
    return [rest for kw, rest in dockerfile if kw == keyword]


def final_stage(dockerfile: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (kw, _) in enumerate(dockerfile) if kw == "FROM"]
    assert starts, "Dockerfile has no FROM"
    return dockerfile[starts[-1] :]


def test_dockerfile_runs_on_python_312_slim(dockerfile: list[tuple[str, str]]) -> None:
    base = final_stage(dockerfile)[0][1].split()[0]
    assert base == "python:3.12-slim", f"final image is FROM {base!r}"


def test_dockerfile_entrypoint_is_rowcast(dockerfile: list[tuple[str, str]]) -> None:
    entrypoints = args_of(final_stage(dockerfile), "ENTRYPOINT")
    assert entrypoints, "Dockerfile final stage has no ENTRYPOINT"
    # Exec form: no shell in between, so rowcast itself receives SIGTERM on `docker stop`.
    assert json.loads(entrypoints[-1]) == ["rowcast"], f"ENTRYPOINT is {entrypoints[-1]}"


def test_dockerfile_installs_the_repo_with_pip_not_editable(dockerfile: list[tuple[str, str]]) -> None:
    installs: list[list[str]] = []
    for run in args_of(dockerfile, "RUN"):
        for command in re.split(r"&&|;", run):
            words = shlex.split(command)
            # pip install, /opt/venv/bin/pip install, python -m pip install
            if "install" in words and re.search(
                r"(^|/)pip3?$|-m pip$", " ".join(words[: words.index("install")])
            ):
                installs.append(words[words.index("install") + 1 :])
    assert any("." in args for args in installs), f"no `pip install .` of the repo; pip installs: {installs}"
    editable = [args for args in installs if {"-e", "--editable"} & set(args)]
    assert not editable, f"the image must not depend on the build context: editable install {editable}"


def test_dockerfile_runs_as_a_non_root_user(dockerfile: list[tuple[str, str]]) -> None:
    users = args_of(final_stage(dockerfile), "USER")
    assert users, "Dockerfile final stage has no USER: the services would run as root"
    assert users[-1].split(":")[0] not in ("root", "0"), f"final USER is {users[-1]!r}"


def test_dockerfile_copies_every_package_pyproject_lists(dockerfile: list[tuple[str, str]]) -> None:
    folders = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    top_level = set(folders.values())
    sources = {
        src.rstrip("/")
        for rest in args_of(dockerfile, "COPY")
        if "--from=" not in rest
        for src in shlex.split(rest)[:-1]
        if not src.startswith("--")
    }
    if "." in sources:
        return
    missing = top_level - sources
    assert not missing, f"package folders {sorted(missing)} are not COPYed into the build stage"


def test_dockerfile_exposes_the_server_port(
    dockerfile: list[tuple[str, str]], compose: dict[str, Any]
) -> None:
    exposed = {int(p.split("/")[0]) for rest in args_of(dockerfile, "EXPOSE") for p in rest.split()}
    ports = {port_of(compose, name) for name in SERVERS}
    assert ports <= exposed, f"servers listen on {sorted(ports)}, Dockerfile EXPOSEs {sorted(exposed)}"


def test_dockerfile_sets_only_real_rowcast_settings(dockerfile: list[tuple[str, str]]) -> None:
    known = {setting.env for setting in ENV.values()}
    names = {
        word.split("=")[0] for rest in args_of(dockerfile, "ENV") for word in shlex.split(rest) if "=" in word
    }
    unknown = {n for n in names if n.startswith("ROWCAST_")} - known
    assert not unknown, f"Dockerfile sets {sorted(unknown)}, which rowcast never reads"


# -- nginx -------------------------------------------------------------------------------------


@dataclasses.dataclass
class Directive:
    name: str
    args: list[str]
    block: list[Directive] | None
    parent: Directive | None = None

    def find(self, name: str) -> list[Directive]:
        return [d for d in self.block or [] if d.name == name]

    def lookup(self, name: str) -> Directive | None:
        """The directive as in effect here: this level's, else the nearest enclosing one's."""
        level: Directive | None = self
        while level is not None:
            found = level.find(name)
            if found:
                return found[-1]
            level = level.parent
        return None


_NGINX_TOKEN = re.compile(r"""#[^\n]*|"(?:\\.|[^"])*"|'(?:\\.|[^'])*'|[{};]|[^\s{};"'#]+""")


def parse_nginx(text: str) -> Directive:
    root = Directive("main", [], [])
    stack, words = [root], []
    for token in _NGINX_TOKEN.findall(text):
        if token.startswith("#"):
            continue
        if token in (";", "{"):
            block: list[Directive] | None = [] if token == "{" else None
            directive = Directive(words[0], words[1:], block, stack[-1])
            assert stack[-1].block is not None
            stack[-1].block.append(directive)
            if token == "{":
                stack.append(directive)
            words = []
        elif token == "}":
            assert len(stack) > 1 and not words, "unbalanced } in nginx.conf"
            stack.pop()
        else:
            words.append(token[1:-1] if token[0] in "\"'" else token)
    assert len(stack) == 1 and not words, "nginx.conf ends inside a block or directive"
    return root


NGINX_TEMPLATE_TARGET = "/etc/nginx/templates/nginx.conf.template"


def nginx_conf_path(compose: dict[str, Any]) -> Path:
    """The template compose mounts where the nginx image's entrypoint renders it with envsubst."""
    for volume in service(compose, "proxy").get("volumes", []):
        source, target = (
            (volume.get("source"), volume.get("target"))
            if isinstance(volume, dict)
            else volume.split(":")[:2]
        )
        if target == NGINX_TEMPLATE_TARGET:
            return (COMPOSE.parent / source).resolve()
    raise AssertionError(f"proxy does not mount a template at {NGINX_TEMPLATE_TARGET}")


def proxy_env(compose: dict[str, Any]) -> dict[str, str]:
    env = service(compose, "proxy").get("environment", {})
    assert isinstance(env, dict), "write the proxy's environment as a mapping"
    return {str(k): str(v) for k, v in env.items()}


@pytest.fixture(scope="module")
def nginx(compose: dict[str, Any]) -> Directive:
    """The config as the nginx image renders it from compose's values (only the NGINX_* ones)."""
    return parse_nginx(stack.render(nginx_conf_path(compose).read_text(), proxy_env(compose)))


def server_block(nginx: Directive) -> Directive:
    (http,) = nginx.find("http")
    servers = http.find("server")
    assert len(servers) == 1, f"expected one server block in nginx.conf, found {len(servers)}"
    return servers[0]


def location(nginx: Directive, path: str) -> Directive:
    found = [loc for loc in server_block(nginx).find("location") if loc.args[-1:] == [path]]
    assert found, f"nginx.conf has no `location {path}`"
    return found[-1]


def proxy_targets(loc: Directive) -> list[str]:
    """host:port addresses the location proxies to, through `set` variables and upstream blocks."""
    proxy_pass = loc.lookup("proxy_pass")
    assert proxy_pass is not None, f"location {loc.args[-1]} has no proxy_pass"
    target = proxy_pass.args[0]
    for var in re.findall(r"\$(\w+)", target):
        sets = [
            d for level in (loc, loc.parent) if level for d in level.find("set") if d.args[0] == f"${var}"
        ]
        assert sets, f"proxy_pass {target} uses ${var}, which no `set` defines"
        target = target.replace(f"${var}", sets[-1].args[1])
    hostport = re.sub(r"^\w+://", "", target).split("/")[0]
    http = nginx_root(loc).find("http")[0]
    upstreams = [u for u in http.find("upstream") if u.args == [hostport]]
    if upstreams:
        return [s.args[0] for s in upstreams[0].find("server")]
    return [hostport if ":" in hostport else f"{hostport}:80"]


def nginx_root(d: Directive) -> Directive:
    while d.parent is not None:
        d = d.parent
    return d


def headers(loc: Directive) -> dict[str, str]:
    """proxy_set_header in effect: a level that sets any replaces every inherited one."""
    level: Directive | None = loc
    while level is not None:
        found = level.find("proxy_set_header")
        if found:
            return {d.args[0].lower(): d.args[1] for d in found}
        level = level.parent
    return {}


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "": 1}
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not an nginx duration: {duration!r}"
    return sum(int(n) * units[u] for n, u in parts)


def test_compose_mounts_the_nginx_conf_in_the_repo(compose: dict[str, Any]) -> None:
    path = nginx_conf_path(compose)
    assert path.is_file(), f"proxy mounts {path}, which does not exist"
    assert path == ROOT / "deploy" / "nginx.conf.template", f"proxy mounts {path}, expected the template"
    assert str(service(compose, "proxy").get("image", "")).startswith("nginx"), "proxy should run nginx"
    # The official image renders templates into NGINX_ENVSUBST_OUTPUT_DIR: the main config.
    assert proxy_env(compose).get("NGINX_ENVSUBST_OUTPUT_DIR") == "/etc/nginx"


def test_compose_and_rowcast_stack_use_the_one_template(compose: dict[str, Any], tmp_path: Path) -> None:
    text = nginx_conf_path(compose).read_text()
    assert stack.template() == text, "rowcast stack must render deploy/nginx.conf.template, as compose does"
    placeholders = set(stack.PLACEHOLDER.findall(text))
    assert placeholders == {"NGINX_MAIN", "NGINX_HTTP", "NGINX_LISTEN", "NGINX_API", "NGINX_NOTIFIER"}
    missing = placeholders - set(proxy_env(compose))
    assert not missing, f"compose's proxy sets no value for {sorted(missing)}"
    local = set(stack.stack_values("127.0.0.1:8080", 1, [2, 3], tmp_path))
    assert placeholders == local, "rowcast stack must give a value to every placeholder"
    # envsubst would also replace a plain $NAME that is set in the environment: nginx's own
    # variables must never share a name with one compose sets.
    nginx_vars = set(re.findall(r"\$(\w+)", PLACEHOLDER_FREE.sub("", text)))
    shadowed = nginx_vars & (set(proxy_env(compose)) | NGINX_IMAGE_ENV)
    assert not shadowed, f"envsubst would replace nginx's own ${sorted(shadowed)}"


# What the official nginx image itself sets in the container's environment.
NGINX_IMAGE_ENV = {
    "HOME",
    "HOSTNAME",
    "PATH",
    "PWD",
    "NGINX_VERSION",
    "NJS_VERSION",
    "NJS_RELEASE",
    "PKG_RELEASE",
}


PLACEHOLDER_FREE = re.compile(r"\$\{NGINX_[A-Z_]+\}")


def test_rowcast_stack_renders_upstreams_of_every_replica(tmp_path: Path) -> None:
    text = stack.render(stack.template(), stack.stack_values("127.0.0.1:9000", 7001, [7002, 7003], tmp_path))
    config = parse_nginx(text)
    assert proxy_targets(location(config, "/ws")) == ["127.0.0.1:7002", "127.0.0.1:7003"]
    assert proxy_targets(location(config, "/api")) == ["127.0.0.1:7001"]
    (http,) = config.find("http")
    assert all(d.args[0].startswith(str(tmp_path)) for d in http.block or [] if d.name.endswith("_temp_path"))
    assert config.find("pid")[0].args == [str(tmp_path / "nginx.pid")]


@pytest.mark.skipif(not shutil.which("envsubst"), reason="no envsubst (Debian's gettext-base)")
def test_the_nginx_images_envsubst_renders_what_these_tests_check(compose: dict[str, Any]) -> None:
    """The image's 20-envsubst-on-templates.sh runs `envsubst "${VAR} ..."` over the variables set
    in the container; the real envsubst must give what the tests above parse."""
    env = {**proxy_env(compose), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/root"}
    defined = " ".join(f"${{{name}}}" for name in env)
    text = nginx_conf_path(compose).read_text()
    done = subprocess.run(
        ["envsubst", defined], input=text, env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout == stack.render(text, proxy_env(compose))


@pytest.mark.skipif(not shutil.which("nginx") and not Path("/usr/sbin/nginx").exists(), reason="no nginx")
def test_nginx_accepts_the_config_rowcast_stack_renders(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text(stack.render(stack.template(), stack.stack_values("127.0.0.1:9000", 1, [2, 3], tmp_path)))
    argv = [stack.find_nginx(), "-p", str(tmp_path), "-c", str(conf), "-t", "-q"]
    checked = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr


def test_a_placeholder_without_a_value_is_an_error() -> None:
    with pytest.raises(RowcastError, match="NGINX_API"):
        stack.render("set $a ${NGINX_API};", {})


def test_nginx_listens_on_the_port_compose_publishes(nginx: Directive, compose: dict[str, Any]) -> None:
    published = [
        int(p["target"]) if isinstance(p, dict) else int(str(p).split(":")[-1].split("/")[0])
        for p in service(compose, "proxy").get("ports", [])
    ]
    listens = {int(d.args[0].rsplit(":", 1)[-1]) for d in server_block(nginx).find("listen")}
    assert published == [8080], f"proxy should publish container port 8080, publishes {published}"
    assert listens == {8080}, f"nginx listens on {sorted(listens)}, compose publishes {published}"


@pytest.mark.parametrize("path", LIVE_PATHS)
def test_nginx_proxies_live_endpoints_to_every_notifier(
    nginx: Directive, compose: dict[str, Any], path: str
) -> None:
    loc = location(nginx, path)
    expected = f"notifier:{port_of(compose, 'notifier')}"
    assert proxy_targets(loc) == [expected], f"location {path} should proxy to {expected}"
    sent = headers(loc)
    assert sent.get("upgrade") == "$http_upgrade", f"location {path} does not forward the Upgrade header"
    assert sent.get("connection") in ("upgrade", "$connection_upgrade"), (
        f"location {path} does not send Connection: upgrade for WebSocket handshakes"
    )
    http_version = loc.lookup("proxy_http_version")
    assert http_version is not None and http_version.args == ["1.1"], f"location {path} needs HTTP/1.1"


@pytest.mark.parametrize("path", LIVE_PATHS)
def test_nginx_streams_live_endpoints_unbuffered_with_long_timeouts(nginx: Directive, path: str) -> None:
    loc = location(nginx, path)
    buffering = loc.lookup("proxy_buffering")
    assert buffering is not None and buffering.args == ["off"], f"location {path} needs proxy_buffering off"
    timeout = loc.lookup("proxy_read_timeout")
    assert timeout is not None and seconds(timeout.args[0]) >= LONG_TIMEOUT_S, (
        f"location {path}: proxy_read_timeout {timeout.args if timeout else 'default 60s'} would cut "
        f"idle streams; use at least {LONG_TIMEOUT_S:.0f}s"
    )


@pytest.mark.parametrize("path", API_PATHS)
def test_nginx_proxies_rest_api_and_page_to_the_api(
    nginx: Directive, compose: dict[str, Any], path: str
) -> None:
    expected = f"api:{port_of(compose, 'api')}"
    assert proxy_targets(location(nginx, path)) == [expected], f"location {path} should proxy to {expected}"


def test_nginx_sends_the_status_data_to_a_notifier_and_the_status_page_to_the_api(
    nginx: Directive, compose: dict[str, Any]
) -> None:
    """/status is a page file (api); the data it reads, /status.json, only a notifier has."""
    assert proxy_targets(location(nginx, "/status.json")) == [f"notifier:{port_of(compose, 'notifier')}"]
    assert not [loc for loc in server_block(nginx).find("location") if loc.args[-1:] == ["/status"]]


def test_nginx_has_docker_dns_resolver_for_variable_upstreams(nginx: Directive) -> None:
    server = server_block(nginx)
    uses_variables = any(
        "$" in (d.args[0] if d.args else "")
        for loc in server.find("location")
        for d in loc.find("proxy_pass")
    )
    if uses_variables:
        resolver = server.lookup("resolver")
        assert resolver is not None and "127.0.0.11" in resolver.args, (
            "proxy_pass with a variable resolves at request time and needs `resolver 127.0.0.11` "
            "(Docker's DNS), which also returns every notifier replica"
        )
