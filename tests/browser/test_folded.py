"""Segments folded into `Other` below the privacy threshold are gaps, never 0, and say why.

Three weeks of fake blobs, 80 a day, folded at the default threshold of 5: the OS segment
Linux (renamed to markup here, as a configuration may name it) holds about 5 blobs a day, so it
is folded into Other on some days and shown on the others.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from datetime import UTC, date, datetime
from urllib.parse import quote

import pytest

from fake_source.generator import blobs_for_day, history_days
from kpi.aggregate import daily_aggregates, sites_histogram
from kpi.reports import QUALITY_MEASURES, Aggregates, build_reports, fold_small_segments
from kpi.serve import make_server
from kpi.site import render_site
from kpi.sitedir import publish
from kpi.stage import stage
from tests.browser.test_site import CONFIG, act, browser, close, open_page

__all__ = ["browser"]  # the shared Chromium fixture
pytestmark = pytest.mark.browser
LAST_DAY = date(2026, 10, 30)
LINUX = 'Linux <img src=x onerror="alert(1)">'
FOLDED_MARKS = ".chart svg .folded_marks path"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """(base URL, the days Linux was folded, the days it was shown) of a folded site."""
    root = tmp_path_factory.mktemp("folded")
    os_segments = tuple(LINUX if name == "Linux" else name
                        for name in CONFIG.segmentations["OS"])
    config = dataclasses.replace(CONFIG, segmentations={**CONFIG.segmentations,
                                                        "OS": os_segments},
                                 aliases={**CONFIG.aliases, "Linux": LINUX})
    days = history_days(LAST_DAY, 21)
    blobs = [b for day in days for _, b in blobs_for_day(7, day, 80, bad_rate=0.0)]
    staged, _ = stage(blobs, config)  # the configuration names the segment
    quality = staged.groupby("date", observed=True).size().rename("aggregated").reset_index()
    quality = quality.assign(date=quality["date"].astype(str),
                             **dict.fromkeys(QUALITY_MEASURES[:-1], 0))
    exact = Aggregates(daily_aggregates(staged, config), sites_histogram(staged), quality)
    linux = exact.groups[(exact.groups.segmentation == "OS") & (exact.groups.segment == LINUX)]
    folded_days = sorted(linux.date[(linux.blobs > 0) & (linux.blobs < 5)])
    shown_days = sorted(linux.date[linux.blobs >= 5])
    assert folded_days and shown_days
    aggregates = fold_small_segments(exact, 5)
    reports = build_reports(aggregates, config)
    publish(lambda t: render_site(t, aggregates, reports, config, datetime.now(UTC)),
            root / "site")
    server = make_server(root, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/site", folded_days, shown_days
    server.shutdown()
    server.server_close()


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).date().isoformat()


def linux_values(page) -> dict[str, float | None]:
    rows = page.evaluate("window.kpi.rows")
    return {_day(r["date"]): r["value"] for r in rows if r["series"] == LINUX}


def test_a_folded_day_is_a_gap_with_a_tooltip_saying_why(browser, site):
    base, folded_days, shown_days = site
    url = f"{base}/assertions.html?from=2026-10-10&to=2026-10-30&seg=OS&show={quote(LINUX)}"
    opened = open_page(browser, url)
    page = opened.page
    values = linux_values(page)
    for day in folded_days:
        assert values[day] is None, day  # a gap, not 0: it had blobs, counted in Other
    assert all(values[day] >= 5 for day in shown_days)
    marks = page.locator(FOLDED_MARKS)
    assert marks.count() == len(folded_days)
    marks.first.hover(force=True)
    tooltip = page.locator("#vg-tooltip-element")
    tooltip.wait_for(state="visible")
    text = tooltip.inner_text()
    assert text == (f"{folded_days[0]}: {LINUX} folded into Other (fewer than 5 blobs that "
                    "day, below the privacy threshold), so no value is shown")
    assert page.locator("#vg-tooltip-element img, main img").count() == 0  # text, not markup
    caption = page.locator("#chart-caption").inner_text()
    assert f"{len(folded_days)} days with a segment folded into Other" in caption
    # stacked areas: the same gaps and marks
    act(page, lambda: page.locator("input[name=mode][value=area]").check())
    assert all(linux_values(page)[day] is None for day in folded_days)
    assert page.locator(FOLDED_MARKS).count() == len(folded_days)
    close(opened)


def test_folded_days_of_a_rate_and_of_funnel_steps_are_marked(browser, site):
    base, folded_days, _ = site
    opened = open_page(browser, f"{base}/new_user_success.html?from=2026-10-10&to=2026-10-30"
                                f"&seg=OS&show={quote(LINUX)}")
    assert opened.page.locator(FOLDED_MARKS).count() == len(folded_days)
    close(opened)
    opened = open_page(browser, f"{base}/new_user.html?from=2026-10-10&to=2026-10-30"
                                f"&seg=OS&show={quote(LINUX)}")
    page = opened.page
    panels = page.locator(".panel")
    for index in range(panels.count()):  # every step's small chart marks them
        assert panels.nth(index).locator(".folded_marks path").count() == len(folded_days)
    rows = page.evaluate("window.kpi.rows")
    assert all(r["value"] is None for r in rows if _day(r["date"]) in folded_days)
    close(opened)


def test_total_has_no_folded_marks(browser, site):
    base, _, _ = site
    opened = open_page(browser, f"{base}/assertions.html")
    assert opened.page.locator(FOLDED_MARKS).count() == 0
    view = json.loads(opened.page.request.get(
        f"{base}/data/view/assertions/Total/2026.json").text())
    assert view["folded"] == []
    close(opened)


def test_a_week_with_folded_marks_still_labels_every_day(browser, site):
    from tests.browser.test_polish import assert_apart, x_labels

    base, folded_days, _ = site
    opened = open_page(browser, f"{base}/assertions.html?from=2026-10-24&to=2026-10-30&seg=OS"
                                f"&show={quote(LINUX)}&show=Macintosh", width=360)
    labels = x_labels(opened.page)
    assert len(labels) == 7, labels  # the marks' layer keeps the page's day axis
    assert_apart(labels)
    close(opened)
