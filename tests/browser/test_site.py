"""The published site in a real headless Chromium (Debian's, driven by Playwright).

The site is built from six weeks of fake-source blobs (staged and aggregated in memory, with two
days missing, a milestone whose name is markup and a refused restatement whose run is markup)
and served under a sub-path, next to a site built from no data at all. Assertions read the
views' data, the DOM and the published CSV files, never pixels.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import threading
from datetime import UTC, date, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import expect

from fake_source.generator import blobs_for_day, history_days
from kpi.reports import QUALITY_LABELS, build_reports
from kpi.serve import make_server
from kpi.site import PAGES, render_site
from kpi.sitedir import publish
from tests.unit.kpi_helpers import CONFIG, aggregates_of

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
LAST_DAY = date(2026, 10, 30)
GAP = (date(2026, 10, 12), date(2026, 10, 13))  # no blobs at all on these days
MILESTONE = 'Train <b>42</b> & "co" <img src=x onerror=alert(1)>'
MILESTONE_DAY = "2026-10-20"  # in the default 30 days, not in the last 7
REFUSAL = {"day": "2026-10-28", "stored": 1500, "fetched": 0, "would_remove": 1500,
           "max_removed": 0.1, "at": "2026-10-31T00:20:00+00:00",
           "run": "manual__<img src=x onerror=alert(1)>-with-a-long-unbroken-run-id-suffix"}
PAGE_FILES = ["index.html", "definitions.html", "changes.html",
              *(f"{page.id}.html" for page in PAGES)]


def _build(target, blobs, config, refusals=None):
    aggregates = aggregates_of(blobs)
    reports = build_reports(aggregates, config)
    publish(lambda t: render_site(t, aggregates, reports, config, datetime.now(UTC),
                                  refusals=refusals), target)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """(base URL of the full site, its folder, base URL of an empty site)."""
    root = tmp_path_factory.mktemp("sites")
    config = dataclasses.replace(CONFIG, milestones=(*CONFIG.milestones,
                                                     (MILESTONE, MILESTONE_DAY)))
    days = [d for d in history_days(LAST_DAY, 42) if d not in GAP]
    blobs = [b for day in days for _, b in blobs_for_day(5, day, 150, bad_rate=0.0)]
    _build(root / "reports" / "full", blobs, config, refusals=[REFUSAL])
    _build(root / "reports" / "empty", [], config)
    server = make_server(root, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}/reports"
    yield f"{base}/full", root / "reports" / "full", f"{base}/empty"
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclasses.dataclass
class Opened:
    page: object
    problems: list
    requests: list
    failures: list
    dialogs: list


def open_page(browser, url: str, width: int = 1280, scheme: str = "light",
              now: datetime | None = None) -> Opened:
    context = browser.new_context(viewport={"width": width, "height": 900}, color_scheme=scheme,
                                  accept_downloads=True)
    page = context.new_page()
    if now is not None:
        page.clock.set_fixed_time(now)
    opened = Opened(page, [], [], [], [])
    page.on("console", lambda m: opened.problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: opened.problems.append(str(error)))
    page.on("request", lambda request: opened.requests.append(request.url))
    page.on("requestfailed", lambda request: opened.failures.append(request.url))
    page.on("response", lambda r: opened.failures.append(r.url) if r.status >= 400 else None)
    page.on("dialog", lambda dialog: (opened.dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(url, wait_until="networkidle")
    page.wait_for_function(  # pages with a script say when they are drawn
        "!document.querySelector('script[type=module]') || (window.kpi && window.kpi.ready)",
        timeout=15_000)
    return opened


def act(page, action) -> None:
    """Do `action`, then wait until the page has rendered again."""
    before = page.evaluate("window.kpi.renders")
    action()
    page.wait_for_function(f"window.kpi.ready && window.kpi.renders > {before}", timeout=15_000)


def close(opened: Opened) -> None:
    """Close the page; whatever a test did on it, it logged no error and opened no dialog
    (the listeners of `open_page` watch every page load)."""
    opened.page.context.close()
    assert opened.problems == [], opened.problems
    assert opened.dialogs == [], opened.dialogs


def published(folder, report: str) -> list[dict]:
    with open(folder / "data" / f"{report}.csv", encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def expected_funnel(rows: list[dict], first: str, last: str, segments=None) -> list[int]:
    """Each step's count summed over [first, last] (Total, or the given segments)."""
    totals = {step: 0 for step in CONFIG.steps("new_user")}
    for row in rows:
        if not first <= row["date"] <= last:
            continue
        if segments is None and row["segmentation"] != "Total":
            continue
        if segments is not None and (row["segmentation"] != segments[0]
                                     or row["segment"] not in segments[1]):
            continue
        totals[row["measure"]] += int(row["value"])
    return list(totals.values())


