"""`rowcast stack`: the docker-compose topology on one machine, without Docker.

Compose runs Postgres, a one-shot migrate, the API, two notifier replicas and nginx. This runs the
same pieces as local processes: the embedded Postgres (or DATABASE_URL), `rowcast migrate`,
`rowcast api`, N `rowcast notifier` replicas (one process each, ROWCAST_WORKERS=1: they are
replicas, as in compose) on free loopback ports, and Debian's nginx in front, configured from
deploy/nginx.conf.template, the one template compose renders too. Only the NGINX_* placeholders
differ: here 127.0.0.1 `upstream` blocks instead of Docker DNS, and a private prefix, pid file
and temp dirs so nothing needs root-only paths.

Like compose's `restart: unless-stopped`, a replica or the API that dies is started again on its
port, so a killed or restarted replica is a real failover: nginx sends new connections to the
others meanwhile, and clients resume from their cursor. Ctrl-C or SIGTERM stops nginx first (no
new connections), then the replicas (each drains: 1001 "going away" to its clients), the API and
the embedded Postgres; exit status 0.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import FrameType

from rowcast.args import command, listen_flag, serve_flags, settings_from_args
from rowcast.database import connect_supported, run_database
from rowcast.embedded import free_port
from rowcast.errors import RowcastError
from rowcast.hosts import LOOPBACK_NAMES, WILDCARD_BINDS, _is_loopback
from rowcast.serving import check_port
from rowcast.settings import Settings

PLACEHOLDER = re.compile(r"\$\{(NGINX_[A-Z_]+)\}")
READY_TIMEOUT = 60.0  # seconds for a server to answer its health check
RESTART_BACKOFF = 0.5  # seconds before a dead server is started again
STOP_TIMEOUT = 20.0  # a server still draining after this long is killed


def template() -> str:
    """deploy/nginx.conf.template, from the installed package (the wheel carries it)."""
    return resources.files("rowcast.deploy").joinpath("nginx.conf.template").read_text()


def render(text: str, values: dict[str, str]) -> str:
    """Substitute ${NGINX_*} placeholders as the nginx image's envsubst does, but strictly.

    A placeholder without a value is an error here rather than an empty string: an nginx config
    missing its upstreams would start and answer 502 to everything.
    """
    missing = sorted(set(PLACEHOLDER.findall(text)) - set(values))
    if missing:
        raise RowcastError(f"nginx template placeholders without a value: {', '.join(missing)}")
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def stack_values(listen: str, api_port: int, notifier_ports: list[int], prefix: Path) -> dict[str, str]:
    """The placeholder values for local processes (compose's are in docker-compose.yml)."""
    temps = " ".join(
        f"{kind}_temp_path {prefix / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    notifiers = " ".join(f"server 127.0.0.1:{port} max_fails=1 fail_timeout=2s;" for port in notifier_ports)
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
    return {
        # As root nginx would switch its workers to `nobody`, who cannot use our temp dirs.
        "NGINX_MAIN": f"{user} pid {prefix / 'nginx.pid'};",
        "NGINX_HTTP": (
            f"{temps} upstream rowcast_api {{ server 127.0.0.1:{api_port}; }} "
            f"upstream rowcast_notifier {{ {notifiers} }}"
        ),
        "NGINX_LISTEN": listen,
        "NGINX_API": "rowcast_api",
        "NGINX_NOTIFIER": "rowcast_notifier",
    }


def public_hosts(settings: Settings) -> str:
    """ROWCAST_ALLOWED_HOSTS for servers behind nginx: the names nginx itself is reached by.

    The servers bind loopback ports of their own, and by default a loopback server answers only
    its own port (the DNS-rebinding guard), so the Host a browser sends to nginx's port would be
    refused. This gives them the policy they would have if they were listening on nginx's address.
    """
    if settings.host in WILDCARD_BINDS:
        return "*" if settings.auth == "token" else ",".join(LOOPBACK_NAMES)
    if _is_loopback(settings.host):
        return ",".join(f"{name}:{settings.port}" for name in LOOPBACK_NAMES)
    address = f"[{settings.host}]" if ":" in settings.host else settings.host.lower()
    return f"{address}:{settings.port}"


def find_nginx() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if found is None:
        raise RowcastError(
            "nginx is not installed: apt-get install nginx (rowcast stack runs Debian's nginx)"
        )
    return found


def _die_with_parent() -> None:
    """Children get SIGTERM if the stack itself is killed (SIGKILL leaves no chance to stop them)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def rowcast_argv(*args: str) -> list[str]:
    """This installation's rowcast, whatever PATH says."""
    return [sys.executable, "-c", "import sys; from rowcast.cli import main; sys.exit(main())", *args]


@dataclass
class Child:
    """One supervised process: restarted on its same port when it dies unasked."""

    name: str
    argv: list[str]
    env: dict[str, str]
    health: str | None  # URL answering 2xx once it serves
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    died_at: float = 0.0

    def start(self) -> None:
        # Own process group: Ctrl-C reaches only the stack, which stops everything in order.
        self.proc = subprocess.Popen(self.argv, env=self.env, process_group=0, preexec_fn=_die_with_parent)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(sig)

    def wait_stopped(self, timeout: float) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Stack:
    settings: Settings
    replicas: int
    prefix: Path
    children: list[Child] = field(default_factory=list)
    stopping: bool = False

    def child_env(self, notifier: bool = False) -> dict[str, str]:
        """migrate and the api use DATABASE_URL (a transaction pooler will do); the notifiers
        ROWCAST_LISTEN_URL when it is set (README: Behind PgBouncer)."""
        dropped = ("ROWCAST_HOST", "ROWCAST_PORT", "ROWCAST_LISTEN_URL")
        env = {k: v for k, v in os.environ.items() if k not in dropped}
        env.update(DATABASE_URL=self.settings.database_url or "", ROWCAST_AUTH=self.settings.auth)
        if notifier and self.settings.listen_url is not None:
            env["ROWCAST_LISTEN_URL"] = self.settings.listen_url
        env["ROWCAST_WORKERS"] = "1"
        if not self.settings.allowed_hosts:
            env["ROWCAST_ALLOWED_HOSTS"] = public_hosts(self.settings)
        if self.settings.jwt_secret:
            env["ROWCAST_JWT_SECRET"] = self.settings.jwt_secret
        return env

    def server(self, name: str, command: str, port: int, health: str) -> Child:
        argv = rowcast_argv(command, "--host", "127.0.0.1", "--port", str(port))
        return Child(name, argv, self.child_env(command == "notifier"), f"http://127.0.0.1:{port}{health}")

    def migrate(self, demo: bool) -> None:
        """The one-shot migrate of compose (`migrate --roles`): the servers start only after it
        succeeded. On the embedded Postgres the demo tables come too, as with `rowcast up`."""
        steps = [("migrate", "--roles")] + ([("demo", "install")] if demo else [])
        for step in steps:
            done = subprocess.run(rowcast_argv(*step), env=self.child_env(), check=False)
            if done.returncode != 0:
                raise RowcastError(f"rowcast {' '.join(step)} failed (exit status {done.returncode})")

    def start_servers(self, api_port: int, notifier_ports: list[int]) -> None:
        self.children.append(self.server("api", "api", api_port, "/api/healthz"))
        for i, port in enumerate(notifier_ports, 1):
            self.children.append(self.server(f"notifier-{i}", "notifier", port, "/healthz"))
        for child in self.children:
            child.start()
        for child in self.children:
            wait_healthy(child)

    def start_nginx(self, nginx: str, conf: Path) -> None:
        argv = [nginx, "-p", str(self.prefix), "-c", str(conf), "-g", "daemon off;"]
        check = subprocess.run([*argv, "-t", "-q"], capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise RowcastError(f"nginx rejected {conf}: {check.stderr.strip()}")
        proxy = Child(
            "nginx", argv, dict(os.environ), f"http://{self.settings.host}:{self.settings.port}/api/healthz"
        )
        self.children.insert(0, proxy)
        proxy.start()
        wait_healthy(proxy)

    def supervise(self) -> int:
        """Restart what dies until asked to stop; a dead nginx ends the stack (exit status 1)."""
        while not self.stopping:
            for child in self.children:
                if self.stopping or child.alive():
                    continue
                if child.name == "nginx":
                    print("rowcast stack: nginx exited; stopping", file=sys.stderr, flush=True)
                    return 1
                self.revive(child)
            time.sleep(0.1)
        return 0

    def revive(self, child: Child) -> None:
        if not child.died_at:
            child.died_at = time.monotonic()
            code = child.proc.returncode if child.proc else None
            print(f"rowcast stack: {child.name} exited ({code}); restarting", file=sys.stderr, flush=True)
        if time.monotonic() - child.died_at >= RESTART_BACKOFF:
            child.died_at = 0.0
            child.restarts += 1
            child.start()

    def stop_all(self) -> None:
        """nginx stops accepting (SIGQUIT: graceful), the replicas drain (1001 to their clients,
        which nginx still relays), then the API; anything still running after STOP_TIMEOUT is killed.
        """
        self.stopping = True
        for child in self.children:
            child.stop(signal.SIGQUIT if child.name == "nginx" else signal.SIGTERM)
        for child in self.children:
            child.wait_stopped(STOP_TIMEOUT)


def wait_healthy(child: Child, timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            code = child.proc.returncode if child.proc else None
            raise RowcastError(f"{child.name} exited (status {code}) before it was ready")
        try:
            assert child.health is not None
            with urllib.request.urlopen(child.health, timeout=2):  # noqa: S310 (our own http URL)
                return
        except OSError:
            time.sleep(0.1)
    raise RowcastError(f"{child.name} did not answer {child.health} within {timeout:.0f}s")


def auth_line(settings: Settings, prefix: Path, made_secret: bool) -> str:
    """Token auth as in compose; a secret made for this run (no ROWCAST_JWT_SECRET) goes to a file.

    The file is 0600 and the secret is never printed: the banner says how to mint a token with it.
    """
    if settings.auth == "open":
        return "auth: open — anyone who can reach this port can read and write"
    if not made_secret:
        return "auth: token (ROWCAST_JWT_SECRET); mint one with: rowcast token --sub you"
    secret_file = prefix / "jwt-secret"
    secret_file.touch(0o600)
    secret_file.write_text(settings.jwt_secret or "")
    how = f"ROWCAST_JWT_SECRET=$(cat {secret_file}) rowcast token --sub you --write books"
    return f"auth: token, with a secret made for this run; a token: {how}"


def internal_ports(count: int, taken: set[int]) -> list[int]:
    """Distinct free loopback ports for the servers behind nginx, never the public port: nginx
    binds that one only after the servers started, so until then it looks free too (a replica
    or the api once got it, and nginx then failed to bind)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in taken and port not in ports:
            ports.append(port)
    return ports


def run(settings: Settings, replicas: int, made_secret: bool, demo: bool = False) -> int:
    if replicas < 1:
        raise RowcastError("--replicas must be 1 or more")
    nginx = find_nginx()
    check_port(settings.host, settings.port)
    prefix = Path(tempfile.mkdtemp(prefix="rowcast-stack-"))
    stack = Stack(settings, replicas, prefix)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stack.stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        stack.migrate(demo)
        api_port, *ports = internal_ports(replicas + 1, taken={settings.port})
        stack.start_servers(api_port, ports)
        conf = prefix / "nginx.conf"
        values = stack_values(f"{settings.host}:{settings.port}", api_port, ports, prefix)
        conf.write_text(render(template(), values))
        stack.start_nginx(nginx, conf)
        banner(settings, stack, auth_line(settings, prefix, made_secret))
        return stack.supervise()
    finally:
        stack.stop_all()
        shutil.rmtree(prefix, ignore_errors=True)


def banner(settings: Settings, stack: Stack, auth: str) -> None:
    pids = ", ".join(f"{c.name}={c.proc.pid}" for c in stack.children if c.proc)
    print(
        f"rowcast stack is up: http://{settings.host}:{settings.port}/ "
        f"(nginx -> api + {stack.replicas} notifier replicas)",
        flush=True,
    )
    print(auth)
    print(f"processes: {pids}")
    print("Ctrl-C to stop.", flush=True)


def cmd_stack(args: argparse.Namespace) -> int:
    made = secrets.token_urlsafe(32)  # the default: ROWCAST_JWT_SECRET wins when set
    settings = settings_from_args(args, auth="token", jwt_secret=made)
    with run_database(settings) as (url, started):
        # One line if Postgres does not answer, before any process is started.
        connect_supported(url, "rowcast-stack")
        if settings.listen_url is not None:
            connect_supported(settings.listen_url, "rowcast-stack")
        demo = settings.database_url is None  # the embedded Postgres: a try-out, as `rowcast up`
        code = run(settings.replace(database_url=url), args.replicas, settings.jwt_secret == made, demo)
    print(
        "rowcast stack stopped" + ("; embedded Postgres stopped" if started and not settings.keep_db else "")
    )
    return code


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = command(
        sub,
        "stack",
        cmd_stack,
        "run the production topology locally: Postgres, migrate, api, N notifiers, nginx",
        "The docker-compose.yml topology without Docker, from the same nginx template "
        "(deploy/nginx.conf.template) and Debian's nginx. Token auth as in compose: without "
        "ROWCAST_JWT_SECRET a secret is made for this run (--auth open for local tries). "
        "Ctrl-C or SIGTERM stops all of it (exit status 0).",
    )
    serve_flags(p)
    listen_flag(p)
    p.add_argument("--replicas", type=int, default=2, help="notifier replicas (default 2)")
