"""What changed since the last build (data/changes.csv, the Changes page) and the archive of the
last builds' data files, from rendered sites (no CouchDB)."""

from __future__ import annotations

import csv
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from bs4 import BeautifulSoup

from kpi import changes
from kpi.changes import ARCHIVE_BUILDS, CHANGE_COLUMNS
from kpi.reports import build_reports
from kpi.site import render_site
from tests.unit.kpi_helpers import CONFIG, aggregates_of, blob

HOSTILE = '<b>x</b><script>alert(1)</script>"&'
BUILT = datetime(2026, 10, 4, 6, tzinfo=UTC)


def blobs(extra_on_day_2: int = 0, lang: str = "en") -> list[dict]:
    events = ["screen.rp_info", "screen.pick_email"]
    return [blob(events, f"2026-10-0{d}T10:00:00", lang=lang) for d in (1, 2, 3)] + [
        blob(events, "2026-10-02T11:00:00", lang=lang) for _ in range(extra_on_day_2)]


def render(target: Path, source: list[dict], built_at: datetime,
           previous: Path | None = None) -> Path:
    aggregates = aggregates_of(source)
    render_site(target, aggregates, build_reports(aggregates, CONFIG), CONFIG, built_at,
                previous=previous)
    return target


def read_changes(site: Path) -> list[dict]:
    with open(site / "data" / "changes.csv", newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == CHANGE_COLUMNS
        return list(reader)


def build_id(site: Path) -> str:
    return json.loads((site / "data" / "manifest.json").read_text())["build_id"]


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory):
    root = tmp_path_factory.mktemp("changes")
    first = render(root / "first", blobs(), BUILT)
    second = render(root / "second", blobs(extra_on_day_2=2), BUILT + timedelta(days=1),
                    previous=first)
    return first, second


def test_no_previous_build_publishes_a_header_only_changes_file(two_builds):
    first, _ = two_builds
    assert (first / "data" / "changes.csv").read_text() == ",".join(CHANGE_COLUMNS) + "\n"
    assert json.loads((first / "data" / "changes.json").read_text()) == []
    assert "no change since the previous build" in (first / "changes.html").read_text()
    index = json.loads((first / "archive" / "index.json").read_text())
    assert [entry["build_id"] for entry in index] == [build_id(first)]


def test_a_restated_day_appears_with_old_and_new_values(two_builds):
    first, second = two_builds
    rows = read_changes(second)
    assert rows and {row["date"] for row in rows} == {"2026-10-02"}
    assertions = [r for r in rows if (r["report"], r["segmentation"], r["measure"])
                  == ("assertions", "Total", "value")]
    assert [(r["old_value"], r["new_value"]) for r in assertions] == [("1", "3")]
    keys = [tuple(r[c] for c in CHANGE_COLUMNS[:5]) for r in rows]
    assert keys == sorted(keys)
    # every row names a value of the previous and of the new files, as they were written
    def values(site, report):
        with open(site / "data" / f"{report}.csv", newline="") as handle:
            return {(r["date"], r["segmentation"], r["segment"], r["measure"]): r["value"]
                    for r in csv.DictReader(handle)}
    for row in rows:
        key = (row["date"], row["segmentation"], row["segment"], row["measure"])
        assert values(first, row["report"]).get(key, "") == row["old_value"]
        assert values(second, row["report"]).get(key, "") == row["new_value"]
    as_json = json.loads((second / "data" / "changes.json").read_text())
    assert len(as_json) == len(rows) and as_json[0]["date"] == "2026-10-02"
    page = BeautifulSoup((second / "changes.html").read_text(), "html.parser")
    assert page.select_one("#restated-days a[href='#day-2026-10-02']")
    assert page.find(id="no-changes") is None


