"""Flagged days (data/anomalies.json) marked on the charts, the overview tiles and listed on the
data quality page, in a real headless Chromium.

Until the build writes its own flags, each test writes `data/anomalies.json` into the built site
(as the build will publish it) before it opens the pages.
"""

from __future__ import annotations

import json
import threading
from datetime import date

import pytest

from fake_source.generator import blobs_for_day, history_days
from kpi.serve import make_server
from tests.browser.test_site import CONFIG, _build, act, browser, close, open_page, published

__all__ = ["browser"]  # the shared Chromium fixture
pytestmark = pytest.mark.browser
LAST_DAY = date(2026, 10, 30)
FLAG_DAY = "2026-10-20"  # in the default 30 days and the overview's, not in the last 7
HOSTILE = '<img src=x onerror="alert(1)">'
FLAG_SYMBOLS = ".chart svg .flags_marks path"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """(base URL, folder) of a site built from three weeks of fake blobs."""
    root = tmp_path_factory.mktemp("flags")
    days = history_days(LAST_DAY, 21)
    blobs = [b for day in days for _, b in blobs_for_day(7, day, 80, bad_rate=0.0)]
    _build(root / "site", blobs, CONFIG)
    server = make_server(root, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/site", root / "site"
    server.shutdown()
    server.server_close()


def value_of(folder, report: str, day: str, segmentation="Total", segment="Total",
             measure="value") -> float:
    for row in published(folder, report):
        if (row["date"], row["segmentation"], row["segment"], row["measure"]) == (
                day, segmentation, segment, measure):
            return float(row["value"])
    raise LookupError(day)


def flag(report, day, value, baseline, direction="low", segmentation="Total", segment="Total",
         measure="value") -> dict:
    return {"date": day, "report": report, "segmentation": segmentation, "segment": segment,
            "measure": measure, "value": value, "baseline": baseline, "direction": direction}


def write_flags(folder, flags) -> None:
    path = folder / "data" / "anomalies.json"
    if flags is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(json.dumps(flags), encoding="utf-8")


def tooltip_of(page, symbols) -> str:
    symbols.hover(force=True)
    tooltip = page.locator("#vg-tooltip-element")
    tooltip.wait_for(state="visible")
    return tooltip.inner_text()


@pytest.fixture
def assertions_low(site):
    """A low assertions Total day, a flag of a segment (not drawn on Total) and one of a
    segment whose name is markup."""
    _, folder = site
    value = value_of(folder, "assertions", FLAG_DAY)
    flags = [flag("assertions", FLAG_DAY, value, 4 * value),
             flag("assertions", FLAG_DAY, 3, 30, "low", "OS", HOSTILE),
             flag("new_user_success", "2026-10-25", 0.25, 0.5)]
    write_flags(folder, flags)
    yield value
    write_flags(folder, [])


def test_the_chart_marks_a_flagged_day_at_its_value_with_value_and_baseline(
        browser, site, assertions_low):
    base, _ = site
    value = assertions_low
    opened = open_page(browser, f"{base}/assertions.html")
    page = opened.page
    symbols = page.locator(FLAG_SYMBOLS)
    assert symbols.count() == 1
    drawn = page.evaluate("window.kpi.flags")
    assert [(f["date"], f["value"], f["direction"]) for f in drawn] == [
        (_ms(FLAG_DAY), value, "low")]
    text = (f"flagged low: value {value:,.0f} vs baseline {4 * value:,.0f} "
            "(Sign-in attempts (blobs), Total)")
    assert tooltip_of(page, symbols) == text
    assert text in page.locator("#chart-caption").inner_text()
    # stacked areas: still marked (at the top of its band; Total alone is its value)
    act(page, lambda: page.locator("input[name=mode][value=area]").check())
    assert page.locator(FLAG_SYMBOLS).count() == 1
    # a range without the day: no mark
    act(page, lambda: page.get_by_role("button", name="7 days", exact=True).click())
    assert page.locator(FLAG_SYMBOLS).count() == 0
    assert page.evaluate("window.kpi.flags") == []
    close(opened)


def _ms(day: str) -> int:
    return (date.fromisoformat(day) - date(1970, 1, 1)).days * 86_400_000


def test_a_flagged_rate_is_marked_in_percent(browser, site, assertions_low):
    base, _ = site
    opened = open_page(browser, f"{base}/new_user_success.html")
    page = opened.page
    symbols = page.locator(FLAG_SYMBOLS)
    assert symbols.count() == 1
    assert tooltip_of(page, symbols) == (
        "flagged low: value 25.0% vs baseline 50.0% (Success rate, Total)")
    # segmented by OS: the Total flag is not drawn
    act(page, lambda: page.select_option("#seg", "OS"))
    assert page.locator(FLAG_SYMBOLS).count() == 0
    close(opened)


def test_the_overview_tile_of_a_flagged_measure_is_marked(browser, site, assertions_low):
    base, _ = site
    value = assertions_low
    opened = open_page(browser, f"{base}/index.html")
    page = opened.page
    mark = page.locator("#flags-assertions")
    text = f"flagged low on {FLAG_DAY}: {value:,.0f} vs baseline {4 * value:,.0f}"
    assert mark.is_visible()
    assert mark.inner_text().strip() == f"◆ {text}"
    assert mark.locator(".tile-flag").get_attribute("title") == text
    assert page.locator("#flags-new_user_success").inner_text().strip() == (
        "◆ flagged low on 2026-10-25: 25.0% vs baseline 50.0%")
    assert page.locator(".tile-flags:visible").count() == 2  # the other tiles are not marked
    assert page.locator("#spark-assertions svg .flags_marks path").count() == 1
    assert page.locator("#spark-new_users svg .flags_marks path").count() == 0
    assert text[1:] in page.locator("#spark-assertions").get_attribute("aria-label")
    close(opened)


def test_the_data_quality_page_lists_flagged_days(browser, site, assertions_low):
    base, _ = site
    value = assertions_low
    opened = open_page(browser, f"{base}/data_quality.html")
    page = opened.page
    rows = page.evaluate("""[...document.querySelectorAll('#flag-list tbody tr')]
        .map(tr => [...tr.children].map(cell => cell.textContent))""")
    # the reports' tab names, the pages' measure names, numbers as the pages show them
    assert rows[0] == [FLAG_DAY, "Sign-in attempts", "Total", "Total",
                       "Sign-in attempts (blobs)", f"{value:,.0f}", f"{4 * value:,.0f}", "low"]
    assert rows[1][3] == HOSTILE  # text, never markup
    assert rows[2] == ["2026-10-25", "New user success", "Total", "Total", "Success rate",
                       "25.0%", "50.0%", "low"]
    assert len(rows) == 3
    assert page.locator("#flag-list caption").inner_text() == "3 flags on 2 days"
    assert page.locator("#flag-list thead th").all_text_contents() == [
        "Day", "Report", "Segmentation", "Segment", "Measure", "Value", "Baseline", "Direction"]
    assert page.locator("main img").count() == 0
    close(opened)


def test_many_flags_on_one_day_are_counted_as_one_day(browser, site):
    base, folder = site
    flags = [flag("assertions", FLAG_DAY, 1000 + n, 30_000, "low", "OS", f"OS {n}")
             for n in range(37)]
    write_flags(folder, flags)
    try:
        opened = open_page(browser, f"{base}/data_quality.html")
        page = opened.page
        assert page.locator("#flag-list caption").inner_text() == "37 flags on 1 day"
        assert page.locator("#flag-list tbody tr").count() == 37
        assert page.locator("#flag-list tbody tr").first.locator("td").nth(5).inner_text() == (
            "1,000")
        close(opened)
    finally:
        write_flags(folder, [])


@pytest.mark.parametrize("flags", [[], None], ids=["empty", "missing"])
def test_no_flag_no_mark_and_no_error(browser, site, flags):
    base, folder = site
    write_flags(folder, flags)
    try:
        for name in ("assertions.html", "password_reset.html", "index.html",
                     "data_quality.html"):
            opened = open_page(browser, f"{base}/{name}")
            page = opened.page
            assert page.locator(".chart svg .mark-line path, .spark svg .mark-line path").count()
            assert page.locator("svg .flags_marks path").count() == 0
            assert page.locator(".tile-flags:visible").count() == 0
            if name == "data_quality.html":
                assert page.locator("#flag-list").inner_text().strip() == "No day flagged."
            if flags is None:  # Chromium reports the missing file itself; the page nothing
                assert opened.failures and all("/data/anomalies.json?v=" in url
                                               for url in opened.failures)
                opened.problems[:] = [p for p in opened.problems
                                      if not p.startswith("Failed to load resource: the "
                                                          "server responded with a status of 404")]
            else:
                assert opened.failures == []
            close(opened)
    finally:
        write_flags(folder, [])


def test_step_charts_and_funnel_panels_mark_the_flagged_step(browser, site):
    base, folder = site
    fetched = value_of(folder, "data_quality", FLAG_DAY, measure="fetched")
    done = CONFIG.steps("password_reset")[-1]
    write_flags(folder, [flag("data_quality", FLAG_DAY, fetched, fetched / 3, "high",
                              measure="fetched"),
                         flag("password_reset", FLAG_DAY, 0.1, 0.6, measure=done)])
    try:
        opened = open_page(browser, f"{base}/data_quality.html")
        page = opened.page
        symbols = page.locator(FLAG_SYMBOLS)
        assert symbols.count() == 1
        assert tooltip_of(page, symbols) == (
            f"flagged high: value {fetched:,.0f} vs baseline {fetched / 3:,.2f}".rstrip("0")
            .rstrip(".") + " (Fetched, Total)")
        close(opened)
        opened = open_page(browser, f"{base}/password_reset.html")
        page = opened.page
        panels = page.locator(".panel")
        marked = [panels.nth(i).locator("h3").inner_text() for i in range(panels.count())
                  if panels.nth(i).locator("svg .flags_marks path").count()]
        assert marked == [done]
        assert page.evaluate("window.kpi.flags.map(f => f.text)") == [
            f"flagged low: value 10.0% vs baseline 60.0% ({done}, Total)"]
        close(opened)
    finally:
        write_flags(folder, [])
