"""The REST API: declarative resources over SQLAlchemy Core, ETag/If-Match, snapshot cursors.

`api.app.setup(app, settings)` adds it under /api to a shared aiohttp app;
`api_app.create_app(settings)` makes a stand-alone one.
"""
