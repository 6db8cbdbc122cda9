"""Float aggregates do not depend on how a day's blobs were split: one pass, window parts
combined, and parts combined again give the same frames, to the last bit."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pandas.testing import assert_frame_equal

from kpi.aggregate import (
    KEYS,
    DayAggregator,
    canonical,
    combine,
    daily_aggregates,
    exact_sums,
    sites_histogram,
)
from kpi.reports import plain_number
from kpi.stage import stage
from tests.unit.kpi_helpers import CONFIG, blob


def one_pass(blobs: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    staged, _ = stage(blobs, CONFIG)
    return daily_aggregates(staged, CONFIG), sites_histogram(staged)


def as_bytes(frame: pd.DataFrame) -> bytes:
    """The frame as JSON text: -0.0 and 0.0, 0.6 and 0.6000000000000001 differ here."""
    return json.dumps(frame.to_dict("split")).encode()


def assert_identical(got: tuple[pd.DataFrame, pd.DataFrame],
                     want: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    for got_frame, want_frame in zip(got, want, strict=True):
        assert_frame_equal(got_frame, want_frame, check_exact=True)
        assert got_frame.to_dict() == want_frame.to_dict()
        assert as_bytes(got_frame) == as_bytes(want_frame)


def sites_blob(sites: object, **fields) -> dict:
    return blob(["screen.rp_info"], number_sites_signed_in=sites, **fields)


def test_a_sum_of_tenths_is_the_same_in_one_pass_and_from_parts():
    """0.1 + 0.2 + 0.3 is 0.6000000000000001 summed left to right, 0.6 summed from the right:
    the exact sum, 0.600000000000000005551..., rounds to 0.6."""
    blobs = [sites_blob(0.1), sites_blob(0.2), sites_blob(0.3)]
    whole = one_pass(blobs)
    parts = combine([one_pass([b]) for b in blobs])
    total = whole[0].set_index(KEYS).loc[("2026-10-01", "Total", "Total"), "sites_sum"]
    assert total == 0.6
    assert_identical(parts, whole)
    aggregator = DayAggregator(CONFIG)
    for b in reversed(blobs):
        aggregator.add([b])
    assert_identical(aggregator.result(), whole)


FRACTIONAL = [0.1, 0.2, 0.3, 0.7, 1e-3, 1 / 3, 2.5, 123456.789, 1e-300, 5e-324, 1e6,
              0.1 + 0.2, "0.1", "-0", -0.0, 0.0, 3, 7, None, "x"]

fractional_blobs = st.lists(
    st.builds(
        lambda day, sites, os_name, lang: sites_blob(sites, when=day, user_agent={"os": os_name},
                                                     lang=lang),
        st.sampled_from(["2026-10-01T03:00:00", "2026-10-01T21:00:00", "2026-10-02T09:30:00"]),
        st.sampled_from(FRACTIONAL),
        st.sampled_from(["Windows NT 6.1", "iPhone", "Linux"]),
        st.sampled_from(["en-US", "de", None]),
    ),
    max_size=40,
)
PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def encoded_and_back(frames: tuple[pd.DataFrame, pd.DataFrame]) -> tuple[pd.DataFrame,
                                                                         pd.DataFrame]:
    """Frames as an aggregates document stores them (integral floats as integers, e.g. a
    `sites_sum` of 6 as 6) and read back, as `close_day` reads window parts."""
    return tuple(pd.DataFrame([[plain_number(v) if isinstance(v, float) else v for v in row]
                               for row in frame.itertuples(index=False)],
                              columns=frame.columns) for frame in frames)


@PROPERTY
@given(fractional_blobs, st.data())
def test_any_split_of_the_blobs_combined_equals_one_pass(blobs, data):
    whole = one_pass(blobs)
    assert_identical(canonical(*whole), whole)  # one pass is already canonical
    part_of = data.draw(st.lists(st.integers(0, 2), min_size=len(blobs), max_size=len(blobs)))
    parts = [one_pass([b for b, p in zip(blobs, part_of, strict=True) if p == n])
             for n in range(3)]
    combined = combine(parts)
    assert_identical(combined, whole)
    assert_identical(combine([encoded_and_back(part) for part in parts]), whole)
    # combined parts combined again (a day restated from windows already combined)
    assert_identical(combine([combine(parts[:1]), combine(parts[1:])]), whole)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3),
                          st.one_of(st.floats(-1e6, 1e6, allow_subnormal=True),
                                    st.integers(-10**6, 10**6).map(float),
                                    st.sampled_from([0.1, 0.2, 0.3, 1 / 3, 5e-324, -0.0])),
                          st.integers(0, 10**9)),
                max_size=50))
def test_exact_sums_are_the_correctly_rounded_sums(rows):
    codes = np.array([code for code, _, _ in rows], dtype=np.int64)
    values = np.array([value for _, value, _ in rows], dtype=np.float64)
    counts = np.array([count for _, _, count in rows], dtype=np.int64)
    got = exact_sums(codes, values, counts, 4)
    want = [float(sum((Fraction(v) * c for g, v, c in rows if g == code), Fraction(0)))
            for code in range(4)]
    assert got.tolist() == want
    assert not np.signbit(got[got == 0]).any()  # 0.0, never -0.0
    reordered = np.random.default_rng(len(rows)).permutation(len(rows))
    assert exact_sums(codes[reordered], values[reordered], counts[reordered], 4).tolist() == want


def test_exact_sums_of_large_integers_and_tiny_fractions():
    big = 2.0**60  # beyond the float64 fast path for integers
    got = exact_sums(np.array([0, 0, 0, 1]), np.array([big, 1.0, 5e-324, 0.5]),
                     np.array([3, 1, 1, 2**35]), 2)
    assert got.tolist() == [float(3 * 2**60 + 1 + Fraction(5e-324)), 2.0**34]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_exact_sums_refuse_non_finite_values(bad):
    with pytest.raises(ValueError, match="non-finite"):
        exact_sums(np.array([0]), np.array([bad]), np.array([1]), 1)


def test_exact_sums_refuse_negative_or_too_many_counts():
    with pytest.raises(ValueError, match="non-negative"):
        exact_sums(np.array([0]), np.array([0.5]), np.array([-1]), 1)
    with pytest.raises(ValueError, match="non-negative"):
        exact_sums(np.array([0, 0]), np.array([0.5, 1.5]), np.array([2**35, 2**35]), 1)


def test_canonical_sorts_types_and_makes_one_zero():
    groups, histogram = one_pass([sites_blob(0.5), sites_blob("-0", lang="de"),
                                  sites_blob(None, lang="de")])
    assert not np.signbit(histogram["sites"]).any()  # staged as -0.0, counted as 0.0
    shuffled = (groups.iloc[::-1].reset_index(drop=True),
                histogram.assign(sites=np.where(histogram["sites"] == 0, -0.0, histogram["sites"]),
                                 blobs=histogram["blobs"].astype(object)).iloc[::-1])
    assert np.signbit(shuffled[1]["sites"]).any()
    got = canonical(*shuffled)
    assert_identical(got, (groups, histogram))
    assert not np.signbit(got[1]["sites"]).any()
    de = got[0].set_index(KEYS).loc[("2026-10-01", "Locale", "German")]
    assert (de["blobs"], de["sites_count"], de["sites_sum"]) == (2, 1, 0.0)


def test_canonical_of_no_blobs_is_typed_and_empty():
    groups, histogram = combine([one_pass([]), one_pass([sites_blob(None, timestamp=0)])])
    assert groups.empty and histogram.empty
    assert_identical((groups, histogram), one_pass([]))
    assert groups["sites_sum"].dtype == "float64" and groups["blobs"].dtype == "int64"
    assert histogram["sites"].dtype == "float64" and histogram["blobs"].dtype == "int64"


def test_canonical_refuses_a_histogram_that_does_not_hold_the_summed_blobs():
    groups, histogram = one_pass([sites_blob(0.5), sites_blob(2.25), sites_blob(None)])
    with pytest.raises(ValueError, match="holds 1 blob, its sites_count 2"):
        canonical(groups, histogram[histogram["sites"] != 0.5])
    with pytest.raises(ValueError, match="is not the sum of its sites histogram"):
        canonical(groups, histogram.assign(sites=histogram["sites"] + 1.0))
    with pytest.raises(ValueError, match="has no group row"):
        canonical(groups[groups["segmentation"] != "OS"], histogram)
    with pytest.raises(ValueError, match="rows repeat the keys"):
        canonical(pd.concat([groups, groups]), histogram)
