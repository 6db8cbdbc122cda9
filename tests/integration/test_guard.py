"""The raw snapshot is the record: a source that answers nothing, or loses rows, never erases
stored history; removed rows are kept and can be put back; every per-day read finds every id."""

from __future__ import annotations

import base64
import copy
import dataclasses
from datetime import date, timedelta

import httpx
import orjson
import pytest
from click.testing import CliRunner

from kpi.backfill import backfill
from kpi.cli import REFUSED_STATUS, main
from kpi.couch import (
    AGGREGATES,
    MANIFESTS,
    PARTS,
    QUARANTINE,
    RAW,
    REMOVED,
    CouchStore,
    content_of,
)
from kpi.days import utc_day_of
from kpi.ingest import (
    close_days,
    extract_and_store,
    extract_window,
    plan_windows,
    reaggregate_day,
    restore_removed_day,
)
from kpi.removed import GONE
from kpi.rows import TOO_LARGE
from kpi.snapshot import record_id
from kpi.source import check_row
from tests.integration.exactness import doc_count
from tests.integration.test_cli import environment
from tests.integration.test_restatement import assert_site_equals_oracle

pytestmark = pytest.mark.integration
DAYS = [date(2026, 10, 1), date(2026, 10, 2), date(2026, 10, 3)]
DAY = DAYS[1]
ODD_IDS = ["\U0001f600emoji", "\ufff0high", "\uffffmax", "\u4e2d\u6587", "~tilde", "0zero"]


def snapshot_of(settings, kinds=(RAW, QUARANTINE, AGGREGATES)) -> dict:
    """Every document (with its revision) of `kinds`, by database."""
    store = CouchStore(settings)
    return {kind: list(store.iter_range(kind, "", None)) for kind in kinds}


def day_rows(source, day):
    return [row for row in source.range(None, None)
            if isinstance(row.get("key"), int | float) and utc_day_of(row["key"]) == day]


def without(source, drop):
    """A source range that no longer returns the rows whose id is in `drop`."""
    original = source.range

    def shrunk(start, end):
        return [row for row in original(start, end) if row.get("id") not in drop]

    return shrunk


def with_extra_row(source, doc_id):
    """The source also returns a copy of a row of DAY under `doc_id`."""
    original = source.range
    extra = copy.deepcopy(day_rows(source, DAY)[0])
    extra["id"] = extra["value"]["_id"] = doc_id
    source.range = lambda start, end: original(start, end) + (
        [extra] if start <= extra["key"] <= end else [])
    return original


def test_an_empty_source_never_erases_stored_days(settings, fake_app):
    runner = CliRunner()
    env = environment(settings)
    args = ["backfill", "--start", DAYS[0].isoformat(), "--end", DAYS[-1].isoformat(),
            "--no-progress"]
    assert runner.invoke(main, args, env=env).exit_code == 0
    source = fake_app.state.store
    rows = [row for day in DAYS for row in day_rows(source, day)]
    before = snapshot_of(settings)
    manifests = {m["_id"]: m for m in CouchStore(settings).iter_range(MANIFESTS, "", None)}

    source.range = lambda start, end: []  # an empty replica, a view being rebuilt
    result = runner.invoke(main, args, env=env)
    assert result.exit_code == REFUSED_STATUS, result.output
    for day in DAYS:
        stored = manifests[day.isoformat()]["stored"] + manifests[day.isoformat()][
            "rejected_invalid"]
        assert (f"{day}: restatement refused: {stored} rows stored (raw and quarantined), 0 "
                f"fetched, would remove {stored}: none of them would be kept") in result.output
    assert "--allow-removals" in result.output
    assert snapshot_of(settings) == before  # every document, revisions included
    store = CouchStore(settings)
    for day in DAYS:
        manifest = store.get(MANIFESTS, day.isoformat())
        old = manifests[day.isoformat()]
        assert {k: v for k, v in content_of(manifest).items() if k != "refused"} == \
            content_of(old)
        refused = manifest["refused"]
        assert (refused["stored"], refused["fetched"], refused["would_remove"]) == (
            old["stored"] + old["rejected_invalid"], 0, old["stored"] + old["rejected_invalid"])
    assert doc_count(store, REMOVED) == 0
    assert_site_equals_oracle(settings, rows)  # the site, rebuilt, still shows every day


