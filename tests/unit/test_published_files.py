"""The published report files byte for byte against reference files (`golden/`).

The reference files were written by the release before the site's view files existed, so a
change of the CSV/JSON writers (for speed, say) that alters one byte of the public files fails
here. Regenerate them only with a deliberate, documented change of the file format.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from fake_source.generator import blobs_for_day
from kpi.reports import REPORTS, build_reports, to_csv, to_json
from tests.unit.kpi_helpers import CONFIG, aggregates_of, blob

GOLDEN = Path(__file__).with_name("golden")


def golden_blobs() -> list[dict]:
    """Two fake days, and a day whose blobs have no sites value and never engage."""
    blobs = [b for day in (date(2026, 10, 1), date(2026, 10, 2))
             for _, b in blobs_for_day(21, day, 40, bad_rate=0.0)]
    blobs += [blob(["screen.rp_info"], "2026-10-04T10:00:00", sites_signed_in=None)
              for _ in range(2)]
    return blobs


@pytest.fixture(scope="module")
def reports():
    return build_reports(aggregates_of(golden_blobs()), CONFIG)


@pytest.mark.parametrize("name", sorted(REPORTS))
def test_report_files_are_byte_identical_to_the_reference(reports, name):
    assert to_csv(reports[name]) == (GOLDEN / f"{name}.csv").read_text(encoding="utf-8")
    assert to_json(reports[name]) == (GOLDEN / f"{name}.json").read_bytes()


def test_the_reference_covers_null_medians_and_a_full_bounce_day(reports):
    median = (GOLDEN / "sites_median.csv").read_text(encoding="utf-8")
    assert "2026-10-04,Total,Total,value,,,\n" in median
    assert "2026-10-04,Total,Total,value,1.0,2,2\n" in (GOLDEN / "bounce_rate.csv").read_text(
        encoding="utf-8")
