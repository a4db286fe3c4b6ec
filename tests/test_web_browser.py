"""The audit page in a real headless Chromium (Debian's ``chromium``, driven by Playwright's Python API).

``memedit serve`` runs as a subprocess on a free port over a real store. The
browser signs in with the printed admin token, approves a pending edit from
the review queue, searches semantically, forgets an edit through its
confirmation step, and the edit is then gone from the page's list, from
``memedit search`` and from the router's answers (``Router.prepare(...).used``).
A screenshot of each step goes to ``$MEMEDIT_SCREENSHOT_DIR`` (default
``tests/artifacts/``, git-ignored).
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("Debian's chromium is not installed at /usr/bin/chromium (apt-get install -y chromium; .ci/run does "
                "it when run as root)", allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the test extra)")
pytest.importorskip("fastapi", reason="the web extra is not installed")

from playwright.sync_api import expect, sync_playwright  # noqa: E402

from memedit import Edit, EditStore  # noqa: E402

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
QUESTION = "Who is the current president of the US?"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _shots() -> Path:
    d = Path(os.environ.get("MEMEDIT_SCREENSHOT_DIR") or Path(__file__).parent / "artifacts")
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="module")
def server(tmp_path_factory, embedder):
    import torch

    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("browser") / "web.db"
    with EditStore(path, embedder=embedder) as store:
        ids = {
            "pres": store.add(Edit.fact("the US", "The current president of {} is", "Trump", author="alice",
                                        source="chat: no, it's Trump now")).id,
            "ceo": store.add(Edit.text("The CEO of Acme is Jane Roe.", author="bob", source="chat"), status="pending").id,
            "cap": store.add(Edit.fact("Atlantis", "The capital of {} is", "Poseidonia", author="carol")).id,
        }
    port = _free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    logfile = path.with_suffix(".log")
    with open(logfile, "w") as out:  # a file, not a pipe: the server's access log must never block on a full pipe
        proc = subprocess.Popen([sys.executable, "-m", "memedit.cli", "serve", "--store", str(path), "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, text=True, env=env)
    token = None
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while token is None and time.monotonic() < deadline and proc.poll() is None:
            m = re.search(r"\b(me_[A-Za-z0-9_-]{20,})", logfile.read_text())
            token = m.group(1) if m else None
            time.sleep(0.1)
        assert token, "memedit serve printed no admin token:\n" + logfile.read_text()
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(base + "/ui/login", timeout=2).read()
                break
            except OSError:
                time.sleep(0.2)
        yield {"base": base, "token": token, "path": path, "ids": ids}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _api(server, path: str) -> dict:
    req = urllib.request.Request(server["base"] + path, headers={"Authorization": f"Bearer {server['token']}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def _router_used(path: Path, embedder) -> list[int]:
    from memedit.route import Router

    with EditStore(path, embedder=embedder) as store:
        prepared = Router(store, "smollm2-135m-instruct", policy="ike").prepare(QUESTION, "default")
        return prepared.edit_ids


def _cli_search(path: Path) -> list[int]:
    from typer.testing import CliRunner

    from memedit.cli import app

    r = CliRunner().invoke(app, ["search", QUESTION, "--store", str(path), "--json"])
    assert r.exit_code == 0, r.output
    return [h["edit"]["id"] for h in json.loads(r.output)]


def test_approve_search_forget_in_the_browser(server, embedder):
    ids, base, shots = server["ids"], server["base"], _shots()
    assert ids["pres"] in _router_used(server["path"], embedder)  # before: the router answers through it
    assert ids["pres"] in _cli_search(server["path"])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))

            page.goto(base + "/ui/edits")
            expect(page).to_have_url(re.compile(r"/ui/login"))
            page.fill("#token", "me_not-a-token")
            page.click("#login")
            expect(page.locator(".err")).to_contain_text("Unknown or revoked token")
            page.fill("#token", server["token"])
            page.click("#login")
            expect(page).to_have_url(re.compile(r"/ui/edits$"))
            expect(page.locator("#edits tbody tr")).to_have_count(3)
            page.screenshot(path=str(shots / "01-list.png"), full_page=True)

            # approve the pending edit from the review queue
            page.click("#nav-queue")
            row = page.locator(f'#queue tr[data-id="{ids["ceo"]}"]')
            expect(row).to_contain_text("The CEO of Acme is Jane Roe.")
            page.screenshot(path=str(shots / "02-queue.png"), full_page=True)
            row.locator("button.approve").click()
            expect(page.locator(f'#queue tr[data-id="{ids["ceo"]}"]')).to_have_count(0, timeout=15000)
            assert _api(server, f"/api/edits/{ids['ceo']}")["edit"]["status"] == "active"

            # semantic search
            page.goto(base + "/ui/edits")
            page.fill("#q", QUESTION)
            page.select_option("#mode", "semantic")
            page.click("#apply")
            first = page.locator("#edits tbody tr").first
            expect(first).to_have_attribute("data-id", str(ids["pres"]))
            expect(first.locator(".sentence")).to_have_text("The current president of the US is Trump")
            page.screenshot(path=str(shots / "03-search.png"), full_page=True)

            # forget it, through the confirmation step
            first.locator("a").first.click()
            expect(page.locator("#chain")).to_have_text("hashes verified")
            page.click("#forget")
            expect(page.locator("#forget-panel")).to_be_visible()
            page.fill("#forget-confirm", "999")
            page.click("#forget-go")
            expect(page.locator("#message")).to_contain_text("Type the edit's id")
            assert _api(server, f"/api/edits/{ids['pres']}")["edit"]["status"] == "active"  # not yet
            page.fill("#forget-confirm", str(ids["pres"]))
            page.screenshot(path=str(shots / "04-forget-confirm.png"), full_page=True)
            page.click("#forget-go")
            expect(page).to_have_url(re.compile(r"forgotten=" + str(ids["pres"])), timeout=15000)
            expect(page.locator("#message")).to_contain_text(f"Edit {ids['pres']} was forgotten")
            page.screenshot(path=str(shots / "05-after-forget.png"), full_page=True)

            # gone from the list (only its tombstone row remains, without content) and from semantic search
            active = page.locator("#edits tbody tr .sentence")
            expect(active.filter(has_text="Trump")).to_have_count(0)
            page.fill("#q", QUESTION)
            page.select_option("#mode", "semantic")
            page.click("#apply")
            expect(page.locator(f'#edits tbody tr[data-id="{ids["pres"]}"]')).to_have_count(0)
            assert not errors, errors
        finally:
            browser.close()
    assert _api(server, f"/api/edits/{ids['pres']}")["edit"]["status"] == "forgotten"
    assert ids["pres"] not in _cli_search(server["path"])
    assert ids["pres"] not in _router_used(server["path"], embedder)
    assert (shots / "05-after-forget.png").stat().st_size > 1000
