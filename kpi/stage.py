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
from datetime import timedelta

import numpy as np
import pandas as pd

from kpi.blob import SITES_FIELDS
from kpi.config import SEGMENTATIONS, Config
from kpi.days import DAY_MS, EPOCH
from kpi.overlap import gc_paused
from kpi.source import MAX_TIMESTAMP_MS, check_row

OUTCOMES = ("bounce", "fail", "fallback", "idp", "assertion")
EMAIL_CONFIRMED_MISSPELLED = "user.email_confrimed"
NUMBER_TYPES = (int, float)


@dataclass
class StageCounts:
    """Blobs left out of the staged frame, by cause."""

    skipped_empty_stream: int = 0
    rejected_invalid: int = 0
    rejected_reasons: Counter = field(default_factory=Counter)

    def reject(self, reason: str) -> None:
        self.rejected_invalid += 1
        self.rejected_reasons[reason] += 1


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


def screen_segment(width: object) -> str:
    """Width buckets: ≥ 1024 Desktop, ≤ 640 Mobile, else Tablet; no numeric width → Other."""
    if not _is_number(width) or not math.isfinite(width):
        return "Other"
    if width >= 1024:
        return "Desktop (>= 1024)"
    if width <= 640:
        return "Mobile (<= 640)"
    return "Tablet Profile"


MAX_SITES = 1_000_000  # D4: no browser is signed in to more sites; larger values are ignored


def sites_value(blob: dict) -> float | None:
    """D4: the first sites field present, numeric (numeric strings coerced), finite and
    between 0 and `MAX_SITES`; else None. A value out of range lets the next field count."""
    for name in SITES_FIELDS:
        value = blob.get(name)
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                continue
        if _is_number(value) and math.isfinite(value) and 0 <= value <= MAX_SITES:
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


def step_events(event: str) -> frozenset[str]:
    """The events a flow step's `event` names: one, or alternatives separated by `|`."""
    return frozenset(name for name in event.split("|") if name)


def general_progress_steps(
    events: set[str], names: list[str], flow: tuple[tuple[str, str], ...]
) -> list[str]:
    """Section 3.2 step 5, with the events of the configured flow: step 0 always; steps 1, 2 and
    4 when any of their events is present; step 3 when an event name *contains* one of its
    events (every `screen.error…` screen)."""
    shown, engaged, error, success = (step_events(event) for _, event in flow[1:5])
    steps = [flow[0][0]]
    if events & shown:
        steps.append(flow[1][0])
    if events & engaged:
        steps.append(flow[2][0])
    if any(marker in name for name in names for marker in error):
        steps.append(flow[3][0])
    if events & success:
        steps.append(flow[4][0])
    return steps


def email_activation_steps(events: set[str], flow: tuple[tuple[str, str], ...]) -> list[str]:
    """SPEC §7: blobs with `user.email_staged`; step 3 also accepts `user.email_confrimed`."""
    if "user.email_staged" not in events:
        return []
    if EMAIL_CONFIRMED_MISSPELLED in events:
        events = events | {"user.email_confirmed"}
    return [step for step, event in flow if event in events]


def outcome_of(events: set[str], new_account: bool, has_new_user_steps: bool,
               progress: tuple[tuple[str, str], ...]) -> str:
    """The five-outcome class; '' for blobs whose dialog was never shown. "Shown" and "engaged"
    are the events of the general-progress steps 1 and 2 (`progress`)."""
    if not events & step_events(progress[1][1]):
        return ""
    if not events & step_events(progress[2][1]):
        return "bounce"
    if "assertion_generated" in events:
        if has_new_user_steps:
            return "fallback"
        if new_account and "screen.provision_primary_user" in events:
            return "idp"
        return "assertion"
    return "fail"


@dataclass(frozen=True)
class Profile:
    """What a blob's event names (and `new_account`) decide: step flags, outcome, EmailType rule.

    Many blobs share one event-name sequence, so rules run once per distinct profile.
    """

    flags: tuple[bool, ...]  # in `step_columns` order
    outcome: str
    forces_fallback: bool  # newUserSteps or passwordResetSteps non-empty


def profile_of(names: tuple[str, ...], new_account: bool, config: Config) -> Profile:
    """Apply SPEC §3.2 steps 3-5, §7 and §4.2 to one event-name sequence."""
    events = set(names)
    flows = config.flows
    new_user = new_user_steps(events, flows["new_user"])
    reset = password_reset_steps(events, flows["password_reset"])
    reached = {
        "new_user": set(new_user),
        "password_reset": set(reset),
        "general_progress": set(general_progress_steps(events, list(names),
                                                       flows["general_progress"])),
        "email_activation": set(email_activation_steps(events, flows["email_activation"])),
    }
    flags = tuple(step in reached.get(flow, ()) for flow in flows for step in config.steps(flow))
    outcome = outcome_of(events, new_account, bool(new_user), flows["general_progress"])
    return Profile(flags, outcome, bool(new_user or reset))


_OTHER = "\x00other"  # stands for a value no segment rule accepts (kept hashable)


def js_truthy(value: object) -> bool:
    """Truthiness as the original (JavaScript) saw it: empty lists and objects are true."""
    if value is None or value is False:
        return False
    if type(value) in (int, float):
        return value != 0
    if type(value) is str:
        return value != ""
    return True


def _number_or_marker(value: object) -> object:
    """Numbers pass, None passes, anything else becomes a hashable 'Other' marker."""
    if value is None:
        return None
    if type(value) in (int, float) and math.isfinite(value):
        return value
    return _OTHER


