"""The pages' number work (static/arithmetic.js), imported into a page of a served site in
headless Chromium and called on small inputs whose results are worked out by hand: zero
denominators, missing days (null), segments not shown, counts near 2**53. Also: every page
fetches each of its modules once, at the build's asset version (the import map in base.html).
"""

from __future__ import annotations

import math
import re
import threading
from datetime import date
from urllib.parse import parse_qs, urlsplit

import pytest

from fake_source.generator import blobs_for_day, history_days
from kpi.serve import make_server
from kpi.site import TEMPLATES_DIR, asset_version
from tests.browser.test_site import CONFIG, _build, browser, close, open_page

__all__ = ["browser"]  # the shared Chromium fixture
pytestmark = pytest.mark.browser
LAST_DAY = date(2026, 10, 30)
ARITHMETIC = TEMPLATES_DIR / "static" / "arithmetic.js"
TESTED = {"countAt", "extent", "formatValue", "funnelNumbers", "hasRow", "hoursText",
          "percentText", "plural", "rangeCount", "share", "shownValue", "stackedTop", "valueAt"}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Base URL of a site built from three days of fake blobs."""
    root = tmp_path_factory.mktemp("arithmetic")
    blobs = [b for day in history_days(LAST_DAY, 3) for _, b in blobs_for_day(3, day, 40)]
    _build(root / "site", blobs, CONFIG)
    server = make_server(root, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/site"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def run(browser, site):
    """`run(expression)`: the value of a JS expression in which `a` is the arithmetic module,
    imported as the pages import it, in a page of the site that has no script of its own."""
    opened = open_page(browser, f"{site}/definitions.html")

    def evaluate(expression: str):
        return opened.page.evaluate(
            f"async () => {{ const a = await import('./static/arithmetic.js'); "
            f"return {expression}; }}")

    yield evaluate
    close(opened)


def test_every_export_is_tested_here_and_the_module_touches_no_page(run):
    assert set(run("Object.keys(a)")) == TESTED
    source = ARITHMETIC.read_text(encoding="utf-8")
    code = re.sub(r"//.*|/\*[\s\S]*?\*/", "", source)  # its comments may name anything
    for word in ("document", "window", "fetch", "import", "sessionStorage", "localStorage"):
        assert not re.search(rf"\b{word}\b", code), word


# ---- a series' value on a day -----------------------------------------------------------------

RATIO = "{numerator: [3, 0, 5, null, 2, 3e15, 1], denominator: [4, 0, null, 7, 0, 4e15, 3]}"


def test_a_ratio_is_numerator_over_denominator_or_null(run):
    # 3/4; 0/0 and 2/0 have no value; a missing numerator or denominator neither
    assert run(f"[0, 1, 2, 3, 4, 5, 6].map(i => a.valueAt('ratio', {RATIO}, i))") == [
        0.75, None, None, None, None, 0.75, 1 / 3]


def test_a_complement_is_computed_as_kpi_reports_computes_it(run):
    # 1 - (d - n) / d, in that order: 1 - 2/3 is not the double nearest 1/3
    assert run(f"[0, 1, 4, 5, 6].map(i => a.valueAt('complement', {RATIO}, i))") == [
        0.75, None, None, 0.75, 1 - 2 / 3]
    assert 1 - 2 / 3 != 1 / 3
    assert run("a.valueAt('complement', {numerator: [0], denominator: [9]}, 0)") == 0


def test_a_count_or_median_is_its_value(run):
    assert run("[0, 1, 2].map(i => a.valueAt('count', {value: [5, null, 0]}, i))") == [
        5, None, 0]
    assert run("[0, 1].map(i => a.valueAt('median', {value: [2.5, null]}, i))") == [2.5, None]


def test_a_count_is_zero_on_a_day_with_data_unless_folded_into_other(run):
    shown = run("""[[true, false], [false, false], [true, true], [true, false]].map(
        ([dayHasData, folded], i) => a.shownValue('count', {value: [null, null, null, 4]}, i,
                                                  {dayHasData, folded}))""")
    assert shown == [0, None, None, 4]
    # a rate without a row is a gap even on a day with data: 0 would be a false 0%
    assert run("""a.shownValue('ratio', {numerator: [null], denominator: [null]}, 0,
                               {dayHasData: true, folded: false})""") is None
    assert run("""a.shownValue('median', {value: [null]}, 0,
                               {dayHasData: true, folded: false})""") is None


def test_rows_and_counts_of_a_day(run):
    count = "{value: [3, null, 0, 4e15, 4e15]}"
    ratio = "{numerator: [1, null, 2], denominator: [0, null, 5]}"
    assert run(f"[0, 1, 2].map(i => a.hasRow({count}, i))") == [True, False, True]
    assert run(f"[0, 1, 2].map(i => a.hasRow({ratio}, i))") == [True, False, True]  # 0 counts
    assert run(f"[0, 1, 2].map(i => a.countAt('count', {count}, i))") == [3, 0, 0]
    assert run(f"[0, 1, 2].map(i => a.countAt('ratio', {ratio}, i))") == [1, 0, 2]
    assert run(f"a.rangeCount('count', {count}, 0, 2)") == 3
    assert run(f"a.rangeCount('count', {count}, 1, 1)") == 0  # only a missing day
    assert run(f"a.rangeCount('count', {count}, 0, 4)") == 8_000_000_000_000_003
    assert run(f"a.rangeCount('ratio', {ratio}, 0, 2)") == 3


# ---- roll-ups over days and segments ----------------------------------------------------------

STEPS = "['1 - shown', '2 - picked', '3 - done']"
SERIES = """[
    {segment: 'Chrome', measure: '1 - shown', value: [10, null, 5]},
    {segment: 'Chrome', measure: '2 - picked', value: [4, 3, null]},
    {segment: 'Chrome', measure: '3 - done', value: [1, null, null]},
    {segment: 'Firefox', measure: '1 - shown', value: [2, 2, 2]},
    {segment: 'Firefox', measure: '3 - done', value: [1, 1, 1]},
    {segment: 'Safari', measure: '1 - shown', value: [100, 100, 100]}]"""
FUNNEL = "(f => ({steps: f.steps, bySegment: [...f.bySegment], totals: f.totals}))"


def test_a_funnel_sums_the_chosen_days_of_the_shown_segments(run):
    # days 1 and 2 of Chrome and Firefox: Chrome 0+5, 3+0, 0+0; Firefox 2+2, none, 1+1
    funnel = run(f"{FUNNEL}(a.funnelNumbers('count', {STEPS}, {SERIES}, "
                 "['Chrome', 'Firefox'], 1, 2))")
    assert funnel == {"steps": ["1 - shown", "2 - picked", "3 - done"],
                      "bySegment": [["Chrome", [5, 3, 0]], ["Firefox", [4, 0, 2]]],
                      "totals": [9, 3, 2]}


def test_a_funnel_of_every_segment_and_day(run):
    # Chrome 15, 7, 1; Firefox 6, 0, 3; Safari 300, 0, 0
    funnel = run(f"{FUNNEL}(a.funnelNumbers('count', {STEPS}, {SERIES}, null, 0, 2))")
    assert funnel["bySegment"] == [["Chrome", [15, 7, 1]], ["Firefox", [6, 0, 3]],
                                   ["Safari", [300, 0, 0]]]
    assert funnel["totals"] == [321, 7, 4]


def test_a_funnel_of_nothing_and_of_very_large_counts(run):
    assert run(f"{FUNNEL}(a.funnelNumbers('count', {STEPS}, [], null, 0, 29))")["totals"] == [
        0, 0, 0]
    # a ratio's step counts are its numerators; 5e15 + 4e15 is below 2**53, so exact
    big = run(f"""{FUNNEL}(a.funnelNumbers('ratio', ['1 - shown'], [
        {{segment: 'A', measure: '1 - shown', numerator: [5e15, null], denominator: [1, 1]}},
        {{segment: 'B', measure: '1 - shown', numerator: [null, 4e15], denominator: [1, 1]}}],
        null, 0, 1))""")
    assert big["totals"] == [9_000_000_000_000_000]


def test_the_top_of_a_stacked_band_sums_the_bands_below_it_that_day(run):
    rows = """[{date: 1, rank: 0, value: 5}, {date: 1, rank: 1, value: null},
               {date: 1, rank: 2, value: 7}, {date: 2, rank: 0, value: 100}]"""
    tops = run(f"[[1, 0], [1, 1], [1, 2], [2, 2], [3, 0]].map(([d, r]) => "
               f"a.stackedTop({rows}, d, r))")
    assert tops == [5, 5, 12, 100, 0]


def test_extent_of_few_many_and_no_values(run):
    assert run("a.extent([3, -1, 7, 0])") == [-1, 7]
    assert run("a.extent([5])") == [5, 5]
    assert run("a.extent([9e15, 1e15])") == [1e15, 9e15]
    assert run("a.extent([])") == [math.inf, -math.inf]
    # more values than a call takes as arguments (Math.min(...values) throws a RangeError)
    assert run("(() => { const v = Array.from({length: 1_000_000}, (_, i) => i % 1000); "
               "return [a.extent(v), (() => { try { Math.min(...v); return 'fits'; } "
               "catch (e) { return e.name; } })()]; })()") == [[0, 999], "RangeError"]


# ---- numbers in words -------------------------------------------------------------------------

def test_percent_and_share_of_a_zero_whole(run):
    cases = "[[1, 3], [2, 3], [1, 0], [0, 0], [0, 5], [5, 1000], [7, 7], [3e15, 4e15]]"
    assert run(f"{cases}.map(([n, d]) => a.percentText(n, d))") == [
        "33%", "67%", "—", "—", "0%", "1%", "100%", "75%"]  # 0.5% rounds up to 1%
    assert run(f"{cases}.map(([n, d]) => a.share(n, d))") == [
        1 / 3, 2 / 3, None, None, 0, 0.005, 1, 0.75]


def test_values_as_people_read_them(run):
    assert run("""[[null, false], [undefined, false], [NaN, true], [0, false],
        [1234567.891, false], [12345678901234, false], [-1500, false], [0.1234, true],
        [1, true], [0, true], [0.0006, true]].map(([v, p]) => a.formatValue(v, p))""") == [
        "—", "—", "—", "0", "1,234,567.89", "12,345,678,901,234", "-1,500", "12.3%",
        "100.0%", "0.0%", "0.1%"]
    assert run("[a.formatValue(0.5, true, 0), a.formatValue(0.0625, true, 2)]") == [
        "50%", "6.25%"]


def test_plurals(run):
    assert run("""[a.plural(1, 'day'), a.plural(0, 'day'), a.plural(2, 'day'),
        a.plural(1000000, 'blob'), a.plural(1.5, 'day'), a.plural(3, 'child', 'children')]""") == [
        "1 day", "0 days", "2 days", "1,000,000 blobs", "1.5 days", "3 children"]


def test_ages_in_hours(run):
    assert run("[0, 0.99, 1, 1.5, 2, 47.99, 48, 71.9, 72].map(a.hoursText)") == [
        "less than an hour", "less than an hour", "1 h", "1 h 30 min", "2 h", "47 h 59 min",
        "2 days", "2 days", "3 days"]


# ---- every module at the build's version ------------------------------------------------------

@pytest.mark.parametrize("name", ["index.html", "new_user.html", "data_quality.html"])
def test_a_page_fetches_each_module_once_at_the_asset_version(browser, site, name):
    opened = open_page(browser, f"{site}/{name}")
    modules = [urlsplit(url) for url in opened.requests
               if "/static/" in url and urlsplit(url).path.endswith(".js")]
    paths = [url.path.rsplit("/", 1)[1] for url in modules]
    assert len(paths) == len(set(paths)), paths  # one copy of each module, so one state
    assert {"arithmetic.js", "days.js", "flags.js", "vega.js"} <= set(paths)
    assert all(parse_qs(url.query) == {"v": [asset_version()]} for url in modules), modules
    close(opened)
