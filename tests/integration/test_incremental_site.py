"""Incremental publishing: a build that recomputes only the changed days equals a build from
scratch, byte for byte; the cache is ignored when it cannot be trusted."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from datetime import UTC, date, datetime

import pytest

from kpi import buildcache, chartcache
from kpi.backfill import backfill
from kpi.couch import AGGREGATES, CouchStore, content_of
from kpi.days import days_between
from kpi.ingest import extract_and_store
from kpi.publish import build_site
from kpi.sitedir import builds_dir
from tests.integration.test_restatement import CHANGED_DAY, changed_source
from tests.integration.test_windows import files

pytestmark = pytest.mark.integration
BUILT = datetime(2026, 10, 5, 6, 0, tzinfo=UTC)
START, END = date(2026, 9, 30), date(2026, 10, 3)


def scratch(settings, tmp_path):
    """The same databases, another site folder (so no cache): a build from scratch."""
    return build_site(dataclasses.replace(settings, site_dir=tmp_path / "scratch" / "site"),
                      now=BUILT)


def twin(settings, tmp_path):
    """Another site folder showing the same previous build (a copy of the builds), without
    the cache: its next build is from scratch but has the same previous build, so the files
    made from the previous build (changes.csv, the Changes page, archive/) can be compared
    too. `files` leaves those out when sites have different histories (`scratch`)."""
    folder = tmp_path / "twin"
    folder.mkdir()
    shutil.copytree(builds_dir(settings.site_dir), folder / builds_dir(settings.site_dir).name,
                    symlinks=True)
    shutil.copy(settings.site_dir, folder / settings.site_dir.name, follow_symlinks=False)
    return dataclasses.replace(settings, site_dir=folder / settings.site_dir.name)


def recomputed(caplog) -> list[str]:
    return [r.getMessage().rsplit("(", 1)[1] for r in caplog.records
            if r.getMessage().startswith("published")]


def test_a_restated_day_is_all_a_build_recomputes_and_the_site_equals_scratch(
    settings, fake_app, tmp_path, caplog, monkeypatch
):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # no templates kept yet
    backfill(START, END, settings, progress=False)  # builds once: the cache holds every day
    assert buildcache.cache_path(settings.site_dir).exists()
    templates = chartcache.cache_path()  # and the chart templates, in the user cache folder
    kept = templates.read_bytes()
    source = fake_app.state.store
    source.range = changed_source(source.range)
    extract_and_store(CHANGED_DAY, settings)  # one day restated
    store = CouchStore(settings)
    moved = content_of(store.get(AGGREGATES, "2026-10-03"))  # one day gone, one day new
    store.delete(AGGREGATES, ["2026-10-03"])
    store.upsert(AGGREGATES, [{**moved, "_id": "2026-10-07", "day": "2026-10-07"}])

    same_previous = twin(settings, tmp_path)
    caplog.clear()  # only this build's record (Airflow's logging setup may let others in)
    with caplog.at_level(logging.INFO, logger="kpi.publish"):
        site = build_site(settings, now=BUILT)
    assert recomputed(caplog) == ["4 days, 2 recomputed)"]
    assert files(site) == files(scratch(settings, tmp_path))
    assert not buildcache.cache_path(same_previous.site_dir).exists()  # so: from scratch
    from_scratch = build_site(same_previous, now=BUILT)
    assert files(site, history=True) == files(from_scratch, history=True)
    changes = (site / "data" / "changes.csv").read_text()
    assert f"\n{CHANGED_DAY}," in changes and "\n2026-10-03," in changes  # restated, gone
    assert "\n2026-10-07," in changes  # new
    assert '"last_day": "2026-10-07"' in (site / "data" / "manifest.json").read_text()

    caplog.clear()  # nothing changed: nothing recomputed, same files
    with caplog.at_level(logging.INFO, logger="kpi.publish"):
        again = build_site(settings, now=BUILT)
    assert recomputed(caplog) == ["4 days, 0 recomputed)"]
    assert files(again) == files(scratch(settings, tmp_path))
    assert templates.read_bytes() == kept  # read by every build, made by the first only


@pytest.mark.parametrize("damage", ["other configuration", "corrupt", "other databases",
                                    "other threshold"])
def test_a_cache_that_cannot_be_trusted_is_not_used(settings, tmp_path, caplog, damage):
    backfill(START, END, settings, progress=False)
    path = buildcache.cache_path(settings.site_dir)
    if damage == "other databases":  # same days, same site folder, another prefix
        settings = dataclasses.replace(settings, db_prefix=f"{settings.db_prefix}_two")
        CouchStore(settings).ensure_databases()
        for day in days_between(START, END):
            extract_and_store(day, settings)
    elif damage == "other threshold":  # KPI_MIN_SEGMENT_COUNT changed: every day refolded
        settings = dataclasses.replace(settings, min_segment_count=0)
    elif damage == "corrupt":
        path.write_bytes(b"\x80\x05not a pickle")
    else:
        key = buildcache.cache_key(
            _config(settings), f"{settings.couchdb_url_redacted} {settings.db_prefix}_aggregates",
            settings.min_segment_count)
        built = buildcache.read(path, key)
        assert built is not None
        buildcache.write(path, "another configuration", built)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="kpi"):
        site = build_site(settings, now=BUILT)
    assert recomputed(caplog) == ["4 days, 4 recomputed)"]
    assert files(site) == files(scratch(settings, tmp_path))
    assert ("unreadable build cache" in caplog.text) == (damage == "corrupt")


def _config(settings):
    from kpi.config import load_config

    return load_config(settings.config_path)