def funnel_cells(page) -> list[list[str]]:
    return page.evaluate("""[...document.querySelectorAll('#funnel-table tbody tr')]
        .map(tr => [...tr.children].map(cell => cell.textContent))""")


def percent(numerator: int, denominator: int) -> str:
    return f"{math.floor(100 * numerator / denominator + 0.5)}%" if denominator else "—"


def expected_rows(counts: list[int]) -> list[list[str]]:
    steps = CONFIG.steps("new_user")
    rows = []
    for j, step in enumerate(steps):
        after = "—" if j == len(steps) - 1 else percent(counts[j + 1], counts[j])
        rows.append([step, f"{counts[j]:,}", percent(counts[j], counts[0]), after,
                     percent(counts[-1], counts[j])])
    return rows


def day_before(day: date, n: int) -> str:
    return (day - timedelta(days=n)).isoformat()


# --- every page, phone and desktop ---------------------------------------------------------

@pytest.mark.parametrize("width", [1280, 360])
@pytest.mark.parametrize("name", PAGE_FILES)
def test_every_page_renders_cleanly(browser, site, name, width):
    base, _, _ = site
    opened = open_page(browser, f"{base}/{name}", width=width)
    page = opened.page
    assert opened.problems == []
    assert opened.failures == []
    assert opened.dialogs == []
    host = urlsplit(base).netloc
    assert all(urlsplit(url).netloc == host for url in opened.requests), opened.requests
    scroll, client = page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert scroll <= client, f"{name} overflows sideways at {width}px: {scroll} > {client}"
    if name not in ("definitions.html", "changes.html"):  # text pages
        marks = page.locator(".chart svg .mark-line path, .chart svg .mark-rect path, "
                             ".spark svg .mark-line path")
        assert marks.count() > 0
    close(opened)


# --- the funnel table ----------------------------------------------------------------------

def test_presets_recompute_the_funnel_table_from_the_chosen_days(browser, site):
    base, folder, _ = site
    rows = published(folder, "new_user")
    opened = open_page(browser, f"{base}/new_user.html")
    page = opened.page
    default = expected_funnel(rows, day_before(LAST_DAY, 29), LAST_DAY.isoformat())
    assert funnel_cells(page) == expected_rows(default)

    act(page, lambda: page.get_by_role("button", name="7 days", exact=True).click())
    week = expected_funnel(rows, day_before(LAST_DAY, 6), LAST_DAY.isoformat())
    assert funnel_cells(page) == expected_rows(week)
    drawn = page.evaluate("window.kpi.views.main.data('funnel').map(r => r.count)")
    assert drawn == week
    assert page.get_by_role("button", name="7 days", exact=True).get_attribute(
        "aria-pressed") == "true"

    act(page, lambda: page.get_by_role("button", name="All", exact=True).click())
    everything = expected_funnel(rows, "0000", "9999")
    assert funnel_cells(page) == expected_rows(everything)
    assert everything != week
    assert opened.problems == [] and opened.dialogs == []
    close(opened)


