"""Every published report equals an independent, naive computation from the same blobs."""

from __future__ import annotations

import csv
import dataclasses
from datetime import date

import pytest

from fake_source.generator import blobs_for_day
from kpi.backfill import backfill
from kpi.reports import REPORTS
from kpi.source import check_row
from tests.conftest import FAKE_BAD_RATE, FAKE_PER_DAY, FAKE_SEED
from tests.integration import oracle

pytestmark = pytest.mark.integration
DAYS = [date(2026, 10, 1), date(2026, 10, 2), date(2026, 10, 3)]


def number(text: str):
    return None if text == "" else float(text)


def close(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


@pytest.mark.parametrize("min_segment_count", [0, 5])
def test_published_reports_match_the_oracle(settings, min_segment_count):
    """Exact (0: folding off), and with small segments folded into Other (the default)."""
    settings = dataclasses.replace(settings, min_segment_count=min_segment_count)
    backfill(DAYS[0], DAYS[-1], settings, progress=False)
    valid = [
        blob
        for day in DAYS
        for doc_id, blob in blobs_for_day(FAKE_SEED, day, FAKE_PER_DAY, FAKE_BAD_RATE)
        if check_row({"id": doc_id, "value": blob}).status == "ok"
    ]
    expected = oracle.compute(valid, min_segment_count)
    assert any(key[1] != "Total" and key[2] != "Other" and value[0] < 5  # folding is tested
               for key, value in expected["assertions"].items()) == (min_segment_count == 0)
    for name in REPORTS:
        if name == "data_quality":
            continue
        with open(settings.site_dir / "data" / f"{name}.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        got = {
            (r["date"], r["segmentation"], r["segment"], r["measure"]):
                (number(r["value"]), number(r["numerator"]), number(r["denominator"]))
            for r in rows
        }
        assert set(got) == set(expected[name]), name
        for key, want in expected[name].items():
            assert all(close(g, w) for g, w in zip(got[key], want, strict=True)), (name, key)