def test_losing_half_a_day_is_refused_applied_when_allowed_and_restorable(settings, fake_app):
    runner = CliRunner()
    env = environment(settings)
    assert runner.invoke(main, ["run-day", DAY.isoformat()], env=env).exit_code == 0
    store = CouchStore(settings)
    original = {kind: {d["_id"]: content_of(d) for d in store.day_docs(kind, DAY)}
                for kind in (RAW, QUARANTINE)}
    aggregates = store.get(AGGREGATES, DAY.isoformat())
    source = fake_app.state.store
    rows = day_rows(source, DAY)
    lost = {row["id"] for row in rows[::2] if isinstance(row.get("id"), str)}
    source.range = without(source, lost)
    before = snapshot_of(settings)

    result = runner.invoke(main, ["run-day", DAY.isoformat()], env=env)
    assert result.exit_code == REFUSED_STATUS and "refused" in result.output
    assert snapshot_of(settings) == before

    result = runner.invoke(main, ["run-day", DAY.isoformat(), "--allow-removals"], env=env)
    assert result.exit_code == 0, result.output
    raw = {d["kpiggybank_id"] for d in store.day_docs(RAW, DAY)}
    assert raw and not raw & lost
    removed = list(store.day_docs(REMOVED, DAY))
    gone = {doc_id: doc for kind in (RAW, QUARANTINE) for doc_id, doc in original[kind].items()
            if doc_id.split(":", 1)[1] in lost}
    assert len(removed) == len(gone) > 0
    for record in removed:
        assert record["doc"] == gone[record["doc"]["_id"]]
        assert record["day"] == DAY.isoformat() and record["reason"] == GONE
        assert record["run"].startswith("one-pass:") and record["removed_at"]
    assert "refused" not in store.get(MANIFESTS, DAY.isoformat())

    result = runner.invoke(main, ["restore-removed", "--start", DAY.isoformat(), "--end",
                                  DAY.isoformat()], env=env)
    assert result.exit_code == 0 and f"{len(gone)} rows restored" in result.output
    assert {kind: {d["_id"]: content_of(d) for d in store.day_docs(kind, DAY)}
            for kind in (RAW, QUARANTINE)} == original
    assert list(store.day_docs(REMOVED, DAY)) == []
    restored = store.get(AGGREGATES, DAY.isoformat())
    assert (restored["groups"], restored["sites_histogram"]) == (
        aggregates["groups"], aggregates["sites_histogram"])


def test_a_refused_windowed_restatement_changes_nothing_and_a_retry_fetches_nothing(
    settings, fake_app
):
    backfill(DAY, DAY, settings, progress=False)
    before = snapshot_of(settings)
    source = fake_app.state.store
    source.range = lambda start, end: []
    plan = plan_windows([DAY], settings, "run-1")
    assert not any(window["fresh"] for window in plan)
    for window in plan:
        extract_window(window, settings)
    [manifest] = close_days(plan, settings)
    assert manifest["refused"]["run"] == "run-1" and manifest["refused"]["fetched"] == 0
    assert snapshot_of(settings) == before
    store = CouchStore(settings)
    # the staged rows and parts are gone too: what stays is the digest record the backfill's
    # one pass left
    assert set(store.iter_range(PARTS, "", None, include_docs=False)) == {record_id(DAY)}

    source.range = None  # a retry of the task asks KPIggybank nothing
    [again] = close_days(plan, settings)
    assert again["refused"] == manifest["refused"]
    assert snapshot_of(settings) == before


def test_rows_staged_by_windows_are_applied_only_by_the_close(settings, fake_app):
    """A restated day's windows write nothing to raw or quarantine, nor its manifest (marked
    in progress only by the close); a retry of the close after its parts were dropped leaves
    the closed day alone and fetches nothing."""
    backfill(DAY, DAY, settings, progress=False)
    source = fake_app.state.store
    rows = day_rows(source, DAY)
    changed = copy.deepcopy(rows[3])
    changed["value"]["event_stream"] = [["screen.rp_info", 1], ["assertion_generated", 2]]
    extra = copy.deepcopy(rows[4])
    extra["id"] = extra["value"]["_id"] = "late-arrival"
    original = source.range

    def restated(start, end):
        out = [changed if r.get("id") == changed["id"] else r for r in original(start, end)]
        return out + [extra] if start <= extra["key"] <= end else out

    source.range = restated
    store = CouchStore(settings)
    plan = plan_windows([DAY], settings, "run-2")
    after_plan = snapshot_of(settings, (RAW, QUARANTINE, MANIFESTS))
    for window in plan:
        extract_window(window, settings)
    assert snapshot_of(settings, (RAW, QUARANTINE, MANIFESTS)) == after_plan
    [manifest] = close_days(plan, settings)
    assert "refused" not in manifest and manifest["written"] >= 2
    raw = {d["kpiggybank_id"]: d["blob"] for d in store.day_docs(RAW, DAY)}
    assert raw["late-arrival"]["timestamp"] == extra["key"]
    assert raw[changed["id"]]["event_stream"] == changed["value"]["event_stream"]

    source.range = None
    done = snapshot_of(settings, (RAW, QUARANTINE, MANIFESTS, AGGREGATES))
    [again] = close_days(plan, settings)  # the aggregate task retried after the parts went
    assert again["written"] == 0 and "refused" not in again
    assert snapshot_of(settings, (RAW, QUARANTINE, MANIFESTS, AGGREGATES)) == done


