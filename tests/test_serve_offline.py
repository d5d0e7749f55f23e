"""The service offline: no page references another host, ``/docs`` from local files, and the request log.

Every HTML, JavaScript and CSS file the service serves (``/``, ``/static/*``, ``/docs`` and
the Swagger UI files it loads, ``/openapi.json``) is fetched through the app and scanned for
absolute URLs where a page would load something (``src=``, ``href=``, ``url(...)``,
``@import``, ``import``, ``fetch(``, ...). The scanner is checked against FastAPI's stock
CDN pages, so that it can fail. With Debian's chromium and Playwright present, ``/docs`` and
the UI are also loaded in a headless browser that aborts (and records) every request to a
host other than 127.0.0.1, and the rendered Swagger UI is checked.

The request log (``create_app(log_requests=True)``, ``anyseg serve`` unless ``--quiet``):
one line per request, ``METHOD PATH STATUS MS ms``, for answers of every kind.
"""

from __future__ import annotations

import io
import logging
import re
import socket
import threading
import time
from urllib.parse import urlsplit

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient

from anyseg.models import load_model
from anyseg.serve import docs as docs_mod
from anyseg.serve.app import STATIC_DIR, create_app
from anyseg.serve.reqlog import LOG as REQUEST_LOG
from anyseg.serve.reqlog import printable_path

BASE = "http://127.0.0.1"
OWN_HOSTS = {"127.0.0.1", "localhost", "::1", "testserver"}
TOKEN = "offline-test-token-0123456789"

needs_assets = pytest.mark.skipif(docs_mod.docs_assets_dir() is None,
                                  reason=f"the {docs_mod.DOCS_REQUIREMENT!r} package is not installed")

# -- the scanner ------------------------------------------------------------------------------------
_URL = r"""(?P<url>(?:https?:|wss?:)?//[^\s"'`()<>\\]+)"""
_Q = r"""\s*["'`]?\s*"""
#: places where a page loads (or sends to) a URL: HTML attributes, JSX-style props in bundles, CSS, JS calls
LOADING = [re.compile(p, re.IGNORECASE) for p in (
    r"\b(?:src|href|action|formaction|poster|srcset|data|background|manifest)\s*=" + _Q + _URL,
    r"""[{,]\s*["']?(?:src|href|action|poster|srcSet)["']?\s*:""" + _Q + _URL,
    r"\burl\(" + _Q + _URL,
    r"@import\s+(?:url\()?" + _Q + _URL,
    r"\bimport\s*\(" + _Q + _URL,
    r"\bfrom\s*" + _Q + _URL,
    r"\b(?:fetch|importScripts|sendBeacon|open)\(" + _Q + _URL,
    r"\bnew\s+(?:WebSocket|EventSource|Worker|SharedWorker)\(" + _Q + _URL,
)]


def external_refs(text: str) -> list[str]:
    """The absolute URLs ``text`` would load from (or send to) a host other than the service's own."""
    found = []
    for pattern in LOADING:
        for m in pattern.finditer(text):
            url = m.group("url")
            host = urlsplit(url if "://" in url else "http:" + url).hostname or ""
            if host.lower() not in OWN_HOSTS:
                found.append(url)
    return sorted(set(found))


def any_absolute_url(text: str) -> list[str]:
    """Every ``http(s)://`` URL in ``text`` except XML namespace names (``http://www.w3.org/...``)."""
    return sorted({u for u in re.findall(r"https?://[^\s\"'`()<>\\]+", text)
                   if not u.startswith("http://www.w3.org/")})


def test_the_scanner_finds_what_fastapis_stock_pages_load():
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html

    swagger = get_swagger_ui_html(openapi_url="/openapi.json", title="t").body.decode()
    redoc = get_redoc_html(openapi_url="/openapi.json", title="t").body.decode()
    assert {urlsplit(u).hostname for u in external_refs(swagger)} >= {"cdn.jsdelivr.net", "fastapi.tiangolo.com"}
    assert "fonts.googleapis.com" in {urlsplit(u).hostname for u in external_refs(redoc)}
    assert external_refs('<img src="//evil.example/x.png"> a{background:url( "https://e.example/a.png")}') == [
        "//evil.example/x.png", "https://e.example/a.png"]
    assert external_refs('x.createElement("img",{alt:"logo",src:"https://cdn.example/logo.svg"})') == [
        "https://cdn.example/logo.svg"]
    assert external_refs('fetch("http://127.0.0.1:8000/api/health"); <a href="/docs">') == []


