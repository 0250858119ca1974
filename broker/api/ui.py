"""The web dashboard: static files under ``/ui`` on the REST port (docs/dashboard.md).

The dashboard is plain HTML/CSS/JS in ``broker/ui/static/`` (package data, no build step, no
CDN). The browser calls the public REST API with the API key the operator typed in, so the
page has no back door: every figure it shows and every button it presses goes through the
same permissions as curl. This module only serves the files, with headers that keep the
page from being framed, sniffed or made to run script it did not ship.

Files are read once at start-up into memory (a handful of small files): a request can only
name one of them, so no path from the URL ever reaches the file system.
"""

from __future__ import annotations

from pathlib import Path

from sanic.response import HTTPResponse, redirect

STATIC_DIR = Path(__file__).resolve().parent.parent / "ui" / "static"
PREFIX = "/ui"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}

# No inline script or style, nothing from another origin, no framing, no form posts: the
# only code the page runs is the files below, and it only talks to this origin.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    # Revalidate every load, so a broker upgrade never runs a stale script against a new API.
    "Cache-Control": "no-cache",
}


def load_static(directory: Path = STATIC_DIR) -> dict[str, tuple[bytes, str]]:
    """``{"js/app.js": (bytes, content type)}`` for every servable file under ``directory``."""
    files = {}
    if not directory.is_dir():
        return files
    for path in sorted(directory.rglob("*")):
        content_type = CONTENT_TYPES.get(path.suffix)
        if path.is_file() and content_type:
            files[path.relative_to(directory).as_posix()] = (path.read_bytes(), content_type)
    return files


def add_routes(app) -> None:
    files = load_static()

    def respond(name: str) -> HTTPResponse:
        found = files.get(name)
        if found is None:
            return HTTPResponse(b"not found\n", status=404, headers=dict(SECURITY_HEADERS),
                                content_type="text/plain; charset=utf-8")
        body, content_type = found
        return HTTPResponse(body, headers=dict(SECURITY_HEADERS), content_type=content_type)

    @app.get(PREFIX, name="ui_root", strict_slashes=True)
    async def ui_root(request):
        return redirect(f"{PREFIX}/", headers=dict(SECURITY_HEADERS))  # it adds Location

    @app.get(f"{PREFIX}/", name="ui_index", strict_slashes=True)
    async def ui_index(request):
        return respond("index.html")

    @app.get(f"{PREFIX}/<name:path>", name="ui_file")
    async def ui_file(request, name: str):
        return respond(name)
