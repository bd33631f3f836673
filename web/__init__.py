"""The browser side: rowcast.js and the live books page, served as static files at `/`.

Files are read through importlib.resources from the installed `web` package, so they are served
the same from a checkout and from a wheel. Each response carries a Content-Security-Policy that
forbids inline script, which is what keeps a hostile row value from ever running as code.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from aiohttp import web
from aiohttp.typedefs import Handler

from rowcast.settings import Settings

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self' ws: wss:; "
    "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str


def load_files(package: str = "rowcast.web") -> dict[str, StaticFile]:
    """The servable files of `package` by name: only the known suffixes, never Python or JSON."""
    files: dict[str, StaticFile] = {}
    for entry in resources.files(package).iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if not entry.is_file() or suffix not in CONTENT_TYPES:
            continue
        body = entry.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        files[entry.name] = StaticFile(body, CONTENT_TYPES[suffix], etag)
    return files


def _handler(file: StaticFile) -> Handler:
    async def serve(request: web.Request) -> web.StreamResponse:
        headers = {
            **SECURITY_HEADERS,
            "ETag": file.etag,
            # Revalidate every time: the files are small, and a stale rowcast.js next to a newer
            # server would speak an older protocol.
            "Cache-Control": "no-cache",
        }
        if file.etag in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers=headers)
        return web.Response(body=file.body, headers={**headers, "Content-Type": file.content_type})

    return serve


def setup(app: web.Application, settings: Settings) -> None:
    """Serve index.html at `/`, status.html at `/status`, and every other page file by name (`/rowcast.js`, `/style.css`)."""
    del settings  # nothing to configure yet; the signature matches api.setup and notifier.setup
    files = load_files()
    # One exact route per file, so the page never shadows /ws, /sse, /changes or /api/*.
    app.router.add_get("/", _handler(files["index.html"]), name="web-index")
    # The operator's page: its data comes from the notifier's /status.json.
    app.router.add_get("/status", _handler(files["status.html"]), name="web-status")
    for name, file in sorted(files.items()):
        app.router.add_get(f"/{name}", _handler(file))