def test_the_previous_build_stays_readable_in_the_archive(two_builds):
    first, second = two_builds
    index = json.loads((second / "archive" / "index.json").read_text())
    assert [entry["build_id"] for entry in index] == [build_id(second), build_id(first)]
    old = second / "archive" / build_id(first) / "data"
    assert (old / "assertions.csv").read_bytes() == (first / "data" / "assertions.csv").read_bytes()
    assert (old / "manifest.json").read_bytes() == (first / "data" / "manifest.json").read_bytes()
    assert (old / "changes.csv").is_file()
    assert not (old / "view").exists()  # data files only
    assert not list((second / "archive").rglob("*.html"))
    # the page's link to the previous build's files says what it opens
    soup = BeautifulSoup((second / "changes.html").read_text(), "html.parser")
    links = {a["href"]: " ".join(a.get_text().split()) for a in soup.select("a[href^=archive]")}
    assert links[f"archive/{build_id(first)}/data/manifest.json"] == (
        f"archive/{build_id(first)}/data/manifest.json")
    assert links["archive/index.json"] == "archive index (index.json)"
    # hard links, not copies
    assert (old / "assertions.csv").stat().st_ino == (
        first / "archive" / build_id(first) / "data" / "assertions.csv").stat().st_ino


def test_the_same_data_again_is_no_change(two_builds, tmp_path):
    _, second = two_builds
    again = render(tmp_path / "again", blobs(extra_on_day_2=2), BUILT + timedelta(days=2),
                   previous=second)
    assert read_changes(again) == []
    assert "No change since the previous build." in (again / "changes.html").read_text()


def test_the_changes_page_is_linked_and_escapes_values(two_builds, tmp_path):
    first, _ = two_builds
    # a previous build whose file held a hostile segment name and value (read as text)
    previous = tmp_path / "previous"
    shutil.copytree(first, previous)
    with open(previous / "data" / "assertions.csv", "a", newline="", encoding="utf-8") as handle:
        csv.writer(handle, lineterminator="\n").writerow(
            ["2026-10-02", "Locale", HOSTILE, "value", HOSTILE, "", ""])
    site = render(tmp_path / "site", blobs(), BUILT + timedelta(days=1), previous=previous)
    assert read_changes(site) == [{"date": "2026-10-02", "report": "assertions",
                                   "segmentation": "Locale", "segment": HOSTILE,
                                   "measure": "value", "old_value": HOSTILE, "new_value": ""}]
    html = (site / "changes.html").read_text()
    assert "<script>alert" not in html and "<b>x</b>" not in html
    soup = BeautifulSoup(html, "html.parser")
    cells = [td.get_text() for td in soup.select("table.changes td")]
    assert cells == ["Sign-in attempts", f"Locale: {HOSTILE}", "Sign-in attempts (blobs)",
                     HOSTILE, "—", "removed"]
    assert soup.select_one("a[href='data/changes.csv']")
    assert soup.select_one("a[href='archive/index.json']")
    assert "the last 14 builds and of the last build of each of the last 14 days" in " ".join(
        soup.get_text().split())  # the archive's rule, where the page describes the archive
    for page in site.glob("*.html"):
        nav = BeautifulSoup(page.read_text(), "html.parser").select_one("nav")
        assert nav.select_one("a[href='changes.html']"), page.name


def test_a_long_list_of_changes_is_capped_and_points_to_the_file():
    rows = [changes.Change("2026-10-02", "assertions", "Locale", f"s{n:04}", "value", "1", "2")
            for n in range(700)]
    context = changes.page_context(
        changes.Changes(rows, "previous", frozenset({"2026-10-02"}), frozenset({"2026-10-02"})),
        {"assertions": changes.ReportDisplay("Sign-in attempts")}, limit=500)
    assert context["hidden"] == 200 and len(context["restated"][0]["rows"]) == 500
    assert context["restated"][0]["reports"] == ["Sign-in attempts"]


