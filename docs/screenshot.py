"""Make docs/screenshot.png: the report site of `make run`'s demo history, in headless Chromium.

`make screenshot` (or `.venv/bin/python docs/screenshot.py [--page index.html]`). It starts a
dev CouchDB and a fake KPIggybank on free ports, backfills the demo's 30 days with
`kpi backfill` (no Airflow; about a minute on 2 cores), serves the site with `kpi serve` and
photographs one page at 1280 px in Debian's Chromium, as tests/browser do. Everything it starts
is stopped at the end; nothing outside a temporary folder is written but the PNG.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

from fake_source.demo import demo_config, first_day, outage_day
from kpi.devserver import free_port, stop_process, wait_for_http

ROOT = Path(__file__).resolve().parents[1]
KPI = str(Path(sys.executable).with_name("kpi"))
CHROMIUM = "/usr/bin/chromium"
DAYS, PER_DAY = 30, 2000  # `make run`'s demo history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--page", default="index.html", help="Page to photograph.")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshot.png")
    parser.add_argument("--height", type=int, default=860, help="Viewport height in px.")
    args = parser.parse_args()

    start, outage = first_day(DAYS), outage_day(DAYS)
    end = start + timedelta(days=DAYS - 1)
    couch_port, source_port, site_port = free_port(), free_port(), free_port()
    processes: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="kpi-screenshot-") as tmp:
        config = Path(tmp) / "demo-config.json"
        config.write_text(json.dumps(demo_config(DAYS)), encoding="utf-8")
        env = {
            **os.environ,
            "KPI_COUCHDB_URL": f"http://127.0.0.1:{couch_port}",
            "KPI_SOURCE_URL": f"http://127.0.0.1:{source_port}/wsapi/interaction_data",
            "KPI_SITE_DIR": str(Path(tmp) / "site_output" / "site"),
            "KPI_CONFIG": str(config),
        }
        try:
            processes.append(subprocess.Popen(
                [KPI, "couchdb", "--port", str(couch_port), "--dir", str(Path(tmp) / "couchdb")],
                env=env))
            processes.append(subprocess.Popen(
                [KPI, "fake-source", "--port", str(source_port), "--days", str(DAYS),
                 "--per-day", str(PER_DAY), "--last-day", end.isoformat(),
                 "--outage-day", outage.isoformat()], env=env))
            wait_for_http(f"http://127.0.0.1:{couch_port}/", processes[0])
            wait_for_http(f"http://127.0.0.1:{source_port}/wsapi/ping", processes[1])
            subprocess.run([KPI, "backfill", "--start", start.isoformat(),
                            "--end", end.isoformat(), "--no-progress"], env=env, check=True)
            processes.append(subprocess.Popen(
                [KPI, "serve", "--port", str(site_port), "--dir", env["KPI_SITE_DIR"]], env=env))
            url = f"http://127.0.0.1:{site_port}/{args.page}"
            wait_for_http(url, processes[-1])
            photograph(url, args.out, args.height)
        finally:
            for process in reversed(processes):
                stop_process(process)
    print(f"{args.out}: {args.out.stat().st_size // 1024} KB")


def photograph(url: str, out: Path, height: int) -> None:
    """A PNG of the page at `url` once its charts are drawn, 1280 px wide, light theme."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": height},
                                color_scheme="light")
        page.goto(url, wait_until="networkidle")
        page.wait_for_function(  # pages with a script say when they are drawn
            "!document.querySelector('script[type=module]') || (window.kpi && window.kpi.ready)",
            timeout=15_000)
        page.screenshot(path=str(out))
        browser.close()


if __name__ == "__main__":
    main()
