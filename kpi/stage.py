"""Stage: one row per blob with its UTC date, seven segments, flow steps, outcome and sites.

Implements SPEC §3.2 (per-blob derivation, Sane rules), §3.3 with D2/D3 (segments), §4.2
(five-outcome classification), §7 (email activation) and D4 (sites value). Pure: blobs in,
DataFrame out.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd

from kpi.config import SEGMENTATIONS, Config
from kpi.source import check_row, utc_day_of

OUTCOMES = ("bounce", "fail", "fallback", "idp", "assertion")
SITES_FIELDS = ("number_sites_logged_in", "sites_signed_in", "number_sites_signed_in")
ENGAGED_EVENTS = frozenset(
    {
        "screen.set_password",
        "screen.pick_email",
        "screen.provision_primary_user",
        "screen.verify_primary_user",
        "authenticate.enter_password",
    }
)
EMAIL_CONFIRMED_MISSPELLED = "user.email_confrimed"


@dataclass
class StageCounts:
    """Blobs left out of the staged frame, by cause."""

    skipped_empty_stream: int = 0
    rejected_invalid: int = 0
    rejected_reasons: Counter = field(default_factory=Counter)


def step_columns(config: Config) -> list[str]:
    """Names of the step flag columns: `<flow>:<step name>` for every configured flow."""
    return [f"{flow}:{step}" for flow in config.flows for step in config.steps(flow)]


def staged_columns(config: Config) -> list[str]:
    """Columns of the staged frame, in order."""
    return ["date", *SEGMENTATIONS, *step_columns(config), "outcome", "sites"]


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _lookup(raw: object, allowed: tuple[str, ...], aliases: dict[str, str]) -> str:
    """Alias `raw` exactly; the segment is the result if configured, else `Other`."""
    if not isinstance(raw, str):
        return "Other"
    value = aliases.get(raw, raw)
    return value if value in allowed else "Other"


def locale_segment(lang: object, config: Config) -> str:
    """D2: exact alias, else the primary subtag's alias; missing or unknown → Other."""
    allowed = config.segmentations["Locale"]
    if not isinstance(lang, str):
        return "Other"
    exact = config.aliases.get(lang, lang)
    if exact in allowed:
        return exact
    primary = lang.replace("_", "-").split("-", 1)[0].lower()
    return _lookup(primary, allowed, config.aliases)


def emails_segment(number_emails: object) -> str:
    """D3: missing/null → Unknown; integral ≥ 0 → 0/1/2/3+; anything else → Other."""
    if number_emails is None:
        return "Unknown"
    if not _is_number(number_emails) or not math.isfinite(number_emails):
        return "Other"
    if number_emails < 0 or number_emails != int(number_emails):
        return "Other"
    return str(int(number_emails)) if number_emails < 3 else "3+"


def screen_segment(screen_size: object) -> str:
    """Width buckets: ≥ 1024 Desktop, ≤ 640 Mobile, else Tablet; no numeric width → Other."""
    width = screen_size.get("width") if isinstance(screen_size, dict) else None
    if not _is_number(width) or not math.isfinite(width):
        return "Other"
    if width >= 1024:
        return "Desktop (>= 1024)"
    if width <= 640:
        return "Mobile (<= 640)"
    return "Tablet Profile"


def sites_value(blob: dict) -> float | None:
    """D4: the first sites field present and numeric (numeric strings coerced), else None."""
    for name in SITES_FIELDS:
        value = blob.get(name)
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                continue
        if _is_number(value) and math.isfinite(value):
            return float(value)
    return None


def new_user_steps(events: set[str], flow: tuple[tuple[str, str], ...]) -> list[str]:
    """SPEC §3.2 step 3, including the staging-continuation and enter-password rules."""
    if "staging_continuation" in events:
        return [flow[2][0], flow[3][0]] if "assertion_generated" in events else []
    if "screen.set_password" not in events or "authenticate.enter_password" in events:
        return []
    return [step for step, event in flow if event in events]


def password_reset_steps(events: set[str], flow: tuple[tuple[str, str], ...]) -> list[str]:
    """SPEC §3.2 step 4: only blobs with `user.reset_password_staged`."""
    if "user.reset_password_staged" not in events:
        return []
    return [step for step, event in flow if event in events]


