"""One aiohttp app serving the API, the notifier and the web page on one port (`rowcast up`)."""

from __future__ import annotations

from aiohttp import web

from rowcast.settings import Settings


def create_app(settings: Settings) -> web.Application:
    """API under /api, notifier at /ws /sse /changes /healthz /metrics, the page at /."""
    import api.app
    import notifier.app
    import web as web_page

    if settings.database_url is None:
        from rowcast.database import resolve_url

        settings = settings.replace(database_url=resolve_url(settings))
    app = web.Application(client_max_size=settings.max_body_bytes)
    # Order matters for shutdown: the notifier closes its sockets before the engine goes away.
    api.app.setup(app, settings)
    notifier.app.setup(app, settings)
    web_page.setup(app, settings)
    return app
