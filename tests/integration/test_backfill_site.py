"""Backfill → aggregates → published site, against the dev CouchDB and the fake source."""

from __future__ import annotations

import csv
import dataclasses
from collections import Counter
from datetime import date

import pytest

from fake_source.generator import blobs_for_day
from kpi import publish as publish_module
from kpi.backfill import backfill
from kpi.couch import DATABASES, CouchStore
from kpi.publish import build_site
from kpi.sitedir import builds_dir
from tests.conftest import FAKE_BAD_RATE, FAKE_PER_DAY, FAKE_SEED
from tests.integration.exactness import doc_count

pytestmark = pytest.mark.integration
START, END = date(2026, 10, 1), date(2026, 10, 3)
OS_NAMES = {"Windows NT 6.2": "Windows 8", "Windows NT 6.1": "Windows 7",
            "Windows NT 6.0": "Windows Vista", "Windows NT 5.1": "Windows XP",
            "iPhone": "iOS", "iPad": "iOS", "iPod": "iOS", "Macintosh": "Macintosh",
            "Linux": "Linux", "Android": "Android", "FirefoxOS": "FirefoxOS"}
NEW_USER_EVENTS = ["screen.set_password", "user.user_staged", "user.user_confirmed",
                   "assertion_generated"]


def independent_counts(day: date) -> tuple[Counter, Counter]:
    """Sign-in attempts and new-user step counts by (OS segment), straight from SPEC rules."""
    attempts, steps = Counter(), Counter()
    for _, blob in blobs_for_day(FAKE_SEED, day, FAKE_PER_DAY, FAKE_BAD_RATE):
        stream = blob.get("event_stream")
        if not stream:
            continue
        if not isinstance(stream, list) or not all(
            isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) for p in stream
        ):
            continue
        agent = blob.get("user_agent") or {}
        os_segment = OS_NAMES.get(agent.get("os"), "Other")
        names = {p[0] for p in stream}
        for segment in ("Total", os_segment):
            attempts[segment] += 1
        if "staging_continuation" in names:
            reached = [2, 3] if "assertion_generated" in names else []
        elif "screen.set_password" in names and "authenticate.enter_password" not in names:
            reached = [i for i, e in enumerate(NEW_USER_EVENTS) if e in names]
        else:
            reached = []
        for index in reached:
            for segment in ("Total", os_segment):
                steps[(segment, index)] += 1
    return attempts, steps


def read_csv(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_backfill_twice_is_identical_and_matches_independent_counts(settings):
    settings = dataclasses.replace(settings, min_segment_count=0)  # every OS segment, exact
    backfill(START, END, settings, progress=False)
    data = settings.site_dir / "data"
    first = {p.name: p.read_bytes() for p in data.glob("*.csv")}
    store = CouchStore(settings)
    counts_first = {kind: doc_count(store, kind) for kind in DATABASES}

    backfill(START, END, settings, progress=False)
    assert {p.name: p.read_bytes() for p in data.glob("*.csv")} == first
    assert {kind: doc_count(store, kind) for kind in DATABASES} == counts_first
    assert counts_first["manifests"] == counts_first["aggregates"] == 3

    assertions = read_csv(data / "assertions.csv")
    new_user = read_csv(data / "new_user.csv")
    steps_names = sorted({row["measure"] for row in new_user})
    for day in (START, date(2026, 10, 2), END):
        attempts, steps = independent_counts(day)
        got = {row["segment"]: int(row["value"]) for row in assertions
               if row["date"] == day.isoformat() and row["segmentation"] in ("Total", "OS")}
        assert got == dict(attempts)
        got_steps = {(row["segment"], steps_names.index(row["measure"])): int(row["value"])
                     for row in new_user
                     if row["date"] == day.isoformat() and row["segmentation"] in ("Total", "OS")}
        assert {k: v for k, v in got_steps.items() if v} == dict(steps)


def test_site_has_every_page_and_data_file(settings):
    backfill(START, START, settings, progress=False)
    site = settings.site_dir
    for name in ("index.html", "new_user.html", "assertions.html", "data_quality.html",
                 "vendor/vega-bundle.js", "static/site.css", "data/manifest.json"):
        assert (site / name).is_file(), name
    for report in ("new_user", "assertions", "data_quality"):
        assert (site / "data" / f"{report}.csv").is_file()
        assert (site / "data" / f"{report}.json").is_file()


def test_no_page_or_stylesheet_references_an_outside_url(settings):
    backfill(START, START, settings, progress=False)
    for path in [*settings.site_dir.glob("*.html"), *settings.site_dir.glob("static/*")]:
        text = path.read_text(encoding="utf-8")
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, path


def test_a_failed_build_leaves_the_published_site_untouched(settings, monkeypatch):
    backfill(START, START, settings, progress=False)
    before = {p.relative_to(settings.site_dir): p.read_bytes()
              for p in settings.site_dir.rglob("*") if p.is_file()}
    builds = set(builds_dir(settings.site_dir).iterdir())

    def broken_render(target, *args, **kwargs):
        (target / "data").mkdir(parents=True)
        (target / "data" / "assertions.csv").write_text("half-written")
        raise RuntimeError("disk full")

    monkeypatch.setattr(publish_module, "render_site", broken_render)
    with pytest.raises(RuntimeError, match="disk full"):
        build_site(settings)
    after = {p.relative_to(settings.site_dir): p.read_bytes()
             for p in settings.site_dir.rglob("*") if p.is_file()}
    assert after == before
    assert set(builds_dir(settings.site_dir).iterdir()) == builds  # the failed one left nothing
