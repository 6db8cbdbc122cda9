"""The published site in a real headless Chromium (Debian's, driven by Playwright)."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import date
from urllib.parse import urlsplit

import httpx
import pytest

from kpi.config import PRODUCTION_CONFIG
from kpi.pipeline import backfill
from kpi.settings import Settings
from kpi.site import PAGES, make_server

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
MILESTONE = "Train <b>42</b> &amp; co"  # markup in a name must show as text
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="module")
def site_url(couchdb_url, tmp_path_factory):
    from fake_source import create_app
    from fake_source.server import running_in_thread

    prefix = f"browser{uuid.uuid4().hex[:8]}"
    folder = tmp_path_factory.mktemp("browser")
    config = json.loads(PRODUCTION_CONFIG.read_text(encoding="utf-8"))
    config["milestones"].append([MILESTONE, "2026-10-02"])
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    app = create_app(seed=5, per_day=300, days=3, last_day=date(2026, 10, 3))
    with running_in_thread(app) as source:
        settings = Settings(
            source_url=f"{source}/wsapi/interaction_data", couchdb_url=couchdb_url,
            db_prefix=prefix, site_dir=folder / "site", config_path=str(folder / "config.json"),
        )
        backfill(date(2026, 10, 1), date(2026, 10, 3), settings, progress=False)
    server = make_server(settings.site_dir, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    for name in httpx.get(f"{couchdb_url}/_all_dbs").json():
        if name.startswith(prefix):
            httpx.delete(f"{couchdb_url}/{name}")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def open_page(browser, url: str):
    page = browser.new_page()
    problems, requests = [], []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("request", lambda request: requests.append(request.url))
    page.goto(url, wait_until="networkidle")
    return page, problems, requests


@pytest.mark.parametrize("page_id", [page.id for page in PAGES])
def test_every_report_page_draws_its_chart(browser, site_url, page_id):
    page, problems, requests = open_page(browser, f"{site_url}/{page_id}.html")
    page.wait_for_selector("#chart svg .mark-line path, #chart svg .mark-rect path",
                           state="attached", timeout=15_000)
    marks = page.locator("#chart svg .mark-line path, #chart svg .mark-rect path, "
                         "#chart svg .mark-symbol path")
    assert marks.count() > 0
    assert problems == []
    site_host = urlsplit(site_url).netloc
    assert all(urlsplit(url).netloc == site_host for url in requests), requests
    page.close()


def test_segmentation_picker_changes_the_series(browser, site_url):
    page, problems, _ = open_page(browser, f"{site_url}/assertions.html")
    page.wait_for_selector("#chart svg .mark-line path", state="attached")
    assert page.locator("#chart svg .mark-line path").count() == 1  # Total only
    page.select_option("#chart select", "OS")
    page.wait_for_function(
        "document.querySelectorAll('#chart svg .mark-line path').length > 1"
    )
    assert problems == []
    page.close()


def test_index_links_every_report(browser, site_url):
    page, problems, _ = open_page(browser, f"{site_url}/index.html")
    links = {a.get_attribute("href") for a in page.locator("nav a").all()}
    assert links == {f"{p.id}.html" for p in PAGES} | {"definitions.html"}
    assert problems == []
    page.close()


def test_milestones_in_range_are_annotated_as_text(browser, site_url):
    page, problems, _ = open_page(browser, f"{site_url}/assertions.html")
    page.wait_for_selector("#chart svg .mark-rule line", state="attached")
    labels = page.locator("#chart svg .mark-text text").all_text_contents()
    assert MILESTONE in labels
    assert page.locator("#chart svg b").count() == 0
    page.select_option("#chart select", "Browser")
    page.wait_for_function(
        "document.querySelectorAll('#chart svg .mark-line path').length > 1"
    )
    assert problems == []
    page.close()
