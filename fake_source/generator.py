"""Deterministic interaction-data blobs: the same (seed, UTC day) always yields the same blobs.

Every blob shape of SPEC §2/§6 is produced (the three template sequences with truncation and
jitter, templates copied per blob), plus new-user staging continuations, password resets,
add-email flows, IdP new accounts, error screens, bounces, empty streams and a small share of
malformed blobs. Volume follows a weekday/weekend rhythm and a slow upward trend.
"""

from __future__ import annotations

import math
import random
from datetime import date, timedelta

from kpi.blob import SITES_FIELDS
from kpi.days import day_start_ms

TEN_MINUTES_MS = 600_000
TREND_EPOCH = date(2026, 1, 1)

# SPEC §6 templates: (event, offset ms). Copied per blob, never mutated.
SEQUENCE_A = (
    ("screen.rp_info", 356), ("screen.authenticate", 388), ("generate_assertion", 20546),
    ("screen.generate_assertion", 20571), ("generate_assertion", 20610),
    ("screen.generate_assertion", 20624), ("assertion_generated", 20696),
    ("assertion_generated", 20753),
)
SEQUENCE_B = (
    ("screen.rp_info", 342), ("user.email_count:1", 359), ("screen.pick_email", 379),
    ("generate_assertion", 3683), ("screen.generate_assertion", 3689),
    ("assertion_generated", 3756),
)
SEQUENCE_C = (
    ("screen.rp_info", 166), ("screen.authenticate", 200), ("screen.set_password", 46965),
    ("user.user_staged", 53585), ("screen.check_registration", 53599),
    ("user.user_confirmed", 71666), ("generate_assertion", 71671),
    ("screen.generate_assertion", 71698), ("assertion_generated", 71781),
)

LANGS = (
    ("en-US", 30), ("en", 8), ("en-GB", 4), ("en_US", 1), ("de", 7), ("de-DE", 3), ("fr", 6),
    ("fr-FR", 1), ("es", 4), ("es-ES", 2), ("pt-BR", 5), ("pt", 1), ("ja", 4), ("pl", 2),
    ("it", 3), ("nl", 2), ("ru", 3), ("tr", 2), ("zh-TW", 2), (None, 1), ("<missing>", 2),
)
OSES = (
    ("Windows NT 6.1", 30), ("Windows NT 6.2", 8), ("Windows NT 6.0", 4), ("Windows NT 5.1", 8),
    ("Windows NT 10.0", 2), ("Macintosh", 14), ("Linux", 6), ("Android", 9), ("iPhone", 7),
    ("iPad", 3), ("iPod", 1), ("FirefoxOS", 2), ("CrOS", 1), ("<missing>", 2),
)
BROWSERS = (
    ("Firefox", 40), ("Chrome", 30), ("MSIE", 12), ("Safari", 12), ("Opera", 3),
    ("<missing>", 1),
)
WIDTHS = (
    (320, 4), (360, 4), (375, 3), (414, 2), (600, 1), (640, 2), (641, 1), (768, 4), (800, 2),
    (1000, 1), (1023, 1), (1024, 6), (1280, 14), (1366, 16), (1440, 8), (1600, 6),
    (1680, 5), (1920, 14), (2560, 3), ("<missing>", 3),
)
RP_APIS = (
    ("get", 10), ("getVerifiedEmail", 6), ("watch_without_onready", 45),
    ("watch_with_onready", 25), ("internal", 8), ("<missing>", 6),
)
NUMBER_EMAILS = ((0, 3), (1, 50), (2, 20), (3, 8), (4, 4), (5, 2), (6, 1), ("<missing>", 12))

# Session kinds and their weights: the mix of a normal day.
KINDS = (
    ("returning_unauthenticated", 24), ("returning_authenticated", 26), ("new_user", 14),
    ("staging_continuation", 4), ("existing_user_password", 4), ("password_reset", 5),
    ("add_email", 4), ("idp_new_account", 5), ("error", 3), ("bounce", 8),
    ("no_dialog", 2), ("empty_stream", 1),
)
# Diurnal rhythm: relative traffic per UTC hour.
HOURS = tuple((h, 4 + 6 * (8 <= h <= 22) + 3 * (13 <= h <= 19)) for h in range(24))


def _pick(rng: random.Random, table: tuple) -> object:
    values, weights = zip(*table, strict=True)
    return rng.choices(values, weights)[0]