def test_redocs_bundle_loads_an_outside_image_which_is_why_redoc_is_off():
    folder = docs_mod.docs_assets_dir()
    bundle = folder / "redoc.standalone.js" if folder is not None else None
    if bundle is None or not bundle.is_file():
        pytest.skip("no ReDoc bundle installed")
    assert any("redoc.ly" in u for u in external_refs(bundle.read_text(encoding="utf-8", errors="replace")))


# -- every page the service serves --------------------------------------------------------------
@pytest.fixture(scope="module")
def classical():
    return load_model("classical")


@pytest.fixture()
def client(classical, tmp_path):
    app = create_app(predictor=classical, db_url=f"sqlite:///{tmp_path / 'a.db'}")
    with TestClient(app, base_url=BASE) as c:
        yield c


def _page_urls(client) -> list[str]:
    """``/``, ``/docs``, ``/openapi.json``, every UI file, and every local file ``/docs`` links to."""
    urls = ["/", "/docs", "/openapi.json"] + [f"/static/{p.name}" for p in sorted(STATIC_DIR.iterdir())
                                               if p.is_file()]
    docs_html = client.get("/docs").text
    urls += [u for u in re.findall(r"""(?:src|href)=["']([^"']+)["']""", docs_html) if u.startswith("/")]
    urls += re.findall(r"""url:\s*['"]([^'"]+)['"]""", docs_html)
    return list(dict.fromkeys(urls))


@needs_assets
def test_no_page_references_an_outside_host(client):
    urls = _page_urls(client)
    assert {"/", "/docs", "/openapi.json", "/static/app.js", "/static/index.html",
            f"{docs_mod.ASSETS_URL}/swagger-ui-bundle.js", f"{docs_mod.ASSETS_URL}/swagger-ui.css",
            f"{docs_mod.ASSETS_URL}/favicon.png"} <= set(urls)
    for url in urls:
        r = client.get(url)
        assert r.status_code == 200, (url, r.status_code, r.text[:200])
        ctype = r.headers["content-type"]
        if not re.match(r"text/|application/(json|javascript)", ctype):
            continue  # the favicon
        text = r.text
        assert external_refs(text) == [], (url, external_refs(text)[:5])
        if not url.startswith(docs_mod.ASSETS_URL):  # our own files and the schema: no outside URL at all
            assert any_absolute_url(text) == [], (url, any_absolute_url(text)[:5])


@needs_assets
def test_swagger_assets_are_served_from_the_package_with_their_types(client):
    html = client.get("/docs")
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert f'src="{docs_mod.ASSETS_URL}/swagger-ui-bundle.js"' in html.text
    assert "url: '/openapi.json'" in html.text and '"validatorUrl": null' in html.text
    expected = {"swagger-ui-bundle.js": "javascript", "swagger-ui.css": "text/css", "favicon.png": "image/png"}
    folder = docs_mod.docs_assets_dir()
    for name, ctype in expected.items():
        r = client.get(f"{docs_mod.ASSETS_URL}/{name}")
        assert r.status_code == 200 and ctype in r.headers["content-type"], (name, r.headers["content-type"])
        assert r.content == (folder / name).read_bytes()
    assert b"SwaggerUIBundle" in client.get(f"{docs_mod.ASSETS_URL}/swagger-ui-bundle.js").content


def test_redoc_and_the_oauth_redirect_are_not_served(client):
    for url in ("/redoc", "/docs/oauth2-redirect"):
        r = client.get(url)
        assert r.status_code == 404 and r.headers["content-type"] == "application/json", url


def test_docs_without_the_package_is_a_one_line_404(classical, tmp_path, monkeypatch):
    monkeypatch.setattr(docs_mod, "docs_assets_dir", lambda: None)
    app = create_app(predictor=classical, db_url=f"sqlite:///{tmp_path / 'a.db'}")
    with TestClient(app, base_url=BASE) as c:
        r = c.get("/docs")
        assert r.status_code == 404
        assert "fastapi-offline" in r.json()["detail"] and "\n" not in r.json()["detail"]
        assert c.get("/openapi.json").status_code == 200