def test_segments_and_toggles_change_the_funnel(browser, site):
    base, folder, _ = site
    rows = published(folder, "new_user")
    opened = open_page(browser, f"{base}/new_user.html")
    page = opened.page
    act(page, lambda: page.select_option("#seg", "OS"))
    boxes = page.locator("#series-picker input[type=checkbox]")
    names = boxes.evaluate_all("boxes => boxes.map(b => b.value)")
    shown = boxes.evaluate_all("boxes => boxes.filter(b => b.checked).map(b => b.value)")
    assert len(names) > 6 and shown == names[:6]  # the six largest OS segments first
    first, last = day_before(LAST_DAY, 29), LAST_DAY.isoformat()
    assert funnel_cells(page) == expected_rows(expected_funnel(rows, first, last, ("OS", shown)))

    # hide the largest segment with the keyboard
    boxes.nth(0).focus()
    act(page, lambda: page.keyboard.press("Space"))
    shown = shown[1:]
    counts = expected_funnel(rows, first, last, ("OS", shown))
    assert funnel_cells(page) == expected_rows(counts)
    funnel = page.evaluate("window.kpi.views.main.data('funnel')")
    assert {row["series"] for row in funnel} == set(shown)
    query = parse_qs(urlsplit(page.url).query)
    assert query["seg"] == ["OS"] and query["show"] == shown

    # the last visible segment cannot be hidden
    for name in shown[1:]:
        act(page, lambda name=name: page.locator(
            f"#series-picker input[value='{name}']").uncheck())
    page.locator(f"#series-picker input[value='{shown[0]}']").click()
    assert page.locator(f"#series-picker input[value='{shown[0]}']").is_checked()
    assert "stays visible" in page.locator("#picker-note").inner_text()
    assert funnel_cells(page) == expected_rows(
        expected_funnel(rows, first, last, ("OS", shown[:1])))
    assert opened.problems == []
    close(opened)


# --- state in the URL, invalid input, empty ranges -----------------------------------------

def test_the_url_round_trips_the_view(browser, site):
    base, _, _ = site
    opened = open_page(browser, f"{base}/assertions.html")
    page = opened.page
    act(page, lambda: page.select_option("#seg", "Browser"))
    act(page, lambda: page.get_by_role("button", name="90 days", exact=True).click())
    act(page, lambda: page.get_by_label("Stacked areas").check())
    query = parse_qs(urlsplit(page.url).query)
    assert query["from"] == [day_before(LAST_DAY, 41)]  # 90 days, clipped to the data
    assert query["to"] == [LAST_DAY.isoformat()] and query["seg"] == ["Browser"]
    assert query["mode"] == ["area"]
    rows = page.evaluate("window.kpi.views.main.data('rows')")
    assert page.locator(".chart svg .mark-area path").count() > 0
    again = open_page(browser, page.url)
    assert again.page.evaluate("window.kpi.views.main.data('rows')") == rows
    assert again.page.locator("#seg").input_value() == "Browser"
    assert again.page.get_by_label("Stacked areas").is_checked()
    close(opened)
    close(again)


def test_invalid_dates_are_refused_in_place(browser, site):
    base, _, _ = site
    opened = open_page(browser, f"{base}/sites.html")
    page = opened.page
    before = page.evaluate("window.kpi.views.main.data('rows').length")
    url = page.url
    page.fill("#to", "2026-09-25")  # before From (2026-10-01)
    assert "on or before" in page.locator("#range-error").inner_text()
    assert page.locator("[aria-invalid=true]").count() == 1
    assert page.url == url
    assert page.evaluate("window.kpi.views.main.data('rows').length") == before
    assert opened.dialogs == []
    close(opened)

    bad = open_page(browser, f"{base}/sites.html?from=2026-13-01&to=2026-10-20&seg=Nope")
    notes = bad.page.locator("#range-error").inner_text()
    assert "refused" in notes and "cannot be segmented" in notes
    assert parse_qs(urlsplit(bad.page.url).query)["from"] == [day_before(LAST_DAY, 29)]
    assert bad.problems == [] and bad.dialogs == []
    close(bad)

    outside = open_page(browser, f"{base}/sites.html?from=1990-01-01&to=1990-02-01")
    assert "only" in outside.page.locator("#range-error").inner_text()
    assert parse_qs(urlsplit(outside.page.url).query)["from"] == [day_before(LAST_DAY, 29)]
    close(outside)
    clipped = open_page(browser, f"{base}/sites.html?from=2026-09-01&to=2026-10-05")
    assert "Shown: 2026-09-19 to 2026-10-05" in clipped.page.locator("#range-error").inner_text()
    assert parse_qs(urlsplit(clipped.page.url).query)["from"] == ["2026-09-19"]
    close(clipped)


