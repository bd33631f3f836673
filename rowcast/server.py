"""One aiohttp app serving the API, the notifier and the web page on one port (`rowcast up`)."""

from __future__ import annotations

from aiohttp import web

from rowcast import web as web_page
from rowcast.api import app as api_app
from rowcast.database import resolve_url
from rowcast.notifier import app as notifier_app
from rowcast.settings import Settings


def create_app(settings: Settings) -> web.Application:
    """API under /api, notifier at /ws /sse /changes /healthz /metrics, the page at /."""
    if settings.database_url is None:
        settings = settings.replace(database_url=resolve_url(settings))
    app = web.Application(client_max_size=settings.max_body_bytes)
    # Order matters for shutdown: the notifier closes its sockets before the engine goes away.
    api_app.setup(app, settings)
    notifier_app.setup(app, settings)
    web_page.setup(app, settings)
    return app
