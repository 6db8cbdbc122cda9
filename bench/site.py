"""Benchmark the report site at 30, 365 and 1,826 days of history: build time, bytes a page
loads, and time to the first drawn chart in headless Chromium. Prints figures; asserts nothing.

    .venv/bin/python bench/site.py [--days 30 365 1826] [--per-day 2000]

Steps:
1. Four weeks of fake-source blobs (`--per-day` a day) are staged and aggregated in memory;
   N days of aggregates are those four weeks repeated with shifted dates (every weekday rhythm
   and segment mix of real-shaped data, at any length).
2. Build: every report + the whole site (data files, view files, pages) rendered and published
   from those aggregates, timed (loading aggregates from CouchDB is measured by
   `bench/compute.py`).
3. Page bytes: what a page fetches for its default view (last 30 days, Total), excluding the
   shared vendored Vega bundle: the HTML, the stylesheet, its scripts, and its data (the Total
   view files of the years the 30 days touch, or the manifest for the overview). Also the
   largest single view file (one report, segmentation and year) and the most one view can
   load: `All` days of the largest segmentation.
4. First chart: each page opened in a fresh headless Chromium context (empty cache) from a local
   server; the time from navigation start to the first chart mark in the DOM.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import tempfile
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
BASE_DAYS = 28
FIRST_DAY = date(2021, 1, 1)


def base_aggregates(per_day: int):
    from fake_source.generator import blobs_for_day, history_days
    from kpi.aggregate import daily_aggregates, sites_histogram
    from kpi.config import production_config
    from kpi.reports import QUALITY_MEASURES, Aggregates
    from kpi.stage import stage

    config = production_config()
    days = history_days(date(2026, 10, 28), BASE_DAYS)
    blobs = [b for day in days for _, b in blobs_for_day(9, day, per_day, bad_rate=0.0)]
    staged, _ = stage(blobs, config)
    quality = staged.groupby("date", observed=True).size().rename("aggregated").reset_index()
    quality["date"] = quality["date"].astype(str)
    for column in QUALITY_MEASURES[:-1]:
        quality[column] = quality["aggregated"]
    return Aggregates(daily_aggregates(staged, config), sites_histogram(staged), quality), config


def repeated(base, days: int):
    """`days` days of aggregates from FIRST_DAY on, cycling through the base days."""
    from kpi.reports import Aggregates

    base_days = sorted(base.quality["date"].unique())
    mapping = {}
    for n in range(days):
        mapping.setdefault(base_days[n % len(base_days)], []).append(
            (FIRST_DAY + timedelta(days=n)).isoformat())

    def spread(frame: pd.DataFrame) -> pd.DataFrame:
        parts = []
        for source, targets in mapping.items():
            part = frame[frame["date"] == source]
            parts += [part.assign(date=target) for target in targets]
        return pd.concat(parts, ignore_index=True).sort_values("date", kind="stable")

    return Aggregates(spread(base.groups), spread(base.sites_histogram), spread(base.quality))


def build(aggregates, config, target: Path) -> float:
    from kpi.chartcache import vega_bundle
    from kpi.reports import build_reports
    from kpi.site import render_site
    from kpi.sitedir import publish

    vega_bundle()  # read once per process, like a long-running scheduler worker
    start = time.perf_counter()
    reports = build_reports(aggregates, config)
    publish(lambda t: render_site(t, aggregates, reports, config, datetime.now(UTC)), target)
    return time.perf_counter() - start


def page_bytes(site: Path) -> dict[str, int]:
    """Bytes each page loads for its default view (the last 30 days), without the bundle."""
    import json

    from kpi.site import PAGES

    manifest = json.loads((site / "data" / "manifest.json").read_text())
    last = date.fromisoformat(manifest["last_day"])
    first = max(date.fromisoformat(manifest["first_day"]), last - timedelta(days=29))
    years = range(first.year, last.year + 1)
    style = (site / "static" / "site.css").stat().st_size
    sizes = {"index.html": (site / "index.html").stat().st_size + style
             + module_bytes(site / "static", "overview.js")
             + (site / "data" / "manifest.json").stat().st_size}
    scripts = module_bytes(site / "static", "report.js")
    for page in PAGES:
        views = sum((site / "data" / "view" / page.id / "Total" / f"{year}.json").stat().st_size
                    for year in years)
        sizes[f"{page.id}.html"] = ((site / f"{page.id}.html").stat().st_size + style
                                    + scripts + views)
    return sizes


def module_bytes(static: Path, entry: str) -> int:
    """Bytes of a page's entry module and of every module it imports, each counted once."""
    seen: set[str] = set()
    waiting = [entry]
    while waiting:
        name = waiting.pop()
        if name not in seen:
            seen.add(name)
            text = (static / name).read_text(encoding="utf-8")
            waiting += re.findall(r"""from\s+["']\./([\w-]+\.js)["']""", text)
    return sum((static / name).stat().st_size for name in seen)


