"""Given/expected tests for every report on hand-written blobs, covering the spec's edges."""

from __future__ import annotations

import math
from datetime import date

import orjson
import pytest

from kpi.aggregate import daily_aggregates, sites_histogram
from kpi.aggregate_docs import aggregates_document
from kpi.reports import REPORTS
from kpi.stage import stage
from tests.unit.kpi_helpers import CONFIG, blob, reports_of, row, staged_column

NU = CONFIG.steps("new_user")
PR = CONFIG.steps("password_reset")
GP = CONFIG.steps("general_progress")
EA = CONFIG.steps("email_activation")
FULL_NEW_USER = ["screen.rp_info", "screen.set_password", "user.user_staged",
                 "user.user_confirmed", "assertion_generated"]
CONTINUATION = ["screen.rp_info", "staging_continuation", "assertion_generated"]


# --- new-user steps ------------------------------------------------------------------------

def test_staging_continuations_can_push_ratios_above_one():
    blobs = [blob(FULL_NEW_USER[:3]), blob(CONTINUATION), blob(CONTINUATION),
             blob(["screen.rp_info", "staging_continuation"])]  # no assertion: not a new user
    reports = reports_of(blobs)
    counts = [row(reports["new_user"], step)[0] for step in NU]
    assert counts == [1, 1, 2, 2]
    assert row(reports["new_user_time"], NU[0]) == (1.0, 1, 1)
    assert row(reports["new_user_time"], NU[2]) == (2.0, 2, 1)
    assert row(reports["new_user_time"], NU[3]) == (2.0, 2, 1)


def test_a_day_of_continuations_only_has_null_ratios():
    reports = reports_of([blob(CONTINUATION)])
    assert row(reports["new_user_time"], NU[0]) == (None, 0, 0)
    assert row(reports["new_user_time"], NU[3]) == (None, 1, 0)


def test_enter_password_disqualifies_a_new_user():
    reports = reports_of([blob(["screen.rp_info", "screen.set_password",
                                "authenticate.enter_password", "assertion_generated"],
                               email_type="secondary")])
    assert [row(reports["new_user"], step)[0] for step in NU] == [0, 0, 0, 0]
    assert row(reports["new_user_per_day"])[0] == 0  # an existing user: outcome assertion
    assert row(reports["new_user_success"]) == (None, 0, 0)
    assert row(reports["general_progress_time"], GP[2]) == (1.0, 1, 1)  # engaged


def test_new_user_needs_set_password():
    reports = reports_of([blob(["screen.rp_info", "user.user_staged", "assertion_generated"])])
    assert [row(reports["new_user"], step)[0] for step in NU] == [0, 0, 0, 0]


# --- general progress, bounce, errors --------------------------------------------------------

def test_general_progress_and_the_error_substring_rule():
    blobs = [
        blob(["screen.rp_info", "xhr_complete.screen.error_page"]),
        blob(["screen.rp_info", "screen.pick_email", "assertion_generated"]),
        blob(["screen.error"]),
        blob(["window.unload"]),
    ]
    reports = reports_of(blobs)
    got = [row(reports["general_progress_time"], step) for step in GP]
    assert got == [(1.0, 4, 4), (0.5, 2, 4), (0.25, 1, 4), (0.5, 2, 4), (0.25, 1, 4)]
    assert row(reports["bounce_rate"]) == (0.5, 1, 2)


def test_shown_but_nobody_engaged_is_a_full_bounce():
    reports = reports_of([blob(["screen.rp_info"]), blob(["screen.rp_info", "window.unload"])])
    assert row(reports["bounce_rate"]) == (1.0, 2, 2)
    assert row(reports["new_user_bounce"]) == (1.0, 2, 2)
    assert row(reports["new_user_success"]) == (0.0, 0, 2)
    assert row(reports["new_user_per_day"])[0] == 0


def test_zero_denominators_are_null_not_zero():
    reports = reports_of([blob(["window.unload"])])  # dialog never shown, no sites value
    assert row(reports["bounce_rate"]) == (None, 0, 0)
    assert row(reports["new_user_success"]) == (None, 0, 0)
    assert row(reports["new_user_bounce"]) == (None, 0, 0)
    assert row(reports["password_reset"], PR[0]) == (None, 0, 0)
    assert row(reports["sites_median"]) == (None, None, None)
    assert row(reports["sites"]) == (0.0, 0, 1)


# --- five outcomes -----------------------------------------------------------------------------