def test_dates_can_be_typed_digit_by_digit(browser, site):
    base, _, _ = site
    opened = open_page(browser, f"{base}/new_user.html")
    page = opened.page
    page.locator("#from").focus()  # the month part; Chromium reports a change per typed part
    page.keyboard.type("10052026")
    page.wait_for_function("window.kpi.ready && window.kpi.state.from === "
                           "Date.parse('2026-10-05T00:00:00Z') / 86400000")
    assert page.locator("#from").input_value() == "2026-10-05"
    assert parse_qs(urlsplit(page.url).query)["from"] == ["2026-10-05"]
    assert page.locator("#range-error").is_hidden()
    close(opened)


def test_toggling_segments_by_keyboard_keeps_the_focus(browser, site):
    base, _, _ = site
    opened = open_page(browser, f"{base}/assertions.html?seg=OS")
    page = opened.page
    boxes = page.locator("#series-picker input[type=checkbox]")
    names = boxes.evaluate_all("boxes => boxes.map(b => b.value)")
    boxes.nth(0).focus()
    act(page, lambda: page.keyboard.press("Space"))
    assert page.evaluate("document.activeElement.value") == names[0]
    page.keyboard.press("Tab")
    act(page, lambda: page.keyboard.press("Space"))
    assert page.evaluate("document.activeElement.value") == names[1]
    shown = boxes.evaluate_all("boxes => boxes.filter(b => b.checked).map(b => b.value)")
    assert shown == names[2:6]
    series = {r["series"] for r in page.evaluate("window.kpi.views.main.data('rows')")}
    assert series == set(names[2:6])
    close(opened)


def test_missing_days_are_gaps_and_an_empty_range_says_so(browser, site):
    base, _, _ = site
    opened = open_page(browser, f"{base}/assertions.html?from=2026-10-10&to=2026-10-15")
    rows = opened.page.evaluate("window.kpi.views.main.data('rows')")
    values = {datetime.fromtimestamp(r["date"] / 1000, UTC).date(): r["value"] for r in rows}
    assert values[GAP[0]] is None and values[GAP[1]] is None  # a gap, never 0
    assert values[date(2026, 10, 11)] > 0
    close(opened)

    empty = open_page(browser, f"{base}/new_user.html?from={GAP[0]}&to={GAP[1]}")
    message = empty.page.locator("#empty")
    assert message.is_visible() and "No data between 2026-10-12 and 2026-10-13" in \
        message.inner_text()
    assert not empty.page.locator("#views").is_visible()
    assert [row[1] for row in funnel_cells(empty.page)] == ["0", "0", "0", "0"]
    assert empty.problems == []
    close(empty)


def test_a_site_without_data_says_so(browser, site):
    _, _, empty_base = site
    for name in ("index.html", "assertions.html", "new_user.html"):
        opened = open_page(browser, f"{empty_base}/{name}")
        text = opened.page.locator("main").inner_text()
        assert "No day has been aggregated yet" in text or "No data yet" in text
        assert opened.problems == [] and opened.failures == []
        close(opened)


def test_the_data_quality_page_lists_the_refused_restatement_as_text(browser, site):
    base, _, empty_base = site
    opened = open_page(browser, f"{base}/data_quality.html", width=360)
    cells = opened.page.locator("#refusal-list tbody tr td").all_inner_texts()
    assert cells == ["2026-10-28", "1,500", "0", "1,500", "2026-10-31T00:20:00+00:00",
                     REFUSAL["run"]]
    assert opened.page.locator("main img").count() == 0  # the run's markup stayed text
    close(opened)
    opened = open_page(browser, f"{empty_base}/data_quality.html")
    assert opened.page.locator("#refusal-list").inner_text().startswith("None")
    close(opened)


# --- numbers, milestones, alternatives, theme ----------------------------------------------