def test_a_fresh_day_manifest_is_marked_in_progress_once_by_the_plan(settings, fake_app):
    source = fake_app.state.store
    original = source.range
    source.range = lambda start, end: []
    backfill(DAY, DAY, settings, progress=False)  # before the source had the day: 0 rows
    store = CouchStore(settings)
    assert store.get(MANIFESTS, DAY.isoformat())["fetched"] == 0
    source.range = original
    plan = plan_windows([DAY], settings, "run-1")
    assert all(window["fresh"] for window in plan)
    marked = store.get(MANIFESTS, DAY.isoformat())
    assert marked["complete"] is False
    for window in plan:
        extract_window(window, settings)
    assert store.get(MANIFESTS, DAY.isoformat())["_rev"] == marked["_rev"]
    [manifest] = close_days(plan, settings)
    assert manifest["complete"] is True and manifest["stored"] > 0


def odd_rows(source, day):
    """Copies of a valid row of `day` under ids whose first code point is odd."""
    template = next(r for r in day_rows(source, day) if check_row(r).status == "ok")
    rows = []
    for n, doc_id in enumerate(ODD_IDS):
        row = copy.deepcopy(template)
        row["id"] = row["value"]["_id"] = doc_id
        row["key"] = row["value"]["timestamp"] = template["key"] + n
        rows.append((row["key"], row))
    return rows


def test_every_per_day_read_finds_ids_of_any_first_code_point(settings, fake_app):
    source = fake_app.state.store
    source.add_rows(odd_rows(source, DAY) + [(odd_rows(source, DAY)[0][0], {
        "id": "\ud800lone", "key": 1, "value": {"timestamp": "x"}})])  # no usable id
    backfill(DAYS[0], DAYS[-1], settings, progress=False)
    store = CouchStore(settings)
    ids = store.day_ids(RAW, DAY)
    assert {f"{DAY}:{doc_id}" for doc_id in ODD_IDS} <= ids
    for other in (DAYS[0], DAYS[2]):
        assert not {doc_id for doc_id in store.day_ids(RAW, other)
                    if doc_id.split(":", 1)[1] in ODD_IDS}
    assert {d["_id"] for d in store.day_docs(RAW, DAY)} == ids
    assert store.get(MANIFESTS, DAY.isoformat())["stored"] == len(ids)
    assert any(d["_id"].startswith(f"{DAY}:sha1:") for d in store.day_docs(QUARANTINE, DAY))

    # the emoji row leaves the source: restating its day removes it (kept in _removed)
    source.range = without(source, {ODD_IDS[0]})
    manifest = extract_and_store(DAY, settings)
    assert manifest["removed"] == 1 and "refused" not in manifest
    assert f"{DAY}:{ODD_IDS[0]}" not in store.day_ids(RAW, DAY)
    [record] = store.day_docs(REMOVED, DAY)
    assert record["doc"]["kpiggybank_id"] == ODD_IDS[0]
    # and an empty answer after it still removes nothing, emoji ids included
    source.range = lambda start, end: []
    kept = store.day_ids(RAW, DAY)
    assert extract_and_store(DAY, settings)["refused"]["would_remove"] == len(
        kept | store.day_ids(QUARANTINE, DAY))
    assert store.day_ids(RAW, DAY) == kept


def big_row(source, day, size):
    template = next(r for r in day_rows(source, day) if check_row(r).status == "ok")
    row = copy.deepcopy(template)
    row["id"] = row["value"]["_id"] = "big-row"
    row["value"]["padding"] = "x" * size
    return row


