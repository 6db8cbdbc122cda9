"""The data quality page at a glance, in a real headless Chromium: problem counts on their own
scale, the flagged and problem days before a closed table of one row per day, refusals among
the problem days.

The site is built from three weeks of fake blobs whose quality counts are set as a nightly run
records them (about 2,000 rows fetched a day) with a few duplicate, skipped and rejected rows on
two days, a refused restatement on a third and a flag on the data quality report on a fourth.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from datetime import UTC, date, datetime

import pytest
from playwright.sync_api import expect

from fake_source.generator import blobs_for_day, history_days
from kpi.reports import QUALITY_LABELS, QUALITY_MEASURES, build_reports
from kpi.serve import make_server
from kpi.site import render_site
from kpi.sitedir import publish
from tests.browser.test_polish import x_labels
from tests.browser.test_site import CONFIG, browser, close, open_page, published
from tests.unit.kpi_helpers import aggregates_of

__all__ = ["browser"]  # the shared Chromium fixture
pytestmark = pytest.mark.browser
LAST_DAY = date(2026, 10, 30)
# duplicate, skipped, rejected rows of about 2,000 fetched: a problem from 2 % of them on, so
# 2026-10-24's 1 % and 2026-10-27's 2 skipped rows are none
PROBLEMS = {"2026-10-24": (3, 20, 5), "2026-10-25": (60, 0, 0), "2026-10-27": (0, 2, 50)}
FLAG_DAY = "2026-10-22"
REFUSAL = {"day": "2026-10-29", "stored": 2010, "fetched": 0, "would_remove": 2010,
           "max_removed": 0.1, "at": "2026-10-30T00:20:00+00:00",
           "run": "manual__<img src=x onerror=alert(1)>"}
PROBLEM_DAYS = ["2026-10-29", "2026-10-27", "2026-10-25", FLAG_DAY]  # newest first


def nightly_counts(quality):
    """The quality frame with counts as a nightly run records them: about 2,000 rows fetched,
    `PROBLEMS` on their days (fetched = stored + rejected + duplicate; aggregated = stored −
    skipped)."""
    quality = quality.copy()
    for column, n in zip(("duplicate", "skipped_empty_stream", "rejected_invalid"),
                         range(3), strict=True):
        quality[column] = [PROBLEMS.get(day, (0, 0, 0))[n] for day in quality["date"]]
    quality["aggregated"] = quality["aggregated"] + 1900
    quality["stored"] = quality["aggregated"] + quality["skipped_empty_stream"]
    quality["fetched"] = quality["stored"] + quality["rejected_invalid"] + quality["duplicate"]
    return quality


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """(base URL, folder) of the site."""
    root = tmp_path_factory.mktemp("quality")
    blobs = [b for day in history_days(LAST_DAY, 21)
             for _, b in blobs_for_day(3, day, 60, bad_rate=0.0)]
    aggregates = aggregates_of(blobs)
    aggregates = dataclasses.replace(aggregates, quality=nightly_counts(aggregates.quality))
    reports = build_reports(aggregates, CONFIG)
    folder = root / "site"
    publish(lambda t: render_site(t, aggregates, reports, CONFIG, datetime.now(UTC),
                                  refusals=[REFUSAL]), folder)
    fetched = next(float(r["value"]) for r in published(folder, "data_quality")
                   if r["date"] == FLAG_DAY and r["measure"] == "fetched")
    (folder / "data" / "anomalies.json").write_text(json.dumps([{
        "date": FLAG_DAY, "report": "data_quality", "segmentation": "Total", "segment": "Total",
        "measure": "fetched", "value": fetched, "baseline": fetched / 3, "direction": "high"}]))
    server = make_server(root, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/site", folder
    server.shutdown()
    server.server_close()


def cells(page, selector: str) -> list[list[str]]:
    return page.evaluate(f"""[...document.querySelectorAll({selector!r})]
        .map(tr => [...tr.children].map(cell => cell.textContent))""")


def test_problem_counts_are_drawn_on_their_own_scale(browser, site):
    base, folder = site
    opened = open_page(browser, f"{base}/data_quality.html")
    page = opened.page
    fetched = min(float(r["value"]) for r in published(folder, "data_quality")
                  if r["measure"] == "fetched")
    main_top = page.evaluate("window.kpi.views.main.scale('y').domain()[1]")
    problem_top = page.evaluate("window.kpi.views.problems.scale('y').domain()[1]")
    assert main_top >= fetched > 1900
    assert 60 <= problem_top <= 70  # the largest problem count, 60, fills its chart
    drawn = page.evaluate("""[...new Set(window.kpi.rows.filter(r => r.value > 0 && r.value < 100)
        .map(r => r.series))].sort()""")
    assert drawn == sorted(QUALITY_LABELS[m] for m in ("duplicate", "skipped_empty_stream",
                                                       "rejected_invalid"))
    legend = page.locator("#series-picker .check").all_inner_texts()
    assert [text.strip() for text in legend] == [QUALITY_LABELS[m] for m in QUALITY_MEASURES]
    close(opened)


def test_flagged_and_problem_days_come_before_a_closed_table_of_one_row_per_day(browser, site):
    base, folder = site
    opened = open_page(browser, f"{base}/data_quality.html")
    page = opened.page
    order = page.evaluate("""['flag-list', 'problem-days', 'refusal-list', 'data-table']
        .map(id => document.getElementById(id))
        .map((el, i, all) => i === 0 || Boolean(all[i - 1].compareDocumentPosition(el)
                                                & Node.DOCUMENT_POSITION_FOLLOWING))""")
    assert order == [True, True, True, True]
    assert page.evaluate("document.getElementById('data-table').open") is False
    assert page.locator("#problem-days thead th").all_text_contents() == [
        "Day", "Duplicates", "Skipped (empty stream)", "Rejected (quarantined)",
        "Refused restatement (would remove)", "Flagged"]
    problem_rows = {row[0]: row[1:] for row in cells(page, "#problem-days tbody tr")}
    assert list(problem_rows) == PROBLEM_DAYS
    assert problem_rows["2026-10-27"] == ["0", "2", "50", "", ""]
    assert problem_rows["2026-10-25"] == ["60", "0", "0", "", ""]
    assert problem_rows["2026-10-29"] == ["0", "0", "0", "2,010", ""]
    assert problem_rows[FLAG_DAY] == ["0", "0", "0", "", "Fetched flagged high"]
    assert page.locator("#problem-days td.problem").all_text_contents() == ["50", "60"]

    page.locator("#data-table summary").click()
    expect(page.locator("#data-table tbody tr").first).to_be_visible()
    header = page.locator("#data-table thead th").all_text_contents()
    assert header == ["Day", *(QUALITY_LABELS[m] for m in QUALITY_MEASURES),
                      "Refused restatement (would remove)", "Problems"]
    rows = cells(page, "#data-table tbody tr")
    values = {(r["date"], r["measure"]): int(r["value"])
              for r in published(folder, "data_quality")}
    assert [row[0] for row in rows] == sorted({day for day, _ in values})  # one row per day
    why = {"2026-10-27": "rejected", "2026-10-25": "duplicates",
           "2026-10-29": "restatement refused", FLAG_DAY: "Fetched flagged high"}
    for row in rows:
        assert row[1:7] == [f"{values[(row[0], m)]:,}" for m in QUALITY_MEASURES]
        assert row[7] == ("2,010" if row[0] == REFUSAL["day"] else "")
        assert row[8] == why.get(row[0], "")
    assert page.locator("main img").count() == 0  # the refusal's run stayed text
    with page.expect_download() as download:
        page.locator("#download-view").click()
    lines = open(download.value.path(), encoding="utf-8").read().splitlines()
    assert lines[0] == ",".join(["date", *QUALITY_MEASURES, "refused_would_remove", "problems"])
    assert len(lines) == 1 + len(rows)
    close(opened)


def test_a_range_without_problems_says_so(browser, site):
    base, _ = site
    opened = open_page(browser, f"{base}/data_quality.html?from=2026-10-10&to=2026-10-20")
    page = opened.page
    assert page.locator("#problem-days").inner_text().strip() == (
        "No problem day from 2026-10-10 to 2026-10-20.")
    assert opened.problems == []
    close(opened)


@pytest.mark.parametrize("width", [360, 1280])
def test_both_charts_label_the_same_days(browser, site, width):
    base, _ = site
    opened = open_page(browser, f"{base}/data_quality.html?from=2026-10-10&to=2026-10-30",
                       width=width)
    page = opened.page
    main = [text for text, _, _ in x_labels(page, "#chart")]
    problems = [text for text, _, _ in x_labels(page, "#problem-chart")]
    assert len(main) >= 3
    assert problems == main  # a day sits under the same label in both charts
    close(opened)