@pytest.mark.parametrize(("report", "segmentation"), [
    ("new_user_success", "OS"), ("bounce_rate", "Total"), ("sites", "Locale"),
    ("sites_median", "Total"), ("password_reset", "Total"), ("assertions", "OS"),
    ("general_progress_time", "Total"), ("new_user", "Browser"), ("data_quality", "Total"),
])
def test_drawn_values_equal_the_published_files(browser, site, report, segmentation):
    base, folder, _ = site
    opened = open_page(browser, f"{base}/{report}.html?from=2026-09-01&to=2026-12-31"
                                f"&seg={segmentation}")
    page = opened.page
    if page.get_by_role("button", name="Show all").is_visible():
        act(page, lambda: page.get_by_role("button", name="Show all").click())
    drawn = page.evaluate("window.kpi.rows.map(r => [r.date, r.series, r.measure, r.value])")
    published_rows = [r for r in published(folder, report) if r["segmentation"] == segmentation]
    days_with_data = {r["date"] for r in published_rows}
    want = {}
    for row in published_rows:
        series = row["segment"] if segmentation != "Total" else row["measure"]
        if report in ("bounce_rate", "sites_median", "sites", "assertions", "new_user_success"):
            series = row["segment"]
        if report == "data_quality":
            series = QUALITY_LABELS[row["measure"]]  # as the page names them
        want[(row["date"], series, row["measure"])] = (
            float(row["value"]) if row["value"] else None)
    count_report = report in ("assertions", "new_user", "data_quality")
    seen = set()
    for when, series, measure, value in drawn:
        key = (datetime.fromtimestamp(when / 1000, UTC).date().isoformat(), series, measure)
        if key in want:
            assert value == want[key], key  # exactly the published value
            seen.add(key)
        elif count_report and key[0] in days_with_data:
            assert value == 0, key  # a segment without blobs on a day with data counts 0
        else:
            assert value is None, key  # no row: a gap
    assert seen == set(want)  # every published row is drawn
    close(opened)


def test_milestones_in_range_are_drawn_as_text(browser, site):
    base, _, _ = site
    opened = open_page(browser, f"{base}/assertions.html")
    page = opened.page
    labels = page.locator(".chart svg .mark-text.role-mark text").all_text_contents()
    assert MILESTONE in labels
    assert page.locator("main img, .chart svg b").count() == 0
    act(page, lambda: page.get_by_role("button", name="7 days", exact=True).click())
    assert page.locator(".chart svg .mark-text.role-mark text").count() == 0  # outside the range
    assert opened.dialogs == [] and opened.problems == []
    close(opened)


def test_data_table_and_download_of_the_view(browser, site):
    base, _, _ = site
    opened = open_page(browser, f"{base}/new_user_success.html")
    page = opened.page
    page.locator("#data-table summary").click()
    expect(page.locator("#data-table tbody tr")).to_have_count(28)  # 30 days less the 2 gaps
    table_rows = page.locator("#data-table tbody tr").count()
    assert table_rows == page.evaluate(
        "window.kpi.rows.filter(r => r.value !== null || r.denominator !== null).length")
    headers = page.locator("#data-table thead th").all_text_contents()
    assert headers == ["date", "series", "value", "numerator", "denominator"]
    with page.expect_download() as download:
        page.locator("#download-view").click()
    text = open(download.value.path(), encoding="utf-8").read()
    assert text.splitlines()[0] == "date,series,value,numerator,denominator"
    assert len(text.splitlines()) == 1 + 28
    assert page.request.get(f"{base}/data/new_user_success.csv").ok
    close(opened)


def test_the_data_table_of_a_segmented_funnel_names_the_step(browser, site):
    base, _, _ = site
    opened = open_page(browser, f"{base}/new_user.html?seg=OS")
    page = opened.page
    page.locator("#data-table summary").click()
    expect(page.locator("#data-table thead th")).to_have_count(4)
    assert page.locator("#data-table thead th").all_text_contents() == [
        "date", "series", "step", "value"]
    steps = set(page.locator("#data-table tbody tr td:nth-child(3)").all_text_contents())
    assert steps == set(CONFIG.steps("new_user"))
    close(opened)


