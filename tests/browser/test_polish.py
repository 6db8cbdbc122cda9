"""What a first-time reader tripped over: axis labels, notes that outstay their welcome, typed
dates, funnel numbers and labels, plurals, headings, the reload for a newer build."""

from __future__ import annotations

import threading
from datetime import date
from urllib.parse import parse_qs, urlsplit

import pytest

from fake_source.generator import blobs_for_day
from kpi.serve import make_server
from tests.browser.test_site import (
    CONFIG,
    LAST_DAY,
    MILESTONE,
    _build,
    act,
    browser,
    close,
    day_before,
    open_page,
    site,
)

__all__ = ["browser", "site"]  # the shared Chromium and six-week site fixtures
pytestmark = pytest.mark.browser

X_LABELS = """box => [...box.querySelectorAll('g.role-axis')]
    .filter(g => (g.getAttribute('aria-label') || '').startsWith('X-axis'))
    .flatMap(g => [...g.querySelectorAll('.role-axis-label text')])
    .map(t => { const b = t.getBoundingClientRect();
                return [t.textContent, b.left, b.right]; })"""


def x_labels(page, selector="#chart") -> list[tuple[str, float, float]]:
    return [tuple(label) for label in page.locator(selector).first.evaluate(X_LABELS)]


def assert_apart(labels) -> None:
    """No two labels touch or overlap, and none is repeated."""
    texts = [text for text, _, _ in labels]
    assert len(texts) == len(set(texts)), texts
    spans = sorted((left, right) for _, left, right in labels)
    for (_, right), (left, _) in zip(spans, spans[1:], strict=False):
        assert left - right >= 2, labels


@pytest.mark.parametrize("width", [1280, 360])
def test_a_short_range_labels_each_day_once_and_labels_never_touch(browser, site, width):
    base, _, _ = site
    opened = open_page(browser, f"{base}/assertions.html", width=width)
    page = opened.page
    act(page, lambda: page.get_by_role("button", name="7 days", exact=True).click())
    labels = x_labels(page)
    assert len(labels) == 7, labels  # one per day of the week shown
    assert_apart(labels)
    for preset in ("30 days", "All"):
        act(page, lambda preset=preset: page.get_by_role("button", name=preset,
                                                         exact=True).click())
        labels = x_labels(page)
        assert len(labels) >= 3, (preset, labels)
        assert_apart(labels)
    close(opened)


def test_the_last_series_note_clears_on_the_next_view_change(browser, site):
    base, _, _ = site
    opened = open_page(browser, f"{base}/new_user_time.html")
    page = opened.page
    boxes = page.locator("#series-picker input[type=checkbox]")
    names = boxes.evaluate_all("boxes => boxes.filter(b => b.checked).map(b => b.value)")
    for name in names[1:]:
        act(page, lambda name=name: page.locator(
            f"#series-picker input[value='{name}']").uncheck())
    page.locator(f"#series-picker input[value='{names[0]}']").click()
    assert page.locator("#picker-note").is_visible()
    act(page, lambda: page.get_by_role("button", name="7 days", exact=True).click())
    assert page.locator("#picker-note").is_hidden()
    close(opened)


def test_a_typed_date_past_the_data_is_clipped_like_an_address_date(browser, site):
    base, _, _ = site
    opened = open_page(browser, f"{base}/sites.html")
    page = opened.page
    act(page, lambda: page.fill("#to", "2026-12-31"))
    page.locator("#to").blur()  # typed text stays while typing; the clipped day shows after
    assert page.locator("#to").input_value() == LAST_DAY.isoformat()
    assert parse_qs(urlsplit(page.url).query)["to"] == [LAST_DAY.isoformat()]
    note = page.locator("#range-error").inner_text()
    assert note.startswith(f"Shown: {day_before(LAST_DAY, 29)} to {LAST_DAY}")
    assert page.locator("[aria-invalid=true]").count() == 0
    act(page, lambda: page.fill("#from", "2026-01-01"))
    page.locator("#from").blur()
    assert page.locator("#from").input_value() == day_before(LAST_DAY, 41)  # the first day
    page.fill("#from", "0002-10-05")  # a year being typed: refused, never rewritten
    assert page.locator("#from").input_value() == "0002-10-05"
    assert page.locator("#from").get_attribute("aria-invalid") == "true"
    close(opened)


