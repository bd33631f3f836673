"""rowcast/stack.py's pure parts: the Host names the servers behind nginx answer, and rendering."""

from __future__ import annotations

import pytest

from rowcast import stack
from rowcast.errors import RowcastError
from rowcast.hosts import policy
from rowcast.settings import Settings


def behind_nginx(host: str, port: int, auth: str = "open") -> Settings:
    """The settings a server behind a stack on host:port gets (on its own loopback port)."""
    public = Settings(host=host, port=port, auth=auth, jwt_secret="x" * 32)
    allowed = tuple(stack.public_hosts(public).split(","))
    return Settings(host="127.0.0.1", port=40000, auth=auth, jwt_secret="x" * 32, allowed_hosts=allowed)


@pytest.mark.parametrize(
    ("host", "port", "auth", "name", "allowed"),
    [
        ("127.0.0.1", 8080, "open", "localhost:8080", True),
        ("127.0.0.1", 8080, "open", "127.0.0.1:8080", True),
        # The servers' own port is not what a browser uses: only nginx's is answered.
        ("127.0.0.1", 8080, "open", "127.0.0.1:9999", False),
        ("127.0.0.1", 8080, "open", "evil.example:8080", False),
        ("0.0.0.0", 8080, "open", "localhost:1234", True),
        ("0.0.0.0", 8080, "open", "evil.example:8080", False),
        ("0.0.0.0", 8080, "token", "books.example", True),
        ("books.example", 8080, "open", "books.example:8080", True),
        ("books.example", 8080, "open", "books.example:8081", False),
    ],
)
def test_servers_behind_nginx_answer_the_names_nginx_is_reached_by(
    host: str, port: int, auth: str, name: str, allowed: bool
) -> None:
    """The same policy as a server listening on nginx's address would have (rowcast/hosts.py)."""
    assert policy(behind_nginx(host, port, auth)).allows(name, 40000) is allowed


def test_render_substitutes_only_nginx_placeholders() -> None:
    text = "set $rowcast_api ${NGINX_API}; proxy_set_header Host $http_host; ${NOT_OURS}"
    assert stack.render(text, {"NGINX_API": "rowcast_api"}) == (
        "set $rowcast_api rowcast_api; proxy_set_header Host $http_host; ${NOT_OURS}"
    )


def test_render_refuses_a_placeholder_without_a_value() -> None:
    with pytest.raises(RowcastError, match="NGINX_NOTIFIER"):
        stack.render("${NGINX_API} ${NGINX_NOTIFIER}", {"NGINX_API": "a"})


def test_internal_ports_never_take_the_public_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression (CI): the api got the stack's public port, free until nginx binds it, and nginx
    then failed to bind; the servers behind nginx never get it, nor one another's."""
    from rowcast import stack

    offered = iter([8080, 9001, 9001, 8080, 9002, 9003])
    monkeypatch.setattr(stack, "free_port", lambda: next(offered))
    assert stack.internal_ports(3, taken={8080}) == [9001, 9002, 9003]