def test_quick_clicks_end_in_the_last_state(browser, site):
    base, folder, _ = site
    opened = open_page(browser, f"{base}/new_user.html")
    page = opened.page
    act(page, lambda: [page.get_by_role("button", name=name, exact=True).click()
                       for name in ("7 days", "90 days", "30 days", "All", "7 days", "All")])
    page.wait_for_function("window.kpi.ready")
    rows = published(folder, "new_user")
    assert funnel_cells(page) == expected_rows(expected_funnel(rows, "0000", "9999"))
    assert page.get_by_role("button", name="All", exact=True).get_attribute(
        "aria-pressed") == "true"
    assert opened.problems == []
    close(opened)


def test_every_chart_has_a_text_description(browser, site):
    base, _, _ = site
    opened = open_page(browser, f"{base}/sites.html")
    caption = opened.page.locator("#chart-caption").inner_text()
    assert caption.startswith("Persona adoption, ") and "latest" in caption
    opened_funnel = open_page(browser, f"{base}/email_activation.html")
    assert opened_funnel.page.locator("#funnel-caption").inner_text().startswith(
        "Email activation funnel")
    assert opened_funnel.page.locator(".panel figcaption").count() == 4
    close(opened)
    close(opened_funnel)


def test_dark_mode_changes_page_and_chart_colours(browser, site):
    base, _, _ = site
    colours = {}
    for scheme in ("light", "dark"):
        opened = open_page(browser, f"{base}/bounce_rate.html", scheme=scheme)
        colours[scheme] = opened.page.evaluate("""[
            getComputedStyle(document.body).backgroundColor,
            getComputedStyle(document.querySelector('.chart svg .role-axis-label text')).fill
        ]""")
        close(opened)
    assert colours["light"][0] != colours["dark"][0]
    assert colours["light"][1] != colours["dark"][1]


def test_overview_states_freshness_and_draws_sparklines(browser, site):
    base, _, _ = site
    opened = open_page(browser, f"{base}/index.html")
    page = opened.page
    freshness = page.locator("#freshness")
    # the fake data ends on 2026-10-30, long before today: stale, said plainly
    assert freshness.get_attribute("data-state") == "stale"
    assert freshness.inner_text().startswith("Stale: the newest data is for 2026-10-30")
    assert page.locator(".spark svg .mark-line path").count() == 6
    assert page.locator(".tile h2 a").count() == 6
    close(opened)
    # 30 hours after the last day ended: fresh
    fresh = open_page(browser, f"{base}/index.html", now=datetime(2026, 11, 1, 6, tzinfo=UTC))
    assert fresh.page.locator("#freshness").get_attribute("data-state") == "fresh"
    assert fresh.page.locator("#freshness").inner_text().startswith(
        "Fresh: data through 2026-10-30 (UTC), which ended 30 h ago")
    close(fresh)


def test_a_page_never_draws_the_data_of_a_build_published_after_it(browser, tmp_path):
    """The site's link swaps to a new build while a page is open: the page's next view file
    comes from the new build, so the page reloads (as the new build) instead of mixing them."""
    days = history_days(LAST_DAY, 7)
    blobs = [b for day in days for _, b in blobs_for_day(6, day, 60, bad_rate=0.0)]
    target = tmp_path / "site"
    _build(target, blobs, CONFIG)
    first = (target / "index.html").read_text()
    server = make_server(tmp_path, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        opened = open_page(browser, f"http://127.0.0.1:{server.server_address[1]}/site/"
                                    "new_user.html")
        page = opened.page
        infos = []
        page.on("console", lambda m: infos.append(m.text) if m.type == "info" else None)
        before = page.get_attribute('meta[name="kpi-build"]', "content")
        assert before in first
        _build(target, blobs[: len(blobs) // 2], CONFIG)  # a newer build, other data
        after = json.loads((target / "data" / "manifest.json").read_text())["build_id"]
        assert after != before
        with page.expect_navigation():  # the OS view file is from the newer build: reload
            page.select_option("#seg", "OS")
        page.wait_for_function("window.kpi && window.kpi.ready", timeout=15_000)
        assert page.get_attribute('meta[name="kpi-build"]', "content") == after
        drawn = page.evaluate("window.kpi.state.seg")
        assert drawn == "OS"  # the reader's choice survived the reload
        # news, not a failure: said at info level, no console error
        assert [text for text in infos if "reloading" in text], infos
        close(opened)
    finally:
        server.shutdown()
        server.server_close()