def fake_build(folder: Path, n: int, previous: Path | None,
               days: list[str] | None = None) -> Path:
    """A build folder with only data files (what `archive` reads), its id `n`; a range build of
    `days` (first, last) when given."""
    data = folder / "data"
    data.mkdir(parents=True)
    built_at = (BUILT + timedelta(hours=n)).isoformat().replace("+00:00", "Z")
    (data / "manifest.json").write_text(json.dumps({"build_id": f"build{n:02}",
                                                    "built_at": built_at, "range": days}))
    (data / "assertions.csv").write_text(f"night {n}\n")
    (data / "view").mkdir()
    (data / "view" / "x.json").write_text("{}")
    changes.archive(folder, previous)
    return folder


def test_archives_rotate(tmp_path):
    previous = None
    for n in range(16):
        previous = fake_build(tmp_path / f"b{n}", n, previous)
    index = json.loads((previous / "archive" / "index.json").read_text())
    assert [entry["build_id"] for entry in index] == [f"build{n:02}" for n in range(15, 1, -1)]
    assert len(index) == ARCHIVE_BUILDS == 14
    kept = sorted(p.name for p in (previous / "archive").iterdir() if p.is_dir())
    assert kept == [f"build{n:02}" for n in range(2, 16)]  # the oldest two are gone
    assert (previous / "archive" / "build05" / "data" / "assertions.csv").read_text() == "night 5\n"
    assert not (previous / "archive" / "build05" / "data" / "view").exists()


def test_the_newest_full_build_stays_archived_behind_any_number_of_range_builds(tmp_path):
    """Range builds are compared against the last build of every day; 20 of them in a row
    must not rotate it out (the next full build would then call every other day new)."""
    previous = fake_build(tmp_path / "full", 0, None)
    for n in range(1, 21):
        previous = fake_build(tmp_path / f"r{n}", n, previous, ["2026-10-02", "2026-10-02"])
    index = json.loads((previous / "archive" / "index.json").read_text())
    assert [entry["build_id"] for entry in index][-1] == "build00"
    assert len(index) == ARCHIVE_BUILDS + 1  # the last 14, and the full build behind them


def test_range_builds_are_compared_over_their_days_and_the_next_full_build_per_day(tmp_path):
    """Full build, a build of 10-02 only, a build of 10-03 only (its day restated), a full
    build: each range build reports nothing outside its range, and the last full build
    compares each day with the last build that showed it (nothing changed since)."""
    def of_days(source, days):
        return [b for b in source
                if datetime.fromtimestamp(b["timestamp"] / 1000, UTC).date().isoformat() in days]

    def render_range(target, source, built_at, previous, start, end):
        aggregates = aggregates_of(source)
        render_site(target, aggregates, build_reports(aggregates, CONFIG), CONFIG, built_at,
                    previous=previous, range_asked=(start, end))
        return target

    full = render(tmp_path / "full", blobs(), BUILT)
    second = render_range(tmp_path / "second", of_days(blobs(), {"2026-10-02"}),
                          BUILT + timedelta(hours=1), full, "2026-10-02", "2026-10-02")
    assert read_changes(second) == []
    page = BeautifulSoup((second / "changes.html").read_text(), "html.parser")
    assert page.find(id="removed-days") is None and page.find(id="added-days") is None
    assert "2026-10-02 to 2026-10-02 only" in page.get_text(" ", strip=True)
    restated = blobs() + [blob(["screen.rp_info"], "2026-10-03T12:00:00")]
    third = render_range(tmp_path / "third", of_days(restated, {"2026-10-03"}),
                         BUILT + timedelta(hours=2), second, "2026-10-03", None)
    assert {row["date"] for row in read_changes(third)} == {"2026-10-03"}
    last = render(tmp_path / "last", restated, BUILT + timedelta(hours=3), previous=third)
    assert read_changes(last) == []
    page = BeautifulSoup((last / "changes.html").read_text(), "html.parser")
    assert page.find(id="added-days") is None and page.find(id="no-changes") is not None


