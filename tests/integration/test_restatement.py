"""Re-extracting a day after its source changed restates it: exactly the new rows count."""

from __future__ import annotations

import copy
import csv
from datetime import date

import pytest

from kpi.backfill import backfill
from kpi.couch import MANIFESTS, QUARANTINE, RAW, CouchStore
from kpi.days import utc_day_of
from kpi.reports import REPORTS
from kpi.source import blob_of, check_row
from tests.integration import oracle
from tests.integration.test_oracle import close, number

pytestmark = pytest.mark.integration
DAYS = [date(2026, 10, 1), date(2026, 10, 2), date(2026, 10, 3)]
CHANGED_DAY = DAYS[1]
NEW_USER = [["screen.rp_info", 1], ["screen.set_password", 2], ["user.user_staged", 3],
            ["user.user_confirmed", 4], ["assertion_generated", 5]]


def changed_source(original_range):
    """A source whose CHANGED_DAY lost rows (all invalid ones and 10 valid), had 5 rows changed
    and gained 3 new ones, between two extracts."""
    day = [r for r in original_range(None, None)
           if isinstance(r.get("key"), int) and utc_day_of(r["key"]) == CHANGED_DAY]
    valid = [r for r in day if check_row(r).status == "ok"]
    removed = {r["id"] for r in day if check_row(r).status == "rejected"}
    removed |= {r["id"] for r in valid[:10]}
    changed = {r["id"] for r in valid[10:15]}
    added = []
    for n in range(3):
        row = copy.deepcopy(valid[20])
        row["id"] = row["value"]["_id"] = f"added{n:027d}"
        added.append(row)

    def changed_range(start, end):
        lo = -1 if start is None else start
        hi = float("inf") if end is None else end
        result = []
        for row in original_range(start, end):
            if row["id"] in removed:
                continue
            if row["id"] in changed:
                row = copy.deepcopy(row)
                row["value"]["event_stream"] = NEW_USER
            result.append(row)
        result += [row for row in added if lo <= row["key"] <= hi]
        return sorted(result, key=lambda r: (r["key"], r["id"]))

    return changed_range


def published(settings, name):
    with open(settings.site_dir / "data" / f"{name}.csv", newline="") as handle:
        return {(r["date"], r["segmentation"], r["segment"], r["measure"]):
                (number(r["value"]), number(r["numerator"]), number(r["denominator"]))
                for r in csv.DictReader(handle)}


def test_a_changed_day_is_restated_to_exactly_the_new_rows(settings, fake_app):
    backfill(DAYS[0], DAYS[-1], settings, progress=False)
    store = CouchStore(settings)
    before = {day: store.get(MANIFESTS, day.isoformat()) for day in DAYS}
    raw_before = {day: list(store.day_docs(RAW, day)) for day in (DAYS[0], DAYS[2])}
    assert before[CHANGED_DAY]["rejected_invalid"] > 0

    source = fake_app.state.store
    source.range = changed_source(source.range)
    results = backfill(DAYS[0], DAYS[-1], settings, progress=False)

    new_rows = [r for r in source.range(None, None) if utc_day_of(r["key"]) in DAYS]
    day_rows = [r for r in new_rows if utc_day_of(r["key"]) == CHANGED_DAY]
    kept = [r for r in day_rows if check_row(r).status != "rejected"]
    # the raw snapshot of the day is exactly the source's rows now, with their new content
    raw = {doc["kpiggybank_id"]: doc["blob"] for doc in store.day_docs(RAW, CHANGED_DAY)}
    assert raw == {r["id"]: blob_of(r) for r in kept}
    assert list(store.day_docs(QUARANTINE, CHANGED_DAY)) == []
    manifest = store.get(MANIFESTS, CHANGED_DAY.isoformat())
    assert (manifest["fetched"], manifest["stored"], manifest["rejected_invalid"]) == (
        len(day_rows), len(kept), 0)
    # other days are untouched: same documents, same revisions
    for day, docs in raw_before.items():
        assert list(store.day_docs(RAW, day)) == docs
    assert results[1]["aggregated"] == len(kept) - manifest["skipped_empty_stream"]

    assert_site_equals_oracle(settings, new_rows)


def assert_site_equals_oracle(settings, rows):
    """Every published report equals the oracle's over the valid rows of `rows`."""
    expected = oracle.compute([r["value"] for r in rows if check_row(r).status == "ok"],
                              settings.min_segment_count)
    for name in REPORTS:
        if name == "data_quality":
            continue
        got = published(settings, name)
        assert set(got) == set(expected[name]), name
        for key, want in expected[name].items():
            assert all(close(g, w) for g, w in zip(got[key], want, strict=True)), (name, key)


def test_a_restatement_killed_half_way_is_never_taken_for_a_finished_day(
    settings, fake_app, monkeypatch
):
    from kpi.ingest import PipelineError, confirm_aggregated, day_is_done, extract_and_store

    extract_and_store(CHANGED_DAY, settings)
    assert day_is_done(CHANGED_DAY, settings)
    source = fake_app.state.store
    source.range = changed_source(source.range)

    def killed(*args, **kwargs):
        raise RuntimeError("worker killed")

    with monkeypatch.context() as patch:  # dies after the new rows, before the deletions
        patch.setattr(CouchStore, "delete_revisions", killed)
        with pytest.raises(RuntimeError, match="worker killed"):
            extract_and_store(CHANGED_DAY, settings)
    assert not day_is_done(CHANGED_DAY, settings)
    with pytest.raises(PipelineError, match="interrupted"):
        confirm_aggregated(CHANGED_DAY, settings)
    redone = backfill(CHANGED_DAY, CHANGED_DAY, settings, progress=False, skip_done=True)
    assert [r["day"] for r in redone] == [CHANGED_DAY.isoformat()]
    assert day_is_done(CHANGED_DAY, settings)
    manifest = CouchStore(settings).get(MANIFESTS, CHANGED_DAY.isoformat())
    assert manifest["complete"] is True and manifest["rejected_invalid"] == 0
    # an unchanged re-run writes nothing at all, the manifest included
    assert extract_and_store(CHANGED_DAY, settings)["written"] == 0
