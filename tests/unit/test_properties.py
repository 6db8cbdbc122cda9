"""Property-based invariants: aggregates are additive; histogram medians are exact."""

from __future__ import annotations

import statistics

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kpi.aggregate import KEYS, combine, count_columns, daily_aggregates, sites_histogram
from kpi.reports import histogram_medians
from kpi.stage import stage
from tests.unit.kpi_helpers import CONFIG, ms

EVENTS = ["screen.rp_info", "screen.set_password", "user.user_staged", "user.user_confirmed",
          "assertion_generated", "staging_continuation", "authenticate.enter_password",
          "user.reset_password_staged", "user.reset_password_confirmed", "screen.pick_email",
          "screen.provision_primary_user", "xhr_complete.screen.error_page",
          "screen.add_email", "user.email_staged", "user.email_confrimed", "window.unload"]
DAYS = [ms("2026-10-01T00:00:00"), ms("2026-10-02T00:00:00"), ms("2026-10-03T00:00:00")]

blobs = st.lists(
    st.builds(
        lambda day, offset, events, os_name, lang, emails, width, sites, new_account: {
            "timestamp": day + offset,
            "event_stream": [[name, i] for i, name in enumerate(events)],
            "user_agent": {"os": os_name},
            "lang": lang,
            "number_emails": emails,
            "screen_size": {"width": width},
            "number_sites_signed_in": sites,
            "new_account": new_account,
        },
        st.sampled_from(DAYS),
        st.integers(0, 86_400_000 - 1),
        st.lists(st.sampled_from(EVENTS), max_size=6),
        st.sampled_from(["Windows NT 6.1", "iPhone", "Linux", "BeOS", None]),
        st.sampled_from(["en-US", "de", "pt-BR", "pt", None]),
        st.sampled_from([None, 0, 1, 2, 3, 2.5, -1, "3"]),
        st.sampled_from([320, 640, 641, 1023, 1024, None]),
        st.one_of(st.none(), st.integers(0, 12), st.sampled_from([0.5, "7", "x"])),
        st.booleans(),
    ),
    max_size=60,
)
PROPERTY = settings(max_examples=50, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def aggregate(part: list[dict]) -> pd.DataFrame:
    staged, _ = stage(part, CONFIG)
    return daily_aggregates(staged, CONFIG).set_index(KEYS)[count_columns(CONFIG)]


def as_dict(frame: pd.DataFrame) -> dict:
    """{(date, segmentation, segment): {column: float}} without zero-only rows."""
    return {key: values for key, values in frame.astype(float).to_dict("index").items()
            if any(values.values())}


@PROPERTY
@given(blobs, st.data())
def test_aggregating_parts_and_summing_equals_aggregating_all(all_blobs, data):
    mask = data.draw(st.lists(st.booleans(), min_size=len(all_blobs), max_size=len(all_blobs)))
    left = [b for b, m in zip(all_blobs, mask, strict=True) if m]
    right = [b for b, m in zip(all_blobs, mask, strict=True) if not m]
    whole = aggregate(all_blobs)
    summed = aggregate(left).add(aggregate(right), fill_value=0)
    assert as_dict(summed) == as_dict(whole)
    parts = []
    for part in (left, right):
        staged, _ = stage(part, CONFIG)
        parts.append((daily_aggregates(staged, CONFIG), sites_histogram(staged)))
    groups, histogram = combine(parts)
    staged, _ = stage(all_blobs, CONFIG)
    assert as_dict(groups.set_index(KEYS)) == as_dict(whole)
    expected = sites_histogram(staged).set_index([*KEYS, "sites"])["blobs"].to_dict()
    got = histogram.set_index([*KEYS, "sites"])["blobs"].to_dict() if len(histogram) else {}
    assert got == expected


@PROPERTY
@given(blobs)
def test_each_days_aggregates_are_those_of_that_day_alone(all_blobs):
    whole = aggregate(all_blobs)
    for day in DAYS:
        alone = aggregate([b for b in all_blobs if day <= b["timestamp"] < day + 86_400_000])
        date = pd.Timestamp(day, unit="ms").date().isoformat()
        part = whole[whole.index.get_level_values("date") == date]
        assert as_dict(part) == as_dict(alone)


@PROPERTY
@given(blobs)
def test_median_from_histogram_equals_median_of_raw_values(all_blobs):
    staged, _ = stage(all_blobs, CONFIG)
    medians = histogram_medians(sites_histogram(staged)).set_index(KEYS)["median"]
    expected = {}
    for segmentation in ["Total", "OS", "Locale", "Emails", "Screen", "EmailType"]:
        for (date, segment), rows in staged.assign(Total="Total").groupby(
            ["date", segmentation],
            observed=True,
        ):
            values = rows["sites"].dropna().tolist()
            if values:
                expected[(str(date), segmentation, str(segment))] = statistics.median(values)
    got = {key: value for key, value in medians.items() if key[1] in
           {"Total", "OS", "Locale", "Emails", "Screen", "EmailType"}}
    assert got == expected