def day_volume(seed: int, day: date, per_day: int) -> int:
    """Number of blobs on `day`: `per_day` shaped by weekday, a slow trend and noise."""
    rng = random.Random(f"volume:{seed}:{day.isoformat()}")
    weekday_factor = (1.0, 1.05, 1.05, 1.0, 0.95, 0.7, 0.65)[day.weekday()]
    # A slow, bounded growth (about +4% a month in late 2026), never below 0.75.
    trend = 1.0 + 0.25 * math.tanh(((day - TREND_EPOCH).days - 300) / 200)
    noise = rng.uniform(0.95, 1.05)
    return max(0, round(per_day * weekday_factor * trend * noise))


def _truncated(rng: random.Random, template: tuple) -> list[tuple[str, int]]:
    """SPEC §6: keep the first event; each middle event ends the stream with p = 0.2."""
    kept = [template[0]]
    for event in template[1:]:
        if rng.random() < 0.2:
            break
        kept.append(event)
    return kept


def _jittered(rng: random.Random, events: list[tuple[str, int]]) -> list[list]:
    """Add jitter to every event after the first until offsets strictly increase."""
    stream = [[events[0][0], events[0][1]]]
    for name, offset in events[1:]:
        offset += rng.randint(0, 3332)
        while offset <= stream[-1][1]:
            offset += rng.randint(0, 3332)
        stream.append([name, offset])
    return stream


def _events(rng: random.Random, kind: str) -> tuple[list[tuple[str, int]], dict]:
    """Event names with template offsets for one session of `kind`, plus kind-specific fields."""
    extra: dict = {}
    if kind == "returning_unauthenticated":
        events = _truncated(rng, SEQUENCE_A)
    elif kind == "returning_authenticated":
        events = _truncated(rng, SEQUENCE_B)
    elif kind == "new_user":
        events = _truncated(rng, SEQUENCE_C)
        extra = {"email_type": "secondary", "new_account": True}
    elif kind == "staging_continuation":
        events = [("screen.rp_info", 200), ("staging_continuation", 900)]
        if rng.random() < 0.7:
            events += [("generate_assertion", 1500), ("assertion_generated", 1600)]
        extra = {"email_type": "secondary"}
    elif kind == "existing_user_password":
        events = [
            ("screen.rp_info", 250), ("screen.authenticate", 300),
            ("authenticate.enter_password", 5000), ("screen.set_password", 9000),
        ]
        if rng.random() < 0.8:
            events.append(("assertion_generated", 12000))
    elif kind == "password_reset":
        events = [
            ("screen.rp_info", 300), ("screen.authenticate", 350),
            ("authenticate.enter_password", 4000), ("screen.reset_password", 8000),
            ("user.reset_password_staged", 9000),
        ]
        if rng.random() < 0.75:
            events.append(("user.reset_password_confirmed", 60000))
            if rng.random() < 0.85:
                events.append(("assertion_generated", 61000))
        extra = {"email_type": "secondary"}
    elif kind == "add_email":
        events = [
            ("screen.rp_info", 300), ("screen.pick_email", 400), ("screen.add_email", 3000),
            ("user.email_staged", 7000),
        ]
        if rng.random() < 0.6:
            confirmed = "user.email_confrimed" if rng.random() < 0.1 else "user.email_confirmed"
            events.append((confirmed, 40000))
            if rng.random() < 0.9:
                events.append(("assertion_generated", 41000))
    elif kind == "idp_new_account":
        events = [
            ("screen.rp_info", 200), ("screen.authenticate", 250),
            ("screen.verify_primary_user", 3000), ("screen.provision_primary_user", 6000),
        ]
        if rng.random() < 0.85:
            events.append(("assertion_generated", 9000))
        extra = {"email_type": "primary", "new_account": True}
    elif kind == "error":
        error = rng.choice(("screen.error", "xhr_complete.screen.error_page"))
        events = [("screen.rp_info", 300), ("screen.authenticate", 350), (error, 2000)]
        if rng.random() < 0.5:
            events.insert(2, ("screen.pick_email", 1000))
    elif kind == "bounce":
        events = [("screen.rp_info", 300)]
    elif kind == "no_dialog":
        events = [("generate_assertion", 100)]
    else:
        msg = f"unknown session kind {kind!r}"
        raise ValueError(msg)
    events = [*events, ("window.unload", events[-1][1] + 1500)]
    return events, extra


def _set_optional(blob: dict, key: str, value: object) -> None:
    if value != "<missing>":
        blob[key] = value


