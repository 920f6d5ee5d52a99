"""The gateway's static files (services/gateway/static.py): a fixed table, its headers and its refusals."""

from __future__ import annotations

import fnmatch
import json
import pathlib
import tomllib

from websockets.datastructures import Headers
from websockets.http11 import Request

from services.gateway import static

ROOT = pathlib.Path(__file__).resolve().parents[2]


def get(files: static.StaticFiles, path: str, **headers: str):
    return files.respond(Request(path, Headers(headers)))


def test_every_console_file_is_in_the_table_and_in_the_package():
    table = static.build_table()
    console = sorted(p for p in static.CONSOLE_DIR.rglob("*") if p.is_file())
    assert {"index.html", "app.js", "charts.js", "style.css"} <= {p.name for p in console}
    for file in console:
        assert f"/console/{file.relative_to(static.CONSOLE_DIR).as_posix()}" in table, file
    assert table["/console"] is table["/console/"] is table["/console/index.html"]
    # pip-installed (the images run the source tree, a wheel needs package-data): every file matches a pattern.
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    gateway = patterns["services.gateway"]
    for file in console:
        relative = file.relative_to(static.CONSOLE_DIR.parent).as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in gateway), f"{relative} not in package-data"


def test_files_carry_their_type_a_strict_policy_and_revalidate():
    files = static.StaticFiles()
    page = get(files, "/console?tab=jobs")
    assert page.status_code == 200 and page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert page.body == (static.CONSOLE_DIR / "index.html").read_bytes()
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "'unsafe-inline'" not in csp
    assert page.headers["Cache-Control"] == "no-cache" and page.headers["X-Content-Type-Options"] == "nosniff"
    script = get(files, "/console/app.js")
    assert script.headers["Content-Type"] == "text/javascript; charset=utf-8"
    again = get(files, "/console/app.js", **{"If-None-Match": script.headers["ETag"]})
    assert again.status_code == 304 and again.body == b""


def test_only_exact_table_paths_are_served(tmp_path):
    (tmp_path / "index.html").write_text("<p>hi</p>")
    (tmp_path / "notes.txt").write_text("not a served type")
    (tmp_path / ".secret.js").write_text("hidden")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config.js").write_text("hidden")
    files = static.StaticFiles(static.build_table(tmp_path, tmp_path / "missing.json"))
    assert set(files.paths) == {"/console", "/console/", "/console/index.html", static.OPENAPI_PATH}
    for path in ("/console/notes.txt", "/console/.secret.js", "/console/.git/config.js", "/console/../static.py",
                 "/console/%2e%2e/x",
                 "/console//index.html", "/console/index.html/"):
        reply = get(files, path)
        assert reply.status_code == 404, path
        assert json.loads(reply.body)["error"]["code"] == "NOT_FOUND"
        assert reply.headers["Content-Type"] == "application/json"


def test_the_openapi_document_is_served_once_it_exists(tmp_path):
    document = tmp_path / "qnet.swagger.json"
    files = static.StaticFiles(static.build_table(tmp_path, document))
    missing = get(files, static.OPENAPI_PATH)
    assert missing.status_code == 404
    assert json.loads(missing.body) == {"success": False, "error": {
        "code": "NOT_FOUND", "message": "the OpenAPI document has not been built in this deployment"}}
    document.write_text('{"swagger": "2.0"}')
    served = get(files, static.OPENAPI_PATH)
    assert served.status_code == 200 and json.loads(served.body) == {"swagger": "2.0"}
    assert served.headers["Content-Type"] == "application/json"


def test_the_hook_answers_its_paths_and_passes_the_rest_on():
    files = static.StaticFiles()
    passed = []
    hook = static.hook(files, lambda connection, request: passed.append(request.path))
    assert hook(None, Request("/console/style.css", Headers())).status_code == 200
    assert hook(None, Request("/healthz", Headers())) is None
    assert hook(None, Request("/api/v2/network/stream", Headers())) is None
    assert hook(None, Request("/consolex", Headers())) is None
    assert passed == ["/healthz", "/api/v2/network/stream", "/consolex"]