def _invalid_reason(blob: object) -> str:
    """Why `blob` fails validation, in the words of `kpi.source.check_row`."""
    return check_row({"id": "-", "value": blob}).reason


def stage(blobs: Iterable[dict], config: Config) -> tuple[pd.DataFrame, StageCounts]:
    """One row per blob: date, segments, step flags, outcome, sites.

    Blobs with a missing or empty `event_stream` are skipped, and blobs failing validation
    (SPEC D10) are left out; both are counted in the returned `StageCounts`. Per-blob work is
    reading fields; the rules run once per distinct event sequence and per distinct raw value.
    """
    counts = StageCounts()
    profiles: dict[tuple, int] = {}
    columns: list[list] = [[] for _ in range(9)]
    (days, profile_ids, oses, browsers, widths, emails, langs, apis, email_types) = columns
    sites: list[float] = []
    with gc_paused():
        for blob in blobs:
            # Hot loop: inline type checks; rules run later per distinct value.
            if type(blob) is not dict:
                counts.reject(_invalid_reason(blob))
                continue
            timestamp = blob.get("timestamp")
            if type(timestamp) not in NUMBER_TYPES or not 0 < timestamp < MAX_TIMESTAMP_MS:
                counts.reject(_invalid_reason(blob))
                continue
            stream = blob.get("event_stream")
            if stream is None or (type(stream) is list and not stream):
                counts.skipped_empty_stream += 1
                continue
            names = (
                [pair[0] for pair in stream if type(pair) is list and len(pair) == 2]
                if type(stream) is list else None
            )
            if names is None or len(names) != len(stream):
                counts.reject(_invalid_reason(blob))
                continue
            new_account = blob.get("new_account")
            if type(new_account) is not bool:
                new_account = new_account is not None and js_truthy(new_account)
            key = (tuple(names), new_account)
            try:
                profile = profiles.get(key)
            except TypeError:  # a list or object as an event name
                counts.reject("event_stream item name is not a string")
                continue
            if profile is None:
                if not all(type(name) is str for name in names):
                    counts.reject("event_stream item name is not a string")
                    continue
                profile = profiles[key] = len(profiles)
            days.append(int(timestamp // DAY_MS))
            profile_ids.append(profile)
            agent = blob.get("user_agent")
            if type(agent) is dict:
                value = agent.get("os")
                oses.append(value if type(value) is str else None)
                value = agent.get("browser")
                browsers.append(value if type(value) is str else None)
            else:
                oses.append(None)
                browsers.append(None)
            screen = blob.get("screen_size")
            value = screen.get("width") if type(screen) is dict else None
            widths.append(value if value is None or type(value) is int
                          else _number_or_marker(value))
            value = blob.get("number_emails")
            emails.append(value if value is None or type(value) is int
                          else _number_or_marker(value))
            value = blob.get("lang")
            langs.append(value if type(value) is str else None)
            value = blob.get("rp_api")
            apis.append(value if type(value) is str else None)
            value = blob.get("email_type")
            email_types.append(value if type(value) is str else None)
            for field_name in SITES_FIELDS:
                value = blob.get(field_name)
                if value is not None:
                    break
            if type(value) is int and 0 <= value <= MAX_SITES:
                sites.append(float(value))
            elif value is None:
                sites.append(math.nan)
            else:
                value = sites_value(blob)
                sites.append(math.nan if value is None else value)
    table = [profile_of(names, new_account, config) for names, new_account in profiles]
    return _frame(columns, sites, table, config), counts


def _mapped(values: list, rule) -> pd.Categorical:
    """Apply `rule` once per distinct value."""
    segment = {value: rule(value) for value in set(values)}
    return pd.Categorical([segment[value] for value in values])


def _frame(columns: list[list], sites: list[float], table: list[Profile],
           config: Config) -> pd.DataFrame:
    (days, profile_ids, oses, browsers, widths, emails, langs, apis, email_types) = columns
    segs, aliases = config.segmentations, config.aliases
    ids = np.asarray(profile_ids, dtype=np.int64)
    flag_names = step_columns(config)
    flag_table = np.array([p.flags for p in table], dtype=bool).reshape(len(table),
                                                                          len(flag_names))
    forces_fallback = np.array([p.forces_fallback for p in table], dtype=bool)
    email_type = _mapped(email_types, lambda v: _lookup(v, segs["EmailType"], aliases))
    email_type = np.where(
        forces_fallback[ids] if len(table) else np.zeros(0, bool),
        "Fallback" if "Fallback" in segs["EmailType"] else "Other",
        np.asarray(email_type, dtype=object),
    )
    data = {
        "date": _mapped(days, lambda n: (EPOCH + timedelta(days=n)).isoformat()),
        "OS": _mapped(oses, lambda v: _lookup(v, segs["OS"], aliases)),
        "Browser": _mapped(browsers, lambda v: _lookup(v, segs["Browser"], aliases)),
        "Screen": _mapped(widths, screen_segment),
        "Emails": _mapped(emails, lambda v: "Other" if v is _OTHER else emails_segment(v)),
        "Locale": _mapped(langs, lambda v: locale_segment(v, config)),
        "API": _mapped(apis, lambda v: _lookup(v, segs["API"], aliases)),
        "EmailType": pd.Categorical(email_type),
    }
    flags = flag_table[ids] if len(table) else np.zeros((0, len(flag_names)), bool)
    for index, name in enumerate(flag_names):
        data[name] = flags[:, index]
    outcomes = np.array([p.outcome for p in table], dtype=object)
    data["outcome"] = pd.Categorical(outcomes[ids] if len(table) else [])
    data["sites"] = np.asarray(sites, dtype=float)
    return pd.DataFrame(data, columns=staged_columns(config))