def make_blob(rng: random.Random, day_start_ms: int, bad_rate: float = 0.002) -> dict:
    """One blob for a session starting on the day beginning at `day_start_ms`."""
    kind = _pick(rng, KINDS)
    hour = _pick(rng, HOURS)
    offset = hour * 3_600_000 + rng.randrange(3_600_000)
    timestamp = day_start_ms + offset - offset % TEN_MINUTES_MS
    blob: dict = {"timestamp": timestamp, "sample_rate": 1}
    if kind == "empty_stream":
        blob["event_stream"] = rng.choice(([], None))
        if blob["event_stream"] is None:
            del blob["event_stream"]
    else:
        events, extra = _events(rng, kind)
        blob["event_stream"] = _jittered(rng, events)
        blob.update(extra)
    _set_optional(blob, "lang", _pick(rng, LANGS))
    width = _pick(rng, WIDTHS)
    if width != "<missing>":
        aspect = rng.choice((0.56, 0.625, 0.75, 1.78))
        blob["screen_size"] = {"width": width, "height": round(width * aspect)}
    os_name, browser = _pick(rng, OSES), _pick(rng, BROWSERS)
    if os_name != "<missing>" or browser != "<missing>":
        agent: dict = {"version": rng.choice(("22", "23", "24", 10, 9.0, "6.1"))}
        _set_optional(agent, "os", os_name)
        _set_optional(agent, "browser", browser)
        blob["user_agent"] = agent
    _set_optional(blob, "number_emails", _pick(rng, NUMBER_EMAILS))
    _set_optional(blob, "rp_api", _pick(rng, RP_APIS))
    if "email_type" not in blob and rng.random() < 0.6:
        blob["email_type"] = rng.choice(("primary", "secondary"))
    if rng.random() < 0.9:
        blob[rng.choice(SITES_FIELDS)] = min(int(rng.expovariate(0.35)), 40)
    if rng.random() < 0.05:
        blob["number_sites_remembered"] = rng.randint(0, 20)
    if rng.random() < 0.03:
        _oddity(rng, blob)
    if rng.random() < bad_rate:
        _corrupt(rng, blob)
    return blob


def _oddity(rng: random.Random, blob: dict) -> None:
    """A valid blob with a field browsers really sent oddly (degrades by SPEC's rules)."""
    oddity = rng.randrange(9)
    if oddity == 0:
        blob["number_emails"] = rng.choice((2.5, -1, "3", 2.0, True, None))
    elif oddity == 1:
        for name in SITES_FIELDS:
            blob.pop(name, None)
        blob["number_sites_logged_in"] = 0
        blob["number_sites_signed_in"] = rng.randint(1, 9)
    elif oddity == 2:
        for name in SITES_FIELDS:
            blob.pop(name, None)
        blob[rng.choice(SITES_FIELDS)] = rng.choice(("4", "2.5", "many", ""))
    elif oddity == 3:
        blob["screen_size"] = {"width": rng.choice(("1024", None, 640.5)), "height": 1}
    elif oddity == 4:
        blob["lang"] = rng.choice(("EN-us", "de_DE", "pt-PT", "es-419", ""))
    elif oddity == 5:
        blob["user_agent"] = rng.choice(("Mozilla/5.0", None, {"os": 7}))
    elif oddity == 6:
        blob["new_account"] = rng.choice(("yes", 1, 0, "", None))
    elif oddity == 7:
        blob["email_type"] = rng.choice(("PRIMARY", "", 1))
    else:
        blob["rp_api"] = rng.choice(("watch", "Watch", None))


def _corrupt(rng: random.Random, blob: dict) -> None:
    """Make the blob fail validation the way real browsers' bugs did (SPEC D10)."""
    damage = rng.choice(("stream_not_list", "pair_not_list", "name_not_string"))
    if damage == "stream_not_list":
        blob["event_stream"] = "screen.rp_info,window.unload"
    elif damage == "pair_not_list":
        blob["event_stream"] = [["screen.rp_info", 10], "window.unload"]
    else:
        blob["event_stream"] = [[42, 10], ["window.unload", 300]]


def blobs_for_day(
    seed: int, day: date, per_day: int, bad_rate: float = 0.002
) -> list[tuple[str, dict]]:
    """All (id, blob) pairs of `day`, ascending by (timestamp, id). Pure in (seed, day)."""
    rng = random.Random(f"blobs:{seed}:{day.isoformat()}")
    start = day_start_ms(day)
    pairs = []
    for _ in range(day_volume(seed, day, per_day)):
        doc_id = f"{rng.getrandbits(128):032x}"
        pairs.append((doc_id, make_blob(rng, start, bad_rate)))
    pairs.sort(key=lambda pair: (pair[1]["timestamp"], pair[0]))
    return pairs


def history_days(last_day: date, days: int) -> list[date]:
    """The `days` UTC days ending with `last_day`, oldest first."""
    return [last_day - timedelta(days=offset) for offset in range(days - 1, -1, -1)]