def test_a_row_too_large_for_one_document_is_quarantined_whole(settings, fake_app):
    settings = dataclasses.replace(settings, max_document_bytes=50_000)
    source = fake_app.state.store
    backfill(DAY, DAY, settings, progress=False)
    row = big_row(source, DAY, 60_000)
    source.add_rows([(row["key"], row)])
    manifest = extract_and_store(DAY, settings)  # a restatement: staged, then applied
    assert "refused" not in manifest
    assert manifest["rejected_reasons"][TOO_LARGE] == 1
    assert manifest["fetched"] == (manifest["stored"] + manifest["rejected_invalid"]
                                   + manifest["duplicate"])
    store = CouchStore(settings)
    [doc] = store.get_many(QUARANTINE, [f"{DAY}:big-row"], attachments=True).values()
    assert doc["reason"] == TOO_LARGE
    kept = orjson.loads(base64.b64decode(doc["_attachments"]["row.json"]["data"]))
    assert kept == row
    assert extract_and_store(DAY, settings)["written"] == 0  # unchanged: nothing rewritten
    # moved to _removed and back, the attachment travels with it
    source.range = without(source, {"big-row"})
    assert extract_and_store(DAY, settings)["removed"] == 1
    assert restore_removed_day(DAY, settings)["restored"] == 1
    [back] = store.get_many(QUARANTINE, [f"{DAY}:big-row"], attachments=True).values()
    assert orjson.loads(base64.b64decode(back["_attachments"]["row.json"]["data"])) == row


def server_limits_documents(couchdb_url: str) -> bool:
    """Whether the server refuses documents over 8 MB (Apache CouchDB; pouchdb-server
    has no such limit)."""
    return "couchdb" in httpx.get(couchdb_url, timeout=10).json()


def test_a_row_the_server_refuses_as_too_large_is_quarantined(settings, fake_app, couchdb_url):
    """Our own limit set above the server's: the server's refusal (413 on Apache CouchDB)
    quarantines the row instead of failing the day; the dev server stores it."""
    settings = dataclasses.replace(settings, max_document_bytes=100_000_000, bulk_size=50)
    source = fake_app.state.store
    row = big_row(source, DAY, 9_000_000)
    source.add_rows([(row["key"], row)])
    manifest = extract_and_store(DAY, settings)
    store = CouchStore(settings)
    if server_limits_documents(couchdb_url):
        assert manifest["rejected_reasons"][TOO_LARGE] == 1
        [doc] = store.get_many(QUARANTINE, [f"{DAY}:big-row"], attachments=True).values()
        assert doc["reason"] == TOO_LARGE  # and the row kept whole, as received
        assert orjson.loads(base64.b64decode(doc["_attachments"]["row.json"]["data"])) == row
    else:
        assert store.get(RAW, f"{DAY}:big-row")["blob"]["padding"] == row["value"]["padding"]
    assert manifest["fetched"] == (manifest["stored"] + manifest["rejected_invalid"]
                                   + manifest["duplicate"])


def test_reaggregate_rebuilds_the_same_documents_from_couchdb_alone(settings, fake_app):
    backfill(DAYS[0], DAYS[-1], settings, progress=False)
    before = snapshot_of(settings, (AGGREGATES, MANIFESTS))
    fake_app.state.store.range = None  # no request may reach KPIggybank
    for day in DAYS + [DAYS[-1] + timedelta(days=1)]:
        reaggregate_day(day, settings)
    after = snapshot_of(settings, (AGGREGATES, MANIFESTS))
    assert after == before  # byte for byte: not even a new revision


def test_a_fresh_day_whose_window_was_retried_closes_to_what_the_source_returns(
    settings, fake_app
):
    """A window of a new day stored its rows, then its retry no longer got one of them: the
    close is not a refusal (nothing was stored before the run); the row goes to _removed."""
    source = fake_app.state.store
    plan = plan_windows([DAY], settings, "run-1")
    for window in plan:
        extract_window(window, settings)
    first = next(r for r in day_rows(source, DAY)
                 if plan[0]["start_ms"] <= r["key"] <= plan[0]["end_ms"] and check_row(r).status
                 == "ok")
    source.range = without(source, {first["id"]})
    extract_window(plan[0], settings)  # the retry of the first window
    [manifest] = close_days(plan, settings)
    assert "refused" not in manifest and manifest["removed"] == 1
    store = CouchStore(settings)
    assert f"{DAY}:{first['id']}" not in store.day_ids(RAW, DAY)
    assert manifest["stored"] == len(store.day_ids(RAW, DAY))
    [record] = store.day_docs(REMOVED, DAY)
    assert record["doc"]["kpiggybank_id"] == first["id"]