def general_progress_steps(
    events: set[str], names: list[str], flow: tuple[tuple[str, str], ...]
) -> list[str]:
    """SPEC §3.2 step 5; the error step matches any event name containing `screen.error`."""
    steps = [flow[0][0]]
    if "screen.rp_info" in events:
        steps.append(flow[1][0])
    if events & ENGAGED_EVENTS:
        steps.append(flow[2][0])
    if any("screen.error" in name for name in names):
        steps.append(flow[3][0])
    if "assertion_generated" in events:
        steps.append(flow[4][0])
    return steps


def email_activation_steps(events: set[str], flow: tuple[tuple[str, str], ...]) -> list[str]:
    """SPEC §7: blobs with `user.email_staged`; step 3 also accepts `user.email_confrimed`."""
    if "user.email_staged" not in events:
        return []
    if EMAIL_CONFIRMED_MISSPELLED in events:
        events = events | {"user.email_confirmed"}
    return [step for step, event in flow if event in events]


def outcome_of(blob: dict, events: set[str], has_new_user_steps: bool) -> str:
    """SPEC §4.2 five-outcome class; '' for blobs whose dialog was never shown."""
    if "screen.rp_info" not in events:
        return ""
    if not events & ENGAGED_EVENTS:
        return "bounce"
    if "assertion_generated" in events:
        if has_new_user_steps:
            return "fallback"
        if blob.get("new_account") and "screen.provision_primary_user" in events:
            return "idp"
        return "assertion"
    return "fail"


def stage_blob(blob: dict, config: Config) -> list:
    """One staged row (a list in `staged_columns` order) for a valid, non-empty blob."""
    names = [pair[0] for pair in blob["event_stream"]]
    events = set(names)
    flows = config.flows
    new_user = new_user_steps(events, flows["new_user"])
    reset = password_reset_steps(events, flows["password_reset"])
    progress = general_progress_steps(events, names, flows["general_progress"])
    activation = email_activation_steps(events, flows["email_activation"])
    reached = {
        "new_user": set(new_user),
        "password_reset": set(reset),
        "general_progress": set(progress),
        "email_activation": set(activation),
    }
    agent = blob.get("user_agent") if isinstance(blob.get("user_agent"), dict) else {}
    segs = config.segmentations
    email_type = (
        "Fallback" if new_user or reset else _lookup(blob.get("email_type"), segs["EmailType"],
                                                     config.aliases)
    )
    segments = [
        _lookup(agent.get("os"), segs["OS"], config.aliases),
        _lookup(agent.get("browser"), segs["Browser"], config.aliases),
        screen_segment(blob.get("screen_size")),
        emails_segment(blob.get("number_emails")),
        locale_segment(blob.get("lang"), config),
        _lookup(blob.get("rp_api"), segs["API"], config.aliases),
        email_type if email_type in segs["EmailType"] else "Other",
    ]
    steps = [
        step in reached.get(flow, ())
        for flow in flows
        for step in config.steps(flow)
    ]
    sites = sites_value(blob)
    return [
        utc_day_of(blob["timestamp"]).isoformat(),
        *segments,
        *steps,
        outcome_of(blob, events, bool(new_user)),
        math.nan if sites is None else sites,
    ]


def stage(blobs: Iterable[dict], config: Config) -> tuple[pd.DataFrame, StageCounts]:
    """One row per blob: date, segments, step flags, outcome, sites.

    Blobs with a missing or empty `event_stream` are skipped, and blobs failing validation
    (SPEC D10) are left out; both are counted in the returned `StageCounts`.
    """
    counts = StageCounts()
    rows = []
    for blob in blobs:
        check = check_row({"id": "-", "value": blob})
        if check.status == "skipped":
            counts.skipped_empty_stream += 1
            continue
        if check.status == "rejected":
            counts.rejected_invalid += 1
            counts.rejected_reasons[check.reason] += 1
            continue
        rows.append(stage_blob(blob, config))
    frame = pd.DataFrame(rows, columns=staged_columns(config))
    flags = step_columns(config)
    frame[flags] = frame[flags].astype(bool)
    frame["sites"] = frame["sites"].astype(float)
    return frame, counts