def test_the_changes_page_formats_values_as_the_report_pages_do(tmp_path):
    """Rates as percentages, counts with thousands separators, a signed difference, and the
    measure named as on its report page (a rate's axis title, a data quality label)."""
    previous = tmp_path / "previous"
    render(previous, blobs(), BUILT)
    rows = {("new_user_success", "Total", "value"): ("0.532967032967033", "0.5327009485771343"),
            ("assertions", "Total", "value"): ("1234", "1310"),
            ("data_quality", "Total", "skipped_empty_stream"): ("0", "12"),
            ("sites", "Total", "value"): ("2.5", "")}
    for (report, segment, measure), (old, _) in rows.items():
        with open(previous / "data" / f"{report}.csv", "a", newline="", encoding="utf-8") as f:
            csv.writer(f, lineterminator="\n").writerow(
                ["2026-10-09", "Total", segment, measure, old, "", ""])
    site = render(tmp_path / "site", blobs(), BUILT + timedelta(days=1), previous=previous)
    # what the new build has on 2026-10-09, written into its files as a restatement would
    for (report, segment, measure), (_, new) in rows.items():
        if new:
            with open(site / "data" / f"{report}.csv", "a", newline="", encoding="utf-8") as f:
                csv.writer(f, lineterminator="\n").writerow(
                    ["2026-10-09", "Total", segment, measure, new, "", ""])
    context = changes.page_context(changes.compare(previous, site), site_displays(),
                                   site_measure_labels())
    cells = {(row["report_label"], row["measure_label"]): (
        row["old_text"], row["new_text"], row["delta_text"])
        for day in context["restated"] for row in day["rows"]}
    assert cells == {
        ("New user success", "Success rate"): ("53.30%", "53.27%", "-0.03 pts"),
        ("Sign-in attempts", "Sign-in attempts (blobs)"): ("1,234", "1,310", "+76 (+6.2%)"),
        ("Data quality", "Skipped (empty stream)"): ("0", "12", "+12"),
        ("Persona adoption", "Mean sites signed in"): ("2.50", "—", "removed"),
    }


def test_the_changes_page_lists_a_day_in_the_site_order_of_reports_then_segment_and_measure():
    """The rows of a day follow the site's pages (the navigation's order), not the code points
    of the report ids; Total before the segments, the data quality counts in their order."""
    def change(report, segmentation, segment, measure):
        return changes.Change("2026-10-02", report, segmentation, segment, measure, "1", "2")

    rows = sorted([change("assertions", "Total", "Total", "value"),
                   change("assertions", "OS", "Linux", "value"),
                   change("assertions", "Locale", "English", "value"),
                   change("bounce_rate", "Total", "Total", "value"),
                   change("data_quality", "Total", "Total", "stored"),
                   change("data_quality", "Total", "Total", "fetched"),
                   change("sites", "Total", "Total", "value"),
                   change("unknown_report", "Total", "Total", "value")],
                  key=lambda c: (c.report, c.segmentation, c.segment, c.measure))  # as compare
    context = changes.page_context(
        changes.Changes(rows, "previous", frozenset({"2026-10-02"}), frozenset({"2026-10-02"})),
        site_displays(), site_measure_labels())
    day = context["restated"][0]
    assert [(r["report_label"], r["segment_label"], r["measure_label"]) for r in day["rows"]] == [
        ("Persona adoption", "Total", "Mean sites signed in"),
        ("Sign-in attempts", "Total", "Sign-in attempts (blobs)"),
        ("Sign-in attempts", "Locale: English", "Sign-in attempts (blobs)"),
        ("Sign-in attempts", "OS: Linux", "Sign-in attempts (blobs)"),
        ("Bounce rate", "Total", "Bounce rate"),
        ("Data quality", "Total", "Fetched"),
        ("Data quality", "Total", "Stored"),
        ("unknown_report", "Total", "value"),
    ]
    assert day["reports"] == ["Persona adoption", "Sign-in attempts", "Bounce rate",
                              "Data quality", "unknown_report"]