def test_five_outcomes():
    blobs = [
        blob(["screen.rp_info"]),  # bounce
        blob(["screen.rp_info", "screen.pick_email"]),  # fail
        blob(FULL_NEW_USER),  # fallback
        blob(["screen.rp_info", "screen.provision_primary_user", "assertion_generated"],
             new_account=True),  # idp
        blob(["screen.rp_info", "screen.provision_primary_user", "assertion_generated"],
             new_account=False),  # assertion (not new)
        blob(["screen.rp_info", "screen.pick_email", "assertion_generated"]),  # assertion
        blob(["screen.pick_email", "assertion_generated"]),  # dialog not shown: unclassified
    ]
    reports = reports_of(blobs)
    # N = idp + fallback = 2; D = bounce + fail + idp + fallback = 4
    assert row(reports["new_user_per_day"])[0] == 2
    assert row(reports["new_user_success"]) == (0.5, 2, 4)
    assert row(reports["new_user_bounce"]) == (0.25, 1, 4)
    assert row(reports["assertions"])[0] == 7


# --- password reset, email activation ---------------------------------------------------------

def test_password_reset_fractions_of_step_one():
    staged = ["screen.rp_info", "authenticate.enter_password", "user.reset_password_staged"]
    blobs = [
        blob([*staged, "user.reset_password_confirmed", "assertion_generated"]),
        blob(staged),
        blob(["screen.rp_info", "user.reset_password_confirmed", "assertion_generated"]),
    ]
    reports = reports_of(blobs)
    got = [row(reports["password_reset"], step) for step in PR]
    assert got == [(1.0, 2, 2), (0.5, 1, 2), (0.5, 1, 2)]


def test_email_activation_accepts_the_misspelled_confirmation():
    blobs = [
        blob(["screen.add_email", "user.email_staged", "user.email_confirmed",
              "assertion_generated"]),
        blob(["screen.add_email", "user.email_staged", "user.email_confrimed"]),
        blob(["screen.add_email", "user.email_staged"]),
        blob(["screen.add_email", "assertion_generated"]),  # never staged: not counted
    ]
    reports = reports_of(blobs)
    assert [row(reports["email_activation"], step)[0] for step in EA] == [3, 3, 2, 1]


# --- segments ---------------------------------------------------------------------------------

def test_screen_width_buckets():
    widths = [640, 641, 1023, 1024, None, "1024", 320.5]
    blobs = [blob(["a"], screen_size={"width": w, "height": 1}) for w in widths]
    blobs.append(blob(["a"]))
    assert staged_column(blobs, "Screen") == [
        "Mobile (<= 640)", "Tablet Profile", "Tablet Profile", "Desktop (>= 1024)", "Other",
        "Other", "Mobile (<= 640)", "Other",
    ]


@pytest.mark.parametrize(
    ("raw", "segment"),
    [("Windows NT 6.2", "Windows 8"), ("Windows NT 6.1", "Windows 7"),
     ("Windows NT 6.0", "Windows Vista"), ("Windows NT 5.1", "Windows XP"), ("iPod", "iOS"),
     ("iPhone", "iOS"), ("iPad", "iOS"), ("Macintosh", "Macintosh"), ("FirefoxOS", "FirefoxOS"),
     ("Windows NT 10.0", "Other"), ("windows nt 6.1", "Other"), (None, "Other"), (7, "Other")],
)
def test_os_aliases(raw, segment):
    assert staged_column([blob(["a"], user_agent={"os": raw})], "OS") == [segment]


@pytest.mark.parametrize(
    ("raw", "segment"),
    [("watch_without_onready", "watch"), ("watch_with_onready", "watch with onready"),
     ("get", "get"), ("getVerifiedEmail", "getVerifiedEmail"), ("internal", "internal"),
     ("watch", "watch"), ("other", "Other"), (None, "Other")],
)
def test_api_aliases(raw, segment):
    assert staged_column([blob(["a"], rp_api=raw)], "API") == [segment]


@pytest.mark.parametrize(
    ("raw", "segment"),
    [("en", "English"), ("es", "Spanish"), ("pt-BR", "Portuguese - Brazil"), ("de", "German"),
     ("fr", "French"), ("it", "Italian"), ("pl", "Polish"), ("tr", "Turkish"),
     ("ru", "Russian"), ("nl", "Dutch"), ("en-US", "English"), ("es-ES", "Spanish"),
     ("pt", "Other"), ("de_DE", "German"), ("EN-gb", "English"), ("ja", "Other"),
     ("pt-PT", "Other"), ("", "Other"), (None, "Other"), (["en"], "Other")],
)
def test_locale_aliases_and_subtags(raw, segment):
    assert staged_column([blob(["a"], lang=raw)], "Locale") == [segment]