@needs_assets
def test_with_a_token_docs_load_without_it_and_the_schema_declares_it(classical, tmp_path):
    app = create_app(predictor=classical, db_url=f"sqlite:///{tmp_path / 'a.db'}", token=TOKEN)
    with TestClient(app, base_url=BASE) as c:
        for url in ("/docs", f"{docs_mod.ASSETS_URL}/swagger-ui.css", "/openapi.json"):
            assert c.get(url).status_code == 200, url
        assert c.get("/api/health").status_code == 401
        spec = c.get("/openapi.json").json()
        assert spec["components"]["securitySchemes"]["token"] == {
            "type": "http", "scheme": "bearer", "description": spec["components"]["securitySchemes"]["token"][
                "description"]}
        ops = [op for item in spec["paths"].values() for op in item.values()]
        assert ops and all(op.get("security") == [{"token": []}] for op in ops)
        assert TOKEN not in c.get("/openapi.json").text and TOKEN not in c.get("/docs").text


# -- the request log --------------------------------------------------------------------------------
LINE = re.compile(r"^(?P<method>[A-Z]+) (?P<path>\S+) (?P<status>\d{3}|-) (?P<ms>\d+\.\d) ms$")


def _png(h: int = 24, w: int = 32) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


class Failing:
    """The classical predictor whose ``predict`` raises (a bug in the model code: a JSON 500)."""

    def __init__(self, inner):
        self.inner = inner
        self.name, self.family, self.model_id = inner.name, inner.family, inner.model_id

    def embed(self, image):
        return self.inner.embed(image)

    def predict(self, *args, **kwargs):
        raise RuntimeError("a bug in the model code")


def _lines(caplog) -> list[dict]:
    out = []
    for rec in caplog.records:
        if rec.name == REQUEST_LOG.name:
            m = LINE.match(rec.getMessage())
            assert m, f"not a request log line: {rec.getMessage()!r}"
            out.append(m.groupdict())
    return out


def test_one_log_line_per_request_with_its_status(classical, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=REQUEST_LOG.name)
    app = create_app(predictor=Failing(classical), db_url=f"sqlite:///{tmp_path / 'a.db'}", token=TOKEN,
                     max_upload_bytes=50_000, log_requests=True)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with TestClient(app, base_url=BASE) as c:
        caplog.clear()
        iid = c.post("/api/images", files={"file": ("a.png", _png())}, headers=auth).json()["id"]
        calls = [
            (c.get("/api/health?secret=s3cr3t-in-query", headers=auth), "GET", "/api/health"),
            (c.get("/api/health"), "GET", "/api/health"),  # no token: 401
            (c.get("/api/health", headers={**auth, "host": "evil.example"}), "GET", "/api/health"),  # 400
            (c.post("/api/projects", json={"name": "p"}, headers={**auth, "origin": "http://evil.example"}),
             "POST", "/api/projects"),  # 403
            (c.get("/api/images/0123456789abcdef", headers=auth), "GET", "/api/images/0123456789abcdef"),  # 404
            (c.post("/api/images", content=b"x" * 60_000, headers={**auth, "content-type": "image/png"}),
             "POST", "/api/images"),  # 413 from the body limit
            (c.post("/api/projects", json={"name": 5}, headers=auth), "POST", "/api/projects"),  # 422
            (c.post(f"/api/images/{iid}/predict", json={"points": [[3, 3]]}, headers=auth),
             "POST", f"/api/images/{iid}/predict"),  # 500: the predictor fails
            (c.get("/no%20such%0Apage", headers=auth), "GET", "/no such\npage"),
        ]
    lines = _lines(caplog)
    assert lines[0]["method"] == "POST" and lines[0]["path"] == "/api/images" and lines[0]["status"] == "200"
    lines = lines[1:]
    assert len(lines) == len(calls), [ln["path"] for ln in lines]
    assert [r.status_code for r, _, _ in calls] == [200, 401, 400, 403, 404, 413, 422, 500, 404]
    for line, (r, method, path) in zip(lines, calls):
        assert (line["method"], line["path"], line["status"]) == (method, printable_path(path), str(r.status_code))
    assert lines[-1]["path"] == "/no%20such%0Apage"  # one line whatever the path holds
    text = "\n".join(rec.getMessage() for rec in caplog.records if rec.name == REQUEST_LOG.name)
    assert "s3cr3t" not in text and TOKEN not in text and "?" not in text


