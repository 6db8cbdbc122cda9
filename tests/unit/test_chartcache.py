"""The chart template cache (`kpi.chartcache`): a site built from cached templates equals, file
for file and byte for byte, one whose templates Altair made; a cache of other code, other
arguments, damaged or missing is made again, and never fails a build."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path

import orjson
import pytest

from fake_source.generator import blobs_for_day
from kpi import buildcache, chartcache
from kpi.chartcache import ChartTemplates, cache_key, page_specs
from kpi.reports import build_reports
from kpi.site import render_site
from tests.unit.kpi_helpers import CONFIG, aggregates_of

ROOT = Path(__file__).resolve().parents[2]
DAYS = [date(2026, 10, 1) + timedelta(days=n) for n in range(10)]
BUILT_AT = datetime(2026, 10, 11, 2, 3, 4, tzinfo=UTC)
LINES = '["page","series","Sign-in attempts (blobs)",false,false,true,false]'  # assertions
TAMPERED = "Tampered axis title"

# a build in a new process: the site of `build` at argv[1] with the chart cache argv[2];
# prints whether Altair was imported
IN_A_NEW_PROCESS = """
import sys
from pathlib import Path
from tests.unit.test_chartcache import build
build(Path(sys.argv[1]), Path(sys.argv[2]))
print("altair" in sys.modules)
"""


@cache
def _inputs():
    blobs = [b for day in DAYS for _, b in blobs_for_day(5, day, 60, bad_rate=0.0)]
    aggregates = aggregates_of(blobs)
    return aggregates, build_reports(aggregates, CONFIG)


def build(target: Path, chart_cache: Path | None) -> None:
    """Ten days of fake blobs rendered into `target`, the same every time."""
    aggregates, reports = _inputs()
    render_site(target, aggregates, reports, CONFIG, BUILT_AT, chart_cache=chart_cache)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def _assert_same_site(site: Path, reference: Path) -> None:
    files, expected = _files(site), _files(reference)
    assert sorted(files) == sorted(expected)
    assert len(files) > 100  # pages, data, view files, assets
    differ = [name for name in expected if files[name] != expected[name]]
    assert not differ, f"{len(differ)} files differ, first {differ[0]}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The site with the templates made by Altair in this process (no cache file)."""
    target = tmp_path_factory.mktemp("reference") / "site"
    build(target, None)
    return target


def _new_process_build(target: Path, chart_cache: Path) -> bool:
    """Build in a new Python process; whether it imported Altair."""
    done = subprocess.run([sys.executable, "-c", IN_A_NEW_PROCESS, str(target),
                           str(chart_cache)], cwd=ROOT, capture_output=True, text=True,
                          check=True)
    return done.stdout.strip().splitlines()[-1] == "True"


def test_new_processes_build_the_same_site_from_a_cold_and_a_warm_cache(tmp_path, reference):
    chart_cache = tmp_path / ".site.charts.json"
    assert _new_process_build(tmp_path / "cold", chart_cache)  # made them with Altair
    stored = chart_cache.read_bytes()
    assert json.loads(stored)["key"] == cache_key()
    assert not _new_process_build(tmp_path / "warm", chart_cache)  # read them: no Altair
    assert chart_cache.read_bytes() == stored  # nothing made, nothing written
    _assert_same_site(tmp_path / "cold", reference)
    _assert_same_site(tmp_path / "warm", reference)


def _tamper(chart_cache: Path) -> None:
    """Change one stored template, keeping the file's key: what a build shows is then what it
    read from the file."""
    content = json.loads(chart_cache.read_text(encoding="utf-8"))
    content["templates"][LINES]["lines"]["layer"][0]["encoding"]["y"]["title"] = TAMPERED
    chart_cache.write_text(json.dumps(content), encoding="utf-8")


def test_a_build_uses_the_templates_it_reads(tmp_path):
    chart_cache = tmp_path / "charts.json"
    build(tmp_path / "first", chart_cache)
    _tamper(chart_cache)
    build(tmp_path / "second", chart_cache)
    assert TAMPERED in (tmp_path / "second" / "assertions.html").read_text(encoding="utf-8")
    assert TAMPERED not in (tmp_path / "second" / "sites.html").read_text(encoding="utf-8")


