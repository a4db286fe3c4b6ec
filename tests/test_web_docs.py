"""`/docs` works offline (issue 14): Swagger UI's assets come from the app (the swagger-ui-bundle package), and
a real headless Chromium that may reach nothing but the server renders every operation with the Authorize button."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the web extra is not installed (pip install 'memedit[web]')")
pytest.importorskip("swagger_ui_bundle", reason="the web extra is not installed (pip install 'memedit[web]')")

from fastapi.testclient import TestClient  # noqa: E402
from web_server import serving  # noqa: E402

from memedit import EditStore  # noqa: E402
from memedit.web.app import create_app  # noqa: E402
from memedit.web.auth import TokenFile  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture()
def app(tmp_path):
    store = EditStore(tmp_path / "s.db")
    tokens, _ = TokenFile.open(tmp_path / "s.tokens.json")
    yield create_app(store, tokens=tokens)
    store.close()


def test_docs_page_and_its_assets_come_from_the_app(app):
    c = TestClient(app)
    page = c.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r'(?:src|href)="([^"]+)"', page.text) + re.findall(r"url: '([^']+)'", page.text)
    assert urls and all(u.startswith("/") for u in urls), urls  # nothing from another host
    for url in urls:
        assert c.get(url).status_code == 200, url
    assert c.get("/docs/assets/swagger-ui-bundle.js").headers["content-type"].startswith("text/javascript")
    assert c.get("/redoc").status_code == 404  # ReDoc would load from a CDN: not offered


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium")
def test_swagger_ui_renders_offline_in_a_browser(app):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the test extra)")
    with serving(app) as port:
        base = f"http://127.0.0.1:{port}"
        elsewhere: list[str] = []
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox",
                                                                             "--disable-gpu"])
            page = browser.new_page()

            def only_the_server(route):  # the offline proof: any other host is refused and recorded
                if route.request.url.startswith(base):
                    route.continue_()
                else:
                    elsewhere.append(route.request.url)
                    route.abort()

            page.route("**/*", only_the_server)
            page.goto(base + "/docs")
            page.wait_for_selector(".opblock", timeout=30_000)
            assert page.locator(".opblock").count() == 17  # /api's 15 and the OpenAI-compatible /v1's 2
            assert page.locator("button.authorize").count() == 1
            browser.close()
        assert elsewhere == []