def all_days_bytes(site: Path) -> int:
    """The most a page loads for one view: every year of its largest segmentation (`All`)."""
    folders = [p for p in (site / "data" / "view").glob("*/*") if p.is_dir()]
    return max(sum(f.stat().st_size for f in folder.glob("*.json")) for folder in folders)


def first_chart_ms(site: Path, names: list[str]) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    from kpi.serve import make_server

    server = make_server(site, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    timings = {}
    selector = ".chart svg .mark-line path, .chart svg .mark-rect path, .spark svg path"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                             args=CHROMIUM_ARGS)
        for name in names:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.goto(f"{base}/{name}", wait_until="commit")
            page.wait_for_selector(selector, state="attached", timeout=30_000)
            timings[name] = page.evaluate("performance.now()")
            context.close()
        browser.close()
    server.shutdown()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, nargs="+", default=[30, 365, 1826])
    parser.add_argument("--per-day", type=int, default=2000)
    args = parser.parse_args()

    start = time.perf_counter()
    base, config = base_aggregates(args.per_day)
    print(f"base: {BASE_DAYS} fake days of ~{args.per_day} blobs staged and aggregated in "
          f"{time.perf_counter() - start:.1f} s ({len(base.groups)} groups)")
    workdir = Path(tempfile.mkdtemp(prefix="kpi-site-bench-"))
    print(f"{'days':>6} {'build s':>8} {'max page KB':>12} {'median page KB':>15} "
          f"{'largest view file KB':>21} {'All, largest KB':>16} "
          f"{'first chart ms (median / max)':>30}")
    for days in args.days:
        aggregates = repeated(base, days)
        site = workdir / f"site-{days}"
        seconds = build(aggregates, config, site)
        sizes = page_bytes(site)
        views = list((site / "data" / "view").rglob("*.json"))
        largest = max(views, key=lambda p: p.stat().st_size)
        everything = all_days_bytes(site)
        timings = first_chart_ms(site, sorted(sizes))
        worst_page = max(sizes, key=sizes.get)
        slowest = max(timings, key=timings.get)
        print(f"{days:>6} {seconds:>8.2f} {sizes[worst_page] / 1000:>12.1f} "
              f"{statistics.median(sizes.values()) / 1000:>15.1f} "
              f"{largest.stat().st_size / 1000:>21.1f} {everything / 1000:>16.1f} "
              f"{statistics.median(timings.values()):>14.0f} / {timings[slowest]:.0f}")
        print(f"       heaviest page {worst_page}; largest view file "
              f"{largest.relative_to(site)}; slowest first chart {slowest}")
    bundle = (workdir / f"site-{args.days[-1]}" / "vendor" / "vega-bundle.js").stat().st_size
    print(f"shared vendored bundle (cached after the first page): {bundle / 1000:.0f} KB")
    shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