def test_templates_of_other_code_are_made_again(tmp_path, reference, monkeypatch):
    chart_cache = tmp_path / "charts.json"
    build(tmp_path / "first", chart_cache)
    _tamper(chart_cache)
    monkeypatch.setattr(chartcache, "code_digest", lambda: "another version")
    build(tmp_path / "site", chart_cache)
    _assert_same_site(tmp_path / "site", reference)
    stored = json.loads(chart_cache.read_text(encoding="utf-8"))
    assert stored["key"] == cache_key() and "another version" in stored["key"]
    assert TAMPERED not in chart_cache.read_text(encoding="utf-8")


def test_the_key_names_this_code_and_altair():
    assert buildcache.code_digest() in cache_key()
    assert f"altair-{importlib.metadata.version('altair')}" in cache_key()


def test_templates_of_other_arguments_are_made_and_kept_beside_the_others(tmp_path):
    chart_cache = tmp_path / "charts.json"
    build(tmp_path / "first", chart_cache)
    _tamper(chart_cache)
    templates = ChartTemplates(chart_cache)
    other = templates.page("series", "Another title", False, False, True, False)
    assert other == page_specs("series", "Another title", False, False, True, False)
    assert other["lines"]["layer"][0]["encoding"]["y"]["title"] == "Another title"
    stored = templates.page("series", "Sign-in attempts (blobs)", False, False, True, False)
    assert stored["lines"]["layer"][0]["encoding"]["y"]["title"] == TAMPERED  # as read
    templates.save()
    names = json.loads(chart_cache.read_text(encoding="utf-8"))["templates"]
    assert LINES in names
    assert '["page","series","Another title",false,false,true,false]' in names


def test_every_call_returns_its_own_copy(tmp_path):
    templates = ChartTemplates(tmp_path / "charts.json")
    first = templates.overview()
    first["percent"]["height"] = 1
    assert templates.overview()["percent"]["height"] == 44


@pytest.mark.parametrize("content", [
    b"", b"{not json", b"\xff\xfe\x00", b"[]", b'{"key": 1}', b"null",
    "KEY_NO_TEMPLATES", "KEY_BAD_TEMPLATE",
])
def test_a_damaged_cache_is_made_again(tmp_path, reference, content):
    chart_cache = tmp_path / "charts.json"
    if content == "KEY_NO_TEMPLATES":
        content = orjson.dumps({"key": cache_key(), "templates": []})
    elif content == "KEY_BAD_TEMPLATE":
        content = orjson.dumps({"key": cache_key(), "templates": {LINES: "oops"}})
    chart_cache.write_bytes(content)
    build(tmp_path / "site", chart_cache)
    _assert_same_site(tmp_path / "site", reference)
    assert json.loads(chart_cache.read_text(encoding="utf-8"))["key"] == cache_key()


def test_a_cache_that_cannot_be_read_or_written_costs_no_build(tmp_path, reference):
    folder_in_the_way = tmp_path / "charts.json"
    folder_in_the_way.mkdir()
    build(tmp_path / "site", folder_in_the_way)
    _assert_same_site(tmp_path / "site", reference)
    a_file = tmp_path / "a file"  # where the cache's folder would be made
    a_file.write_text("not a folder")
    build(tmp_path / "elsewhere", a_file / "kpi" / "charts.json")
    _assert_same_site(tmp_path / "elsewhere", reference)
    assert a_file.read_text() == "not a folder"


def test_the_templates_are_kept_in_the_users_cache_folder(tmp_path, monkeypatch):
    """Any site folder, a new one included, finds them; so does the Vega bundle's cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert chartcache.cache_path() == tmp_path / "cache" / "kpi" / "chart-templates.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert chartcache.cache_path() == tmp_path / "home" / ".cache" / "kpi" / "chart-templates.json"
    build(tmp_path / "site", chartcache.cache_path())  # its folder made at the first save
    assert json.loads(chartcache.cache_path().read_bytes())["key"] == cache_key()
