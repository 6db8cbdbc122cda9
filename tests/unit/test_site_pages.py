"""Chart templates as data (`to_dict()`) and the rendered pages, parsed, without a browser."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime

import pytest
from bs4 import BeautifulSoup

from kpi import charts
from kpi.chartstyle import THEMES
from kpi.reports import build_reports, to_csv, to_json
from kpi.site import PAGES, TEMPLATES_DIR, kpi_change, kpi_number, page_config, render_site
from kpi.views import segmentations_of
from tests.unit.kpi_helpers import CONFIG, aggregates_of, blob

PAGE_FILES_WITH_SCRIPTS = ["index.html", *(f"{page.id}.html" for page in PAGES)]
HOSTILE = 'Train </script><img src=x onerror="alert(1)"> & co'


def _layers(spec: dict) -> list[dict]:
    return spec.get("layer", [spec])


def test_series_chart_reads_named_data_and_colours_from_rows():
    spec = charts.spec(charts.series_chart("Success rate", percent=True, ratio=True))
    assert "$schema" not in spec
    data, rules, labels, folded, flags = _layers(spec)
    assert data["data"] == {"name": "rows"}
    assert data["mark"]["type"] == "line"
    assert data["encoding"]["color"] == {"field": "color", "type": "nominal", "legend": None,
                                         "scale": None}
    assert data["encoding"]["detail"]["field"] == "series"
    assert data["encoding"]["y"]["axis"]["format"] == ".0%"
    tips = [t["field"] for t in data["encoding"]["tooltip"]]
    assert tips == ["date", "series", "value", "numerator", "denominator"]
    assert rules["data"] == labels["data"] == {"name": "milestones"}
    assert labels["mark"]["type"] == "text" and labels["encoding"]["text"]["field"] == "milestone"
    # above the plot (never over the data), cut to the room beside its rule with an ellipsis
    assert labels["encoding"]["y"] == {"value": 0} and labels["mark"]["baseline"] == "bottom"
    assert labels["mark"]["ellipsis"] == "…" and "width" in labels["mark"]["limit"]["expr"]
    assert "clip" not in labels["mark"]
    assert spec["width"] == "container"
    assert flags["data"] == {"name": "flags"}
    # days a shown segment was folded into Other: a hollow mark at the foot, the text as tooltip
    assert folded["data"] == {"name": "folded"}
    assert folded["mark"]["type"] == "point" and folded["mark"]["filled"] is False
    assert folded["encoding"]["y"] == {"value": 295}
    assert folded["encoding"]["tooltip"] == {"field": "text", "type": "nominal"}


def test_flagged_days_are_diamonds_on_the_value_axis_with_their_text_as_tooltip():
    for chart in (charts.series_chart("Blobs", False, False),
                  charts.series_chart("Blobs", False, False, area=True),
                  charts.sparkline_chart(percent=True)):
        flags = _layers(charts.spec(chart))[-1]
        assert flags["data"] == {"name": "flags"} and flags["name"] == "flags"
        assert flags["mark"]["type"] == "point" and flags["mark"]["filled"] is True
        assert flags["encoding"]["y"]["field"] == "value"
        assert flags["encoding"]["y"].get("stack") is None  # at its value, never stacked again
        assert flags["encoding"]["shape"] == {"value": "diamond"}  # ▲ ▼ ■ are the deltas
        assert flags["encoding"]["tooltip"] == {"field": "text", "type": "nominal"}
    lines = charts.spec(charts.series_chart("Rate", percent=True, ratio=True))
    assert _layers(lines)[-1]["encoding"]["y"]["axis"]["format"] == ".0%"  # the chart's units


def test_count_chart_has_no_ratio_tooltips_and_areas_stack():
    lines = _layers(charts.spec(charts.series_chart("Blobs", percent=False, ratio=False)))[0]
    assert [t["field"] for t in lines["encoding"]["tooltip"]] == ["date", "series", "value"]
    assert lines["encoding"]["y"]["stack"] is None  # lines never stack
    assert "order" not in lines["encoding"]  # a line's points stay in date order
    areas = _layers(charts.spec(charts.series_chart("Blobs", False, False, area=True)))[0]
    assert areas["mark"]["type"] == "area"
    assert areas["encoding"]["y"]["stack"] == "zero"
    assert areas["encoding"]["order"]["field"] == "rank"


def test_funnel_chart_bars_follow_step_order():
    spec = charts.spec(charts.funnel_chart("Blobs reaching the step"))
    assert spec["data"] == {"name": "funnel"} and spec["mark"]["type"] == "bar"
    assert spec["encoding"]["y"]["sort"] == {"field": "order"}
    assert spec["encoding"]["x"]["field"] == "count"


def test_every_chart_template_is_valid_vega_lite():
    """Builds skip the schema check (it costs a second per process); here every template of
    every page, and the sparklines, go through it, and equal what the builds use."""
    from kpi.chartcache import overview_specs, page_specs
    from kpi.views import KINDS

    for page in PAGES:
        ratio = KINDS[page.id] in ("ratio", "complement")
        args = (page.layout, page.y_title, page.percent, ratio, page.area_toggle,
                bool(page.problems))
        assert page_specs(*args, validate=True) == page_specs(*args)
    assert overview_specs(validate=True) == overview_specs()


def test_an_invalid_template_is_caught_by_the_schema_check():
    broken = charts.sparkline_chart(percent=True)
    broken.layer[0].mark = "no-such-mark"
    with pytest.raises(Exception, match="no-such-mark"):
        charts.spec(broken, validate=True)
    assert charts.spec(broken)  # what a build would do: no check


def test_themes_give_dark_and_light_colours():
    assert THEMES["dark"]["axis"]["labelColor"] != THEMES["light"]["axis"]["labelColor"]
    assert THEMES["dark"]["background"] is None  # the page's background shows


def test_page_configs_match_layouts():
    by_id = {page.id: page for page in PAGES}
    reports = build_reports(aggregates_of([
        blob(["screen.rp_info"], user_agent={"os": os}) for os in ("Linux", "Linux", "iPhone")
    ]), CONFIG)
    funnel = page_config(by_id["new_user"], CONFIG, ["2026-10-01"], reports, "b1")
    assert set(funnel["specs"]) == {"lines", "funnel", "panel"}
    assert funnel["measures"] == list(CONFIG.steps("new_user"))
    assert funnel["segmentations"] == list(segmentations_of("new_user"))
    assert funnel["build"] == "b1"
    area = page_config(by_id["assertions"], CONFIG, ["2026-10-01"], reports)
    assert "areas" in area["specs"] and area["area_toggle"]
    assert area["segments"]["OS"] == ["Linux", "iOS"]  # by volume
    assert set(area["segments"]) == set(segmentations_of("assertions")) - {"Total"}
    area["specs"]["lines"]["width"] = 1  # each page gets its own copy of the cached templates
    again = page_config(by_id["assertions"], CONFIG, ["2026-10-01"], reports)
    assert again["specs"]["lines"]["width"] == "container"
    bounce = page_config(by_id["bounce_rate"], CONFIG, ["2026-10-01"], reports)
    assert bounce["segmentations"] == ["Total"] and bounce["kind"] == "complement"
    quality = page_config(by_id["data_quality"], CONFIG, ["2026-10-01"], reports,
                          refusals=[{"day": "2026-10-01", "would_remove": 3, "stored": 3}])
    assert set(quality["specs"]) == {"lines", "problems"}
    assert quality["problems"] == ["duplicate", "skipped_empty_stream", "rejected_invalid"]
    assert quality["refusals"] == [{"day": "2026-10-01", "would_remove": 3}]
    assert quality["labels"]["skipped_empty_stream"] == "Skipped (empty stream)"
    assert bounce["problems"] == [] and bounce["labels"] == {} and bounce["refusals"] == []
    assert {page.layout for page in PAGES} == {"series", "measures", "funnel"}


@pytest.mark.parametrize(("value", "percent", "text"), [
    (None, False, "—"), (0.4521, True, "45.2%"), (1234, False, "1,234"), (12.5, False, "12.5"),
])
def test_headline_numbers(value, percent, text):
    assert kpi_number(value, percent) == text


def test_day_ranges_compress_consecutive_days():
    from kpi.days import day_ranges

    days = ["2026-10-01", "2026-10-02", "2026-10-04", "2026-12-31", "2027-01-01"]
    assert day_ranges(days) == [["2026-10-01", "2026-10-02"], ["2026-10-04", "2026-10-04"],
                                ["2026-12-31", "2027-01-01"]]
    assert day_ranges([]) == []


def test_headline_changes():
    assert kpi_change(0.25, {"summary": "mean per day", "percent": False}) == "+25.0%"
    assert kpi_change(-0.012, {"summary": "ratio of sums", "percent": True}) == "-1.2 pts"
    assert kpi_change(6.5, {"summary": "median", "percent": False}) == "+6.5"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    config = dataclasses.replace(CONFIG, milestones=(*CONFIG.milestones, (HOSTILE, "2026-10-02")))
    blobs = [blob(["screen.rp_info", "screen.pick_email"], f"2026-10-0{d}T10:00:00",
                  lang=f"<b>{d}</b>") for d in (1, 2, 3)]
    aggregates = aggregates_of(blobs)
    reports = build_reports(aggregates, config)
    target = tmp_path_factory.mktemp("site") / "out"
    render_site(target, aggregates, reports, config, datetime(2026, 10, 4, tzinfo=UTC))
    return target, reports


def test_published_data_files_are_unchanged_by_the_view_files(site):
    target, reports = site
    for name, report in reports.items():
        assert (target / "data" / f"{name}.csv").read_text(encoding="utf-8") == to_csv(report)
        assert (target / "data" / f"{name}.json").read_bytes() == to_json(report)
    manifest = json.loads((target / "data" / "manifest.json").read_text())
    assert set(manifest) == {"built_at", "build_id", "first_day", "last_day",
                             "pipeline_version", "reports", "days", "range"}
    assert manifest["range"] is None  # a build of every stored day
    assert manifest["days"] == [["2026-10-01", "2026-10-03"]]  # the days that fed the build
    assert (target / "data" / "view" / "assertions" / "Locale" / "2026.json").is_file()


def test_a_build_without_flags_publishes_none(site):
    """Pages read data/anomalies.json, so a build always has it: [] and a header-only CSV."""
    target, _ = site
    assert json.loads((target / "data" / "anomalies.json").read_text()) == []
    assert (target / "data" / "anomalies.csv").read_text() == (
        "date,report,segmentation,segment,measure,value,baseline,direction\n")


def test_the_data_quality_page_has_a_list_of_flagged_days(site):
    target, _ = site
    soup = BeautifulSoup((target / "data_quality.html").read_text(), "html.parser")
    assert soup.find(id="flag-list") is not None
    assert soup.find("a", href="data/anomalies.csv") is not None
    other = BeautifulSoup((target / "assertions.html").read_text(), "html.parser")
    assert other.find(id="flag-list") is None


def test_pages_use_relative_links_only(site):
    target, _ = site
    for path in target.glob("*.html"):
        soup = BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")
        for tag in soup.find_all(["a", "link", "script", "img"]):
            ref = tag.get("href") or tag.get("src")
            if ref is None:
                continue
            assert "://" not in ref and not ref.startswith("/"), (path.name, ref)


def test_untrusted_strings_are_escaped_in_pages(site):
    target, _ = site
    html = (target / "assertions.html").read_text(encoding="utf-8")
    assert "</script><img" not in html and "<img" not in html
    soup = BeautifulSoup(html, "html.parser")
    config = json.loads(soup.find("script", id="page-config").string)
    assert [HOSTILE, "2026-10-02"] in config["milestones"]
    for path in target.rglob("*"):
        if path.is_file() and path.suffix in (".html", ".json", ".csv"):
            assert "<b>1</b>" not in path.read_text(encoding="utf-8")  # lang went to Other


def test_every_report_page_has_controls_and_alternatives(site):
    target, _ = site
    for page in PAGES:
        soup = BeautifulSoup((target / f"{page.id}.html").read_text(encoding="utf-8"),
                             "html.parser")
        presets = [b.get_text(strip=True) for b in soup.select("[data-preset]")]
        assert presets == ["7 days", "30 days", "90 days", "All"]
        assert soup.find("input", id="from")["type"] == "date"
        assert soup.find("details", id="data-table") is not None
        assert (soup.find("select", id="seg") is not None) == (
            len(segmentations_of(page.id)) > 1)
        if page.layout == "funnel":
            headers = [th.get_text() for th in soup.select("#funnel-table thead th")]
            assert headers == ["Stage", "Count", "Make This Step", "Take Next Step",
                               "Complete All Steps"]


def test_overview_has_a_tile_per_headline(site):
    target, _ = site
    soup = BeautifulSoup((target / "index.html").read_text(encoding="utf-8"), "html.parser")
    tiles = soup.select(".tile")
    assert len(tiles) == 6
    assert [a["href"] for a in soup.select(".tile h2 a")] == [
        "new_user_per_day.html", "new_user_success.html", "password_reset.html",
        "bounce_rate.html", "assertions.html", "sites_median.html"]
    assert tiles[4].select_one(".tile-value").get_text(" ", strip=True) == "1 on 2026-10-03"
    assert "Not enough history" in tiles[4].get_text()
    assert soup.find(id="freshness") is not None and soup.select("table.summary tr")
    config = json.loads(soup.find(id="overview-config").string)
    assert [(t["report"], t["measure"]) for t in config["tiles"]][:2] == [
        ("new_user_per_day", "value"), ("new_user_success", "value")]
    assert len(soup.select(".tile .tile-flags[hidden]")) == 6  # marked by the page's script


def test_scripts_and_styles_carry_the_asset_version(site):
    from kpi.site import asset_version

    target, _ = site
    version = asset_version()
    soup = BeautifulSoup((target / "new_user.html").read_text(encoding="utf-8"), "html.parser")
    refs = [tag.get("href") or tag.get("src") for tag in soup.select("link[rel=stylesheet], "
                                                                        "script[src]")]
    assert refs and all(ref.endswith(f"?v={version}") for ref in refs), refs
    # every module the site ships is fetched at this version, whichever module imports it
    modules = sorted(path.name for path in (target / "static").glob("*.js"))
    assert len(modules) > 5, modules
    for page in PAGE_FILES_WITH_SCRIPTS:
        soup = BeautifulSoup((target / page).read_text(encoding="utf-8"), "html.parser")
        imports = json.loads(soup.find("script", type="importmap").string)["imports"]
        assert imports == {f"./static/{name}": f"./static/{name}?v={version}"
                           for name in modules}, page
    config = json.loads(soup.find("script", id="page-config").string)
    assert config["build"] == "20261004T000000.000000Z"  # view files are fetched per build


def test_modules_import_one_another_by_names_the_import_map_pins():
    """A specifier other than "./<a module of static/>.js" would escape the import map's
    version (or fail on a static server): none is used."""
    static = TEMPLATES_DIR / "static"
    modules = {path.name for path in static.glob("*.js")}
    specifier = re.compile(r"""\bimport\b[^"'`;]*?["'`]([^"'`]+)["'`]""")
    for path in static.glob("*.js"):
        found = specifier.findall(path.read_text(encoding="utf-8"))
        assert all(name.startswith("./") and name[2:] in modules for name in found), (
            path.name, found)
    report = (static / "report.js").read_text(encoding="utf-8")
    assert specifier.findall(report), "the pattern finds the entry module's imports"


def test_the_vega_bundle_is_kept_in_the_user_cache_and_a_bad_copy_is_remade(
    tmp_path, monkeypatch
):
    import vl_convert

    from kpi.chartcache import vega_bundle

    make = vega_bundle.__wrapped__  # past the per-process memo
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    kept = tmp_path / "kpi" / f"vega-bundle-{vl_convert.__version__}.js"
    bundle = make()
    assert len(bundle) > 100_000 and kept.read_text(encoding="utf-8") == bundle
    kept.write_text("", encoding="utf-8")  # e.g. a disk that was full
    assert make() == bundle and kept.read_text(encoding="utf-8") == bundle
    assert list(kept.parent.iterdir()) == [kept]  # no temporary file left
    blocked = tmp_path / "a file"  # a cache folder that cannot exist: a bundle all the same
    blocked.write_text("x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    assert make() == bundle


REFUSAL = {"day": "2026-10-02", "stored": 452, "fetched": 0, "would_remove": 452,
           "max_removed": 0.1, "at": "2026-12-03T21:40:00+00:00",
           "run": "manual__2026-12-03</script><script>alert(1)</script>"}


def _refusal_section(target):
    soup = BeautifulSoup((target / "data_quality.html").read_text(encoding="utf-8"),
                         "html.parser")
    title = soup.find("h2", string="Refused restatements")
    return title.find_parent("section") if title else None


def test_a_build_without_refusals_says_none_and_publishes_empty_files(site):
    target, _ = site
    section = _refusal_section(target)
    assert section.find("table") is None
    assert section.find(id="refusal-list").get_text(strip=True).startswith("None")
    assert section.find("a", href="data/refusals.csv") is not None
    assert (target / "data" / "refusals.csv").read_text() == (
        "day,stored,fetched,would_remove,max_removed,at\n")
    assert json.loads((target / "data" / "refusals.json").read_text()) == []
    other = BeautifulSoup((target / "assertions.html").read_text(), "html.parser")
    assert other.find("h2", string="Refused restatements") is None


@pytest.fixture(scope="module")
def refused_site(tmp_path_factory):
    """A site whose manifests record two refusals, one with markup in its day and run."""
    from kpi.refusals import refusals_of

    aggregates = aggregates_of([blob(["screen.rp_info"], f"2026-10-0{d}T10:00:00")
                                for d in (1, 2, 3)])
    manifests = [
        {"_id": "2026-10-01", "day": "2026-10-01", "stored": 3},  # not refused
        {"_id": REFUSAL["day"], "day": REFUSAL["day"],
         "refused": {key: value for key, value in REFUSAL.items() if key != "day"}},
        {"_id": "2026-10-03<script>", "refused": {
            "at": "<b>now</b>", "run": "<img src=x onerror=alert(2)>", "stored": 1200,
            "fetched": 40, "would_remove": 1160, "max_removed": 0.25}},
    ]
    refusals = refusals_of(manifests)
    target = tmp_path_factory.mktemp("refused") / "out"
    render_site(target, aggregates, build_reports(aggregates, CONFIG), CONFIG,
                datetime(2026, 12, 4, tzinfo=UTC), refusals=refusals)
    return target


def test_the_data_quality_page_lists_each_refused_day_newest_first(refused_site):
    section = _refusal_section(refused_site)
    headers = [th.get_text(strip=True) for th in section.select("thead th")]
    assert headers == ["Day", "Rows stored (raw + quarantined)", "Rows fetched", "Would remove",
                       "Refused at", "Run"]
    rows = [[td.get_text() for td in tr.find_all("td")] for tr in section.select("tbody tr")]
    assert rows == [
        ["2026-10-03<script>", "1,200", "40", "1,160", "<b>now</b>",
         "<img src=x onerror=alert(2)>"],
        ["2026-10-02", "452", "0", "452", "2026-12-03T21:40:00+00:00", REFUSAL["run"]],
    ]
    text = " ".join(section.get_text().split())
    assert "nothing of them was changed" in text
    assert "kpi backfill --start D --end D --allow-removals" in text
    assert "kpi_nightly" in text and "allow_removals" in text
    assert section.find(id="refusal-list").name == "table"


def test_refusals_are_escaped_in_the_page(refused_site):
    html = (refused_site / "data_quality.html").read_text(encoding="utf-8")
    assert "<script>alert(1)" not in html and "<img" not in html and "<b>now" not in html
    assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in html
    soup = BeautifulSoup(html, "html.parser")
    assert not soup.find_all("img") and not soup.find_all("b")
    inline = [s for s in soup.find_all("script") if not s.get("src")]
    assert all("alert" not in (s.string or "") for s in inline)  # only the page's own scripts


def test_refusals_are_published_as_csv_and_json(refused_site):
    import csv

    with open(refused_site / "data" / "refusals.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows == [
        {"day": "2026-10-03<script>", "stored": "1200", "fetched": "40",
         "would_remove": "1160", "max_removed": "0.25", "at": "<b>now</b>"},
        {"day": "2026-10-02", "stored": "452", "fetched": "0", "would_remove": "452",
         "max_removed": "0.1", "at": "2026-12-03T21:40:00+00:00"},
    ]
    records = json.loads((refused_site / "data" / "refusals.json").read_text())
    assert records[1] == {key: value for key, value in REFUSAL.items() if key != "run"}
    assert [list(record) for record in records] == [
        ["day", "stored", "fetched", "would_remove", "max_removed", "at"]] * 2


def test_an_odd_refusal_publishes_empty_values_not_made_up_ones():
    from kpi.refusals import refusals_csv, refusals_of

    refusals = refusals_of([{"_id": "2026-10-05", "refused": {
        "stored": True, "fetched": 1e400, "would_remove": "12", "max_removed": None}}])
    assert refusals == [{"day": "2026-10-05", "stored": None, "fetched": None,
                         "would_remove": None, "max_removed": None, "at": None, "run": None}]
    assert refusals_csv(refusals).splitlines()[1] == "2026-10-05,,,,,"
    assert refusals_of([{"_id": "2026-10-06", "refused": None}]) == []


@pytest.mark.parametrize("scale", [1, 40])
def test_tiles_colour_a_change_only_beyond_the_noise(tmp_path, scale):
    """Two weeks of small counts (91 vs 42 sign-ins) are no clear change, drawn neutral; with
    40 times the blobs the same rise is better news (green)."""
    from tests.unit.test_views import _week_blobs

    aggregates = aggregates_of(_week_blobs(scale))
    render_site(tmp_path / "out", aggregates, build_reports(aggregates, CONFIG), CONFIG,
                datetime(2026, 10, 16, tzinfo=UTC))
    soup = BeautifulSoup((tmp_path / "out" / "index.html").read_text(encoding="utf-8"),
                         "html.parser")
    [tile] = [t for t in soup.select(".tile") if t.select_one('a[href="assertions.html"]')]
    change = tile.select_one(".tile-change")
    verdict = change.select_one(".verdict").get_text(" ", strip=True)
    if scale == 1:
        assert change["data-good"] == "unclear"
        assert verdict.startswith("(no clear change")
    else:
        assert change["data-good"] == "true"
        assert verdict == "(better; higher is better)"
    assert change.select_one(".arrow").get_text() == "▲"


def test_the_definitions_page_defines_no_clear_change_and_problem_days(site):
    target, _ = site
    soup = BeautifulSoup((target / "definitions.html").read_text(encoding="utf-8"), "html.parser")
    tiles = " ".join(soup.find(id="no-clear-change").get_text().split())
    assert "3 × √(2/7)" in tiles and "4 × the two weeks' sampling noise" in tiles
    assert "reach 2% of the rows fetched" in soup.find(id="problem-day").get_text()
