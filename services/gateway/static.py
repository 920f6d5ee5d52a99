"""The gateway's static files: the console (/console) and the OpenAPI document, from a table fixed at start.

Nothing from a request reaches the filesystem: the table maps exact request paths to files chosen when the
gateway starts (every file of the console folder, and the one OpenAPI file); a request path is only a key
looked up in it. The console's files are read into memory at start; the OpenAPI file is produced by the build
and may appear later, so its one fixed path is read when asked for (404 in the API's envelope while it is
missing).
"""

from __future__ import annotations

import hashlib
import http
import pathlib
from collections.abc import Callable
from dataclasses import dataclass

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from qnet_common.envoy import error_envelope

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONSOLE_DIR = pathlib.Path(__file__).resolve().parent / "console"
CONSOLE_PATH = "/console"
OPENAPI_PATH = "/api/v2/network/openapi.json"
OPENAPI_FILE = ROOT / "deploy" / "openapi" / "qnet.swagger.json"

#: The only file types served, by suffix; any other file in the console folder is left out of the table.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
}

#: The console's scripts and styles come from its own files only; it talks to this origin only (REST and the
#: WebSocket stream); no frames, no forms posted elsewhere, no plugins, no inline script.
CONSOLE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
#: A JSON document: nothing in it may run or load anything.
DOCUMENT_CSP = "default-src 'none'; frame-ancestors 'none'"
#: Files are revalidated on every load (by ETag: an unchanged file costs a 304), so a new deployment's console
#: never mixes with a cached older script.
CACHE_CONTROL = "no-cache"


@dataclass(frozen=True)
class Asset:
    """One served file: its bytes (None: read from `source` on each request) and its headers."""

    content_type: str
    csp: str
    body: bytes | None = None
    source: pathlib.Path | None = None


def build_table(console_dir: pathlib.Path = CONSOLE_DIR, openapi_file: pathlib.Path = OPENAPI_FILE) -> dict[str, Asset]:
    """Every servable path, by exact request path (no query string)."""
    table: dict[str, Asset] = {}
    if console_dir.is_dir():
        for file in sorted(console_dir.rglob("*")):
            content_type = CONTENT_TYPES.get(file.suffix)
            parts = file.relative_to(console_dir).parts
            if not file.is_file() or content_type is None or any(part.startswith(".") for part in parts):
                continue  # a type not served, or a hidden file or folder
            relative = "/".join(parts)
            table[f"{CONSOLE_PATH}/{relative}"] = Asset(content_type, CONSOLE_CSP, file.read_bytes())
        index = table.get(f"{CONSOLE_PATH}/index.html")
        if index is not None:
            table[CONSOLE_PATH] = table[f"{CONSOLE_PATH}/"] = index
    table[OPENAPI_PATH] = Asset("application/json", DOCUMENT_CSP, source=openapi_file)
    return table


def _envelope(status: int, code: str, message: str) -> Response:
    return _response(status, error_envelope(code, message).encode(), "application/json", DOCUMENT_CSP,
                     cache="no-store")


def _response(status: int, body: bytes, content_type: str, csp: str, *, cache: str = CACHE_CONTROL,
              etag: str | None = None) -> Response:
    headers = Headers([
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        ("Cache-Control", cache),
        ("Content-Security-Policy", csp),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("Connection", "close"),
    ])
    if etag is not None:
        headers["ETag"] = etag
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


class StaticFiles:
    """Answers the table's paths; `handles(path)` says whether a request is one of them (or under /console)."""

    def __init__(self, table: dict[str, Asset] | None = None) -> None:
        self._table = build_table() if table is None else table

    @staticmethod
    def handles(path: str) -> bool:
        path = path.split("?", 1)[0]
        return path in (CONSOLE_PATH, OPENAPI_PATH) or path.startswith(CONSOLE_PATH + "/")

    @property
    def paths(self) -> list[str]:
        return sorted(self._table)

    def respond(self, request: Request) -> Response:
        path = request.path.split("?", 1)[0]
        asset = self._table.get(path)
        if asset is None:
            return _envelope(404, "NOT_FOUND", f"no file {path[:200]}: the console is at {CONSOLE_PATH}")
        body = asset.body
        if body is None:
            try:
                body = asset.source.read_bytes() if asset.source is not None else None
            except OSError:
                body = None
            if body is None:
                return _envelope(404, "NOT_FOUND", "the OpenAPI document has not been built in this deployment")
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        if etag in (request.headers.get("If-None-Match") or ""):
            return _response(304, b"", asset.content_type, asset.csp, etag=etag)
        return _response(200, body, asset.content_type, asset.csp, etag=etag)


def hook(files: StaticFiles, fallback: Callable[[object, Request], Response | None]) -> Callable:
    """A websockets `process_request`: the table's paths first, then `fallback` (health, the stream)."""

    def process_request(connection, request: Request) -> Response | None:
        if files.handles(request.path):
            return files.respond(request)
        return fallback(connection, request)

    return process_request
