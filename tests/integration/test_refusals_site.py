"""Refused restatements on the site: the manifests that carry `refused` are listed on the Data
quality page and in data/refusals.csv at the next build, even an incremental one where no
aggregates changed, and disappear once the day is restated."""

from __future__ import annotations

import csv
import dataclasses
import logging
from datetime import UTC, date, datetime

import pytest
from bs4 import BeautifulSoup

from kpi.backfill import backfill
from kpi.couch import AGGREGATES, MANIFESTS, CouchStore, content_of
from kpi.publish import build_site
from kpi.refusals import load_refusals

pytestmark = pytest.mark.integration
START, END = date(2026, 10, 1), date(2026, 10, 3)
DAY = date(2026, 10, 2)
BUILT = datetime(2026, 12, 4, 6, 0, tzinfo=UTC)
REFUSED = {"at": "2026-12-03T21:40:00+00:00", "run": "scheduled__2026-12-03<script>",
           "stored": 452, "fetched": 0, "would_remove": 452, "max_removed": 0.1}


def refusal_rows(site) -> list[list[str]] | None:
    """The Data quality page's refused days (cell texts), or None when it says there are none."""
    soup = BeautifulSoup((site / "data_quality.html").read_text(encoding="utf-8"),
                         "html.parser")
    section = soup.find("h2", string="Refused restatements").find_parent("section")
    if section.find("table") is None:
        assert section.find(id="refusal-list").get_text(strip=True).startswith("None")
        return None
    return [[td.get_text() for td in tr.find_all("td")] for tr in section.select("tbody tr")]


def refusals_csv(site) -> list[dict]:
    with open(site / "data" / "refusals.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def recomputed(caplog) -> list[str]:
    return [r.getMessage().rsplit("(", 1)[1] for r in caplog.records
            if r.getMessage().startswith("published")]


def build(settings, caplog, **kwargs):
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="kpi.publish"):
        return build_site(settings, now=BUILT, **kwargs)


def test_a_refusal_written_into_a_manifest_is_published_then_cleared(settings, tmp_path,
                                                                      caplog):
    backfill(START, END, settings, progress=False)
    site = settings.site_dir
    assert refusal_rows(site) is None and refusals_csv(site) == []
    store = CouchStore(settings)
    aggregates = store.revisions(AGGREGATES, "", None)
    manifest = content_of(store.get(MANIFESTS, DAY.isoformat()))
    store.upsert(MANIFESTS, [{**manifest, "refused": REFUSED}])

    site = build(settings, caplog)
    assert recomputed(caplog) == ["3 days, 0 recomputed)"]  # incremental: no aggregates changed
    assert refusal_rows(site) == [["2026-10-02", "452", "0", "452", "2026-12-03T21:40:00+00:00",
                                   "scheduled__2026-12-03<script>"]]
    assert refusals_csv(site) == [{"day": "2026-10-02", "stored": "452", "fetched": "0",
                                   "would_remove": "452", "max_removed": "0.1",
                                   "at": "2026-12-03T21:40:00+00:00"}]
    assert "scheduled__2026-12-03&lt;script&gt;" in (site / "data_quality.html").read_text()

    partial = dataclasses.replace(settings, site_dir=tmp_path / "partial" / "site")
    assert refusal_rows(build(partial, caplog, start=END, end=END)) is None  # not a day shown
    assert refusals_csv(build(partial, caplog, start=DAY, end=DAY))[0]["day"] == "2026-10-02"

    store.upsert(MANIFESTS, [manifest])  # what a later successful restatement leaves
    site = build(settings, caplog)
    assert recomputed(caplog) == ["3 days, 0 recomputed)"]
    assert refusal_rows(site) is None and refusals_csv(site) == []
    assert (site / "data" / "refusals.json").read_text() == "[]"
    assert store.revisions(AGGREGATES, "", None) == aggregates


def test_a_refused_restatement_shows_until_the_source_recovers(settings, fake_app):
    backfill(START, END, settings, progress=False)
    source = fake_app.state.store
    original = source.range
    source.range = lambda start, end: []  # the source lost every row, for now
    [result] = backfill(DAY, DAY, settings, progress=False)
    assert "refused" in result
    refused = CouchStore(settings).get(MANIFESTS, DAY.isoformat())["refused"]
    assert refused["fetched"] == 0 and refused["would_remove"] == refused["stored"] > 0
    site = settings.site_dir
    assert refusal_rows(site) == [[DAY.isoformat(), f"{refused['stored']:,}", "0",
                                   f"{refused['would_remove']:,}", refused["at"],
                                   refused["run"]]]
    [row] = refusals_csv(site)
    assert row == {"day": DAY.isoformat(), "stored": str(refused["stored"]), "fetched": "0",
                   "would_remove": str(refused["would_remove"]),
                   "max_removed": repr(float(refused["max_removed"])), "at": refused["at"]}

    source.range = original  # the source recovered: the next restatement applies
    [result] = backfill(DAY, DAY, settings, progress=False)
    assert "refused" not in result
    assert "refused" not in CouchStore(settings).get(MANIFESTS, DAY.isoformat())
    assert refusal_rows(site) is None and refusals_csv(site) == []


def test_find_pages_through_every_refused_manifest_on_this_server(settings):
    """Pages of 3 (Apache CouchDB pages by bookmark, pouchdb-server by skip): each of 7 refused
    manifests once, none of the others; a day range narrows them."""
    store = CouchStore(dataclasses.replace(settings, bulk_size=3))
    store.ensure_databases()
    days = [f"2026-09-{n:02d}" for n in range(10, 20)]
    store.upsert(MANIFESTS, [{"_id": day, "day": day, "stored": n,
                              **({"refused": {**REFUSED, "stored": n}} if n % 10 < 7 else {})}
                             for n, day in enumerate(days)])
    found = store.find(MANIFESTS, {"refused": {"$exists": True}}, ["refused"])
    assert sorted(doc["_id"] for doc in found) == days[:7]
    assert all(set(doc) == {"_id", "refused"} for doc in found)
    assert [row["day"] for row in load_refusals(store)] == days[6::-1]  # newest first
    assert [row["day"] for row in load_refusals(store, date(2026, 9, 12), date(2026, 9, 14))
            ] == ["2026-09-14", "2026-09-13", "2026-09-12"]
    assert [row["day"] for row in load_refusals(store, end=date(2026, 9, 10))] == [days[0]]