def test_missing_locale_is_other():
    assert staged_column([blob(["a"])], "Locale") == ["Other"]


@pytest.mark.parametrize(
    ("raw", "segment"),
    [(0, "0"), (1, "1"), (2, "2"), (3, "3+"), (6, "3+"), (2.0, "2"), (2.5, "Other"),
     (-1, "Other"), ("3", "Other"), (True, "Other"), (None, "Unknown")],
)
def test_emails_segments(raw, segment):
    assert staged_column([blob(["a"], number_emails=raw)], "Emails") == [segment]


def test_missing_number_emails_is_unknown():
    assert staged_column([blob(["a"])], "Emails") == ["Unknown"]


def test_email_type_rule():
    blobs = [
        blob(FULL_NEW_USER, email_type="primary"),  # a new user: Fallback whatever it says
        blob(["user.reset_password_staged"], email_type="primary"),  # a reset: Fallback
        blob(["screen.rp_info"], email_type="primary"),
        blob(["screen.rp_info"], email_type="secondary"),
        blob(["screen.rp_info"]),
        blob(["screen.rp_info"], email_type="tertiary"),
    ]
    assert staged_column(blobs, "EmailType") == [
        "Fallback", "Fallback", "IdP", "Fallback", "Other", "Other"
    ]


# --- sites ------------------------------------------------------------------------------------

def test_sites_value_rules_mean_and_median():
    blobs = [
        blob(["a"], number_sites_logged_in=0, number_sites_signed_in=5),  # 0 is a value
        blob(["a"], sites_signed_in="4"),  # numeric string
        blob(["a"], number_sites_logged_in="x", sites_signed_in=2),  # falls through
        blob(["a"]),  # none: 0 for the mean, not in the median
    ]
    reports = reports_of(blobs)
    assert row(reports["sites"]) == (1.5, 6, 4)
    assert row(reports["sites_median"])[0] == 2.0
    reports = reports_of([*blobs, blob(["a"], number_sites_signed_in=5)])
    assert row(reports["sites_median"])[0] == 3.0  # (2 + 4) / 2
    assert row(reports["sites"]) == (11 / 5, 11, 5)


@pytest.mark.parametrize("huge", [1e20, 2**64, 1e308, 1_000_000.5, -1, -0.5, "1e20", "nan",
                                  "inf"])
def test_a_sites_value_out_of_range_falls_through_and_never_breaks_the_day(huge):
    """D4 as amended: a value counts only when finite and 0 <= v <= 1,000,000."""
    blobs = [blob(["a"], number_sites_logged_in=huge, sites_signed_in=7),
             blob(["a"], number_sites_signed_in=huge)]  # no other field: no value
    staged, _ = stage(blobs, CONFIG)
    assert staged["sites"].tolist()[0] == 7.0 and math.isnan(staged["sites"].tolist()[1])
    doc = aggregates_document(date(2026, 10, 1), daily_aggregates(staged, CONFIG),
                              sites_histogram(staged), CONFIG, {})
    orjson.dumps(doc)  # storable: no 1e20 turned into an integer too large for JSON tools
    assert row(reports_of(blobs)["sites"]) == (3.5, 7, 2)


@pytest.mark.parametrize("edge", [0, 0.0, -0.0, 1_000_000, 1e6, 2.5])
def test_sites_values_at_the_edges_count(edge):
    staged, _ = stage([blob(["a"], number_sites_logged_in=edge, sites_signed_in=7)], CONFIG)
    assert staged["sites"].tolist() == [float(edge)]


# --- universe, invariants ---------------------------------------------------------------------

def test_every_report_has_its_segmentations_and_measures():
    reports = reports_of([blob(FULL_NEW_USER, user_agent={"os": "Linux"})])
    segmented = {"new_user", "new_user_success", "new_user_bounce", "new_user_per_day",
                 "sites", "sites_median", "assertions"}
    for name in REPORTS:
        if name == "data_quality":
            continue
        segmentations = set(reports[name].segmentation)
        if name in segmented:
            assert segmentations == {"Total", "OS", "Browser", "Screen", "Emails", "Locale",
                                     "API", "EmailType"}, name
        else:
            assert segmentations == {"Total"}, name
    assert set(reports["new_user"].measure) == set(NU)
    assert set(reports["general_progress_time"].measure) == set(GP)
    assert set(reports["email_activation"].measure) == set(EA)