def test_only_the_staged_rows_of_the_attempt_a_part_names_are_applied(settings, fake_app):
    """A window of a restated day staged an extra row, died before its part, and its retry no
    longer got that row: the close applies the retry's rows only."""
    backfill(DAY, DAY, settings, progress=False)
    source = fake_app.state.store
    original = with_extra_row(source, "only-in-the-first-attempt")
    plan = plan_windows([DAY], settings, "run-1")
    import kpi.ingest

    def dies(*args, **kwargs):
        raise RuntimeError("worker lost")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kpi.ingest, "write_part", dies)
        with pytest.raises(RuntimeError):
            extract_window(plan[0], settings)  # staged the extra row, wrote no part
    source.range = original
    for window in plan:
        extract_window(window, settings)
    [manifest] = close_days(plan, settings)
    store = CouchStore(settings)
    assert f"{DAY}:only-in-the-first-attempt" not in store.day_ids(RAW, DAY)
    assert manifest["stored"] == len(store.day_ids(RAW, DAY))
    parts = set(store.iter_range(PARTS, "", None, include_docs=False)) - {record_id(DAY)}
    assert len(parts) == 1 and parts <= store.day_ids(PARTS, DAY)  # the record that run-1
    # closed the day (and the digest record of a one pass, if any)


@pytest.mark.parametrize("drops", [1, 3])
def test_staged_rows_deleted_by_another_run_are_never_half_applied(
    settings, fake_app, monkeypatch, drops
):
    """Another run of the day drops this one-pass store's staged rows before its close: the
    pass is redone (the later run wins, as runs that overlap end as one); when that keeps
    happening, it fails after 3 rounds and nothing of the day changed."""
    backfill(DAY, DAY, settings, progress=False)
    with_extra_row(fake_app.state.store, "late-arrival")
    before = snapshot_of(settings, (RAW, QUARANTINE, AGGREGATES))
    import kpi.ingest

    real = kpi.ingest._close
    dropped = []

    def another_run_drops_the_staging(store, day, *args, **kwargs):
        if len(dropped) < drops:
            dropped.append(day)
            store.delete(PARTS, sorted(i for i in store.day_ids(PARTS, day) if ":s:" in i))
        return real(store, day, *args, **kwargs)

    monkeypatch.setattr(kpi.ingest, "_close", another_run_drops_the_staging)
    store = CouchStore(settings)
    if drops < kpi.ingest.ONE_PASS_ROUNDS:
        manifest = extract_and_store(DAY, settings)
        assert f"{DAY}:late-arrival" in store.day_ids(RAW, DAY)
        assert manifest["stored"] == len(store.day_ids(RAW, DAY))
    else:
        with pytest.raises(Exception, match="kept dropping this run's staged rows"):
            extract_and_store(DAY, settings)
        assert snapshot_of(settings, (RAW, QUARANTINE, AGGREGATES)) == before


def test_a_refused_run_cleared_after_the_source_recovered_applies(settings, fake_app):
    """The same run id (an Airflow run cleared and run again) with new parts is closed from
    them, not answered with its earlier refusal."""
    backfill(DAY, DAY, settings, progress=False)
    source = fake_app.state.store
    original = source.range
    source.range = lambda start, end: []
    plan = plan_windows([DAY], settings, "run-1")
    for window in plan:
        extract_window(window, settings)
    assert "refused" in close_days(plan, settings)[0]
    source.range = original
    for window in plan:
        extract_window(window, settings)
    [manifest] = close_days(plan, settings)
    assert "refused" not in manifest and manifest["complete"] is True
    assert "refused" not in CouchStore(settings).get(MANIFESTS, DAY.isoformat())


def test_restore_brings_back_removed_rows_never_rows_moved_to_the_other_database(
    settings, fake_app
):
    source = fake_app.state.store
    original = source.range
    row = next(r for r in day_rows(source, DAY) if check_row(r).status == "ok")
    backfill(DAY, DAY, settings, progress=False)
    broken = {**row, "value": {**row["value"], "event_stream": "not a list"}}
    source.range = lambda start, end: [broken if r.get("id") == row["id"] else r
                                       for r in original(start, end)]
    extract_and_store(DAY, settings)  # the row moves to quarantine
    source.range = without(source, {row["id"]})
    extract_and_store(DAY, settings)  # and then leaves the source
    store = CouchStore(settings)
    reasons = sorted(r["reason"] for r in store.day_docs(REMOVED, DAY))
    assert reasons == sorted([GONE, "replaced by a delivery of the same id in the other "
                                    "database"])
    assert restore_removed_day(DAY, settings)["restored"] == 1
    doc_id = f"{DAY}:{row['id']}"
    assert doc_id in store.day_ids(QUARANTINE, DAY) and doc_id not in store.day_ids(RAW, DAY)