def test_the_body_limit_cut_of_a_chunked_upload_is_logged_as_413(classical, tmp_path, caplog):
    import asyncio

    import httpx

    caplog.set_level(logging.INFO, logger=REQUEST_LOG.name)
    app = create_app(predictor=classical, db_url=f"sqlite:///{tmp_path / 'a.db'}", max_upload_bytes=50_000,
                     log_requests=True)

    async def chunks():
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
        for _ in range(40):
            yield b"0" * 10_000

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c:
            return await c.post("/api/images", content=chunks(),
                                headers={"content-type": "multipart/form-data; boundary=b"})

    assert asyncio.run(go()).status_code == 413
    assert [(ln["method"], ln["path"], ln["status"]) for ln in _lines(caplog)] == [("POST", "/api/images", "413")]


def test_no_log_lines_without_log_requests(client, caplog):
    caplog.set_level(logging.INFO, logger=REQUEST_LOG.name)
    client.get("/api/health")
    client.get("/nothing-here")
    assert _lines(caplog) == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("quiet", [False, True])
def test_anyseg_serve_logs_requests_on_stderr_unless_quiet(tmp_path, monkeypatch, capsys, quiet):
    import uvicorn

    from anyseg.cli import main

    seen = {}

    def fake_run(app, **kwargs):  # the server "runs": two requests, then it stops
        seen.update(kwargs)
        with TestClient(app, base_url=BASE) as c:
            assert c.get("/api/health").status_code == 200
            assert c.get("/missing").status_code == 404

    monkeypatch.setattr(uvicorn, "run", fake_run)
    argv = ["serve", "--model", "classical", "--db", f"sqlite:///{tmp_path / 'a.db'}", "--port", str(_free_port())]
    assert main(argv + (["--quiet"] if quiet else [])) == 0
    assert seen["access_log"] is False  # uvicorn's own access log is off: no line printed twice
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if LINE.match(ln)]
    if quiet:
        assert lines == [], err
    else:
        assert [ln.rsplit(" ", 2)[0] for ln in lines] == ["GET /api/health 200", "GET /missing 404"], err
    assert REQUEST_LOG.handlers == [] and REQUEST_LOG.propagate  # restored when the server stops


# -- a real browser with every outside request blocked -------------------------------------------
def _start(app):
    uvicorn = pytest.importorskip("uvicorn")
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not srv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    return srv, thread, f"http://127.0.0.1:{port}"


@needs_assets
def test_docs_render_in_a_browser_with_the_network_blocked(chromium, classical, tmp_path):
    app = create_app(predictor=classical, db_url=f"sqlite:///{tmp_path / 'a.db'}")
    srv, thread, base = _start(app)
    ctx = chromium.new_context(viewport={"width": 1280, "height": 900})
    blocked, loaded, errors = [], [], []

    def route(r):
        url = r.request.url
        if urlsplit(url).hostname == "127.0.0.1":
            loaded.append(url)
            r.continue_()
        else:
            blocked.append(url)
            r.abort()

    try:
        ctx.route("**/*", route)
        page = ctx.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{base}/docs")
        title = page.wait_for_selector(".swagger-ui .info .title", timeout=30_000)
        assert title.inner_text().startswith("anyseg")
        page.wait_for_selector(".swagger-ui .opblock")
        assert page.locator(".swagger-ui .opblock").count() >= 10  # the operations rendered
        page.screenshot(path="/tmp/anyseg_docs_offline.png", full_page=False)
        page.goto(f"{base}/")
        page.wait_for_selector("body[data-ready='1']", timeout=30_000)
    finally:
        ctx.close()
        srv.should_exit = True
        thread.join(timeout=10)
    assert blocked == [], f"requests to outside hosts: {blocked}"
    assert f"{base}{docs_mod.ASSETS_URL}/swagger-ui-bundle.js" in loaded and f"{base}/openapi.json" in loaded
    assert not errors, errors