def test_count_segments_sum_to_total():
    blobs = [blob(FULL_NEW_USER, user_agent={"os": "iPhone"}, lang="de"),
             blob(CONTINUATION, lang="pt-BR", number_emails=2),
             blob(["screen.rp_info"], screen_size={"width": 800}),
             blob(["screen.rp_info", "screen.provision_primary_user", "assertion_generated"],
                  new_account=True, email_type="primary", number_sites_signed_in=3)]
    reports = reports_of(blobs)
    for name in ("new_user", "new_user_per_day", "assertions"):
        report = reports[name]
        total = report[report.segmentation == "Total"].set_index("measure").value.to_dict()
        for segmentation, rows in report[report.segmentation != "Total"].groupby("segmentation"):
            assert rows.groupby("measure").value.sum().to_dict() == total, (name, segmentation)
    for name in ("new_user_success", "new_user_bounce", "sites"):
        report = reports[name]
        total = report[report.segmentation == "Total"][["numerator", "denominator"]].sum()
        for _, rows in report[report.segmentation != "Total"].groupby("segmentation"):
            assert rows[["numerator", "denominator"]].sum().to_dict() == total.to_dict(), name


def test_funnel_steps_never_increase_without_continuations():
    blobs = [blob(FULL_NEW_USER[: n + 2]) for n in range(4)]
    report = reports_of(blobs)["new_user"]
    counts = [row(report, step)[0] for step in NU]
    assert counts == sorted(counts, reverse=True) == [4, 3, 2, 1]


def test_stage_counts_skips_and_rejections_with_reasons():
    from kpi.stage import stage

    blobs = [
        blob(["screen.rp_info"]),
        blob([]),  # skipped
        {"timestamp": 1790812800000},  # no stream at all: skipped
        {"event_stream": [["screen.rp_info", 1]]},  # no timestamp
        blob(["a"], timestamp=True),
        {**blob(["a"]), "event_stream": "screen.rp_info"},
        {**blob(["a"]), "event_stream": [["a", 1], ["b"]]},
        {**blob(["a"]), "event_stream": [[3, 1]]},
        "not a blob",
    ]
    staged, counts = stage(blobs, CONFIG)
    assert len(staged) == 1
    assert counts.skipped_empty_stream == 2
    assert counts.rejected_invalid == 6
    assert counts.rejected_reasons == {
        "timestamp is missing, not numeric or out of range": 2,
        "event_stream is not a list": 1,
        "event_stream item is not a [name, offset] pair": 1,
        "event_stream item name is not a string": 1,
        "blob is not a JSON object": 1,
    }


def test_general_progress_events_come_from_the_configuration():
    import dataclasses

    from kpi.stage import stage

    progress = list(CONFIG.flows["general_progress"])
    assert "screen.pick_email" in progress[2][1].split("|")  # production: any of five events
    progress[2] = (progress[2][0], "screen.pick_email")  # a deployment that counts only this
    narrow = dataclasses.replace(CONFIG, flows={**CONFIG.flows,
                                                "general_progress": tuple(progress)})
    blobs = [blob(["screen.rp_info", "screen.pick_email"]),
             blob(["screen.rp_info", "authenticate.enter_password"])]
    staged, _ = stage(blobs, narrow)
    assert list(staged[f"general_progress:{GP[2]}"]) == [True, False]
    assert list(staged["outcome"]) == ["fail", "bounce"]  # engaged, then not engaged
    assert row(reports_of(blobs)["bounce_rate"]) == (0.0, 0, 2)  # production: both engaged


def test_an_event_name_that_is_a_list_or_object_is_rejected_not_a_crash():
    from kpi.stage import stage

    ms = 1_790_899_200_000
    blobs = [{"timestamp": ms, "event_stream": [[["screen.rp_info"], 1]]},
             {"timestamp": ms, "event_stream": [[{"name": "x"}, 1]]},
             {"timestamp": ms, "event_stream": [["screen.rp_info", 1]]}]
    staged, counts = stage(blobs, CONFIG)
    assert len(staged) == 1
    assert counts.rejected_reasons == {"event_stream item name is not a string": 2}