def test_funnel_counts_have_thousands_separators_and_step_labels_are_whole(browser, one_day):
    for width in (1280, 360):
        opened = open_page(browser, f"{one_day}/new_user.html", width=width)
        page = opened.page
        counts = page.locator("#funnel-table tbody tr td:nth-child(2)").all_inner_texts()
        assert counts[0].replace(",", "").isdigit() and int(counts[0].replace(",", "")) > 999
        assert counts[0] == f"{int(counts[0].replace(',', '')):,}"
        assert f"{counts[0]}" in page.locator("#funnel-caption").inner_text()
        labels = page.locator("#funnel .role-axis-label text").all_text_contents()
        words = " ".join(labels)
        assert "…" not in words
        for step in CONFIG.steps("new_user"):
            name = step.split(" - ", 1)[1]
            assert all(part in words for part in name.split()), (name, labels)
        close(opened)


def test_each_report_page_has_its_own_heading(browser, site):
    base, folder, _ = site
    headings = {}
    for path in sorted(folder.glob("*.html")):
        opened = open_page(browser, f"{base}/{path.name}")
        headings[path.name] = opened.page.locator("h1").inner_text()
        close(opened)
    repeated = {h for h in headings.values() if list(headings.values()).count(h) > 1}
    assert not repeated, headings


@pytest.fixture(scope="module")
def one_day(tmp_path_factory):
    """A site of one busy day (about 1,400 new users), served: its words must say "1 day",
    not "1 days"."""
    root = tmp_path_factory.mktemp("one-day")
    _build(root / "site", [b for _, b in blobs_for_day(3, LAST_DAY, 16000, bad_rate=0.0)],
           CONFIG)
    server = make_server(root, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/site"
    server.shutdown()
    server.server_close()


def test_one_day_is_one_day_not_one_days(browser, one_day):
    opened = open_page(browser, f"{one_day}/bounce_rate.html")
    page = opened.page
    caption = page.locator("#chart-caption").inner_text()
    assert "1 day with a value" in caption, caption
    page.locator("#data-table summary").click()
    assert page.locator("#data-table caption").inner_text().startswith("1 row,")
    assert "(1 row, every day)" in page.locator(".downloads").inner_text()
    close(opened)
    opened = open_page(browser, f"{one_day}/index.html")
    descriptions = opened.page.locator(".spark").evaluate_all(
        "boxes => boxes.map(b => b.getAttribute('aria-label') || '')")
    assert descriptions and all("last 1 day:" in d for d in descriptions), descriptions
    close(opened)
    assert date.fromisoformat(LAST_DAY.isoformat())  # the site's only day


MILESTONE_LABELS = """box => {
    const plot = box.querySelector('svg .role-frame.root path.background').getBoundingClientRect();
    return [...box.querySelectorAll('.mark-text.role-mark text')].map(t => {
        const b = t.getBoundingClientRect();
        return {text: t.textContent, left: b.left, right: b.right, top: b.top,
                bottom: b.bottom, plot: [plot.left, plot.right, plot.top]};
    });
}"""


def milestone_labels(page, selector) -> list[dict]:
    return [label for box in page.locator(selector).all()
            for label in box.evaluate(MILESTONE_LABELS)]


def assert_whole_or_ellipsis_within_the_plot(labels, names) -> None:
    for label in labels:
        left, right, _ = label["plot"]
        assert left - 0.5 <= label["left"] and label["right"] <= right + 0.5, label
        text = label["text"]
        assert text in names or (text.endswith("…") and any(
            name.startswith(text[:-1]) for name in names)), label


def test_a_milestone_label_fits_the_chart_with_an_ellipsis_and_its_tooltip_is_whole(
        browser, site):
    base, _, _ = site
    opened = open_page(browser, f"{base}/assertions.html", width=360)
    page = opened.page
    names = [name for name, _ in CONFIG.milestones] + [MILESTONE]
    labels = milestone_labels(page, "#chart")
    assert labels
    assert_whole_or_ellipsis_within_the_plot(labels, names)
    cut = [label for label in labels if label["text"].endswith("…")]
    assert cut, labels  # at 360 px this long name does not fit beside its rule
    page.locator("#chart .mark-text.role-mark text").first.hover(force=True)
    tooltip = page.locator("#vg-tooltip-element")
    tooltip.wait_for(state="visible")
    assert any(name in tooltip.inner_text() for name in names)
    close(opened)


def test_milestone_labels_of_small_step_charts_stay_above_the_data(browser, site):
    base, _, _ = site
    opened = open_page(browser, f"{base}/new_user.html", width=1280)
    page = opened.page
    names = [name for name, _ in CONFIG.milestones] + [MILESTONE]
    labels = milestone_labels(page, "#panels .chart")
    assert labels
    for label in labels:
        assert label["bottom"] <= label["plot"][2] + 0.5, label  # above the plot's top
    assert_whole_or_ellipsis_within_the_plot(labels, names)
    close(opened)