@pytest.mark.parametrize(("old", "new", "texts"), [
    ("2.365", "2.4924", ("2.37", "2.49", "+0.13 (+5.4%)")),  # means: 2 decimals, always
    ("2.5", "2.191", ("2.50", "2.19", "-0.31 (-12.4%)")),
    ("2", "2.5", ("2.00", "2.50", "+0.50 (+25.0%)")),  # one side whole, the other not
    ("2.4924", "", ("2.49", "—", "removed")),
    ("2.4921", "2.4924", ("2.4921", "2.4924", "+0.0003 (+0.0%)")),  # 2 decimals would hide it
    ("1234", "1310", ("1,234", "1,310", "+76 (+6.2%)")),  # counts stay whole
])
def test_a_mean_is_shown_with_two_decimals_on_both_sides_of_a_change(old, new, texts):
    rows = [changes.Change("2026-10-02", "sites", "Total", "Total", "value", old, new)]
    context = changes.page_context(
        changes.Changes(rows, "previous", frozenset({"2026-10-02"}), frozenset({"2026-10-02"})),
        site_displays())
    row = context["restated"][0]["rows"][0]
    assert (row["old_text"], row["new_text"], row["delta_text"]) == texts


def site_displays():
    from kpi.site import PAGES

    return {page.id: changes.ReportDisplay(page.tab, page.percent, page.y_title)
            for page in PAGES}


def site_measure_labels():
    from kpi.reports import QUALITY_LABELS

    return QUALITY_LABELS


def test_a_catch_up_keeps_the_last_build_of_each_of_the_last_14_nights(tmp_path):
    """One build a night for 14 nights, then a catch-up of 30 builds on the 15th: the archive
    keeps the catch-up's last 14 builds and the last build of each of the 13 nights before
    (the 14 days up to the 15th); the first night's build, 14 days back, is pruned."""
    previous, ids = None, []
    for night in range(1, 15):  # 2026-10-01 to 2026-10-14, one build each, at 23:00
        ids.append(f"night{night:02}")
        previous = dated_build(tmp_path / ids[-1], ids[-1],
                               datetime(2026, 10, night, 23, tzinfo=UTC), previous)
    catch_up = []
    for run in range(30):
        catch_up.append(f"run{run:02}")
        previous = dated_build(tmp_path / catch_up[-1], catch_up[-1],
                               datetime(2026, 10, 15, 1, run, tzinfo=UTC), previous)
    index = json.loads((previous / "archive" / "index.json").read_text())
    assert [entry["build_id"] for entry in index] == catch_up[:-15:-1] + ids[:0:-1]
    kept = {p.name for p in (previous / "archive").iterdir() if p.is_dir()}
    assert kept == set(catch_up[16:]) | set(ids[1:])
    assert (previous / "archive" / "night02" / "data" / "assertions.csv").read_text() == (
        "night02\n")


def test_of_two_builds_on_a_day_the_last_one_stays_as_that_night(tmp_path):
    previous = None
    for n, built_at in enumerate([datetime(2026, 10, 1, 9, tzinfo=UTC),
                                  datetime(2026, 10, 1, 22, tzinfo=UTC),
                                  *(datetime(2026, 10, 2, 0, m, tzinfo=UTC) for m in range(20))]):
        previous = dated_build(tmp_path / f"b{n:02}", f"b{n:02}", built_at, previous)
    ids = [entry["build_id"] for entry in
           json.loads((previous / "archive" / "index.json").read_text())]
    assert ids == [f"b{n:02}" for n in range(21, 7, -1)] + ["b01"]  # not b00: not the last


def dated_build(folder: Path, build: str, built_at: datetime, previous: Path | None) -> Path:
    """A build folder with only data files (what `archive` reads), built at `built_at`."""
    data = folder / "data"
    data.mkdir(parents=True)
    (data / "manifest.json").write_text(json.dumps({
        "build_id": build, "built_at": built_at.isoformat().replace("+00:00", "Z")}))
    (data / "assertions.csv").write_text(f"{build}\n")
    changes.archive(folder, previous)
    return folder
