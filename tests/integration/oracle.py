"""An independent, deliberately naive reading of SPEC.md: blob by blob, dict by dict.

It shares no code with `kpi/` (only the spec), so comparing its numbers with the published
files checks the vectorised pipeline end to end.
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import UTC, datetime

LISTS = {
    "OS": ["Windows 8", "Windows 7", "Windows Vista", "Windows XP", "Macintosh", "Linux",
           "Android", "iOS", "FirefoxOS"],
    "Browser": ["Firefox", "Chrome", "MSIE", "Safari"],
    "Locale": ["English", "Spanish", "Portuguese - Brazil", "Polish", "Dutch", "Italian",
               "French", "German", "Russian", "Turkish"],
    "API": ["get", "getVerifiedEmail", "watch", "watch with onready", "internal"],
    "EmailType": ["IdP", "Fallback"],
}
ALIASES = {
    "Windows NT 6.2": "Windows 8", "Windows NT 6.1": "Windows 7", "Windows NT 6.0": "Windows Vista",
    "Windows NT 5.1": "Windows XP", "iPod": "iOS", "iPhone": "iOS", "iPad": "iOS",
    "watch_without_onready": "watch", "watch_with_onready": "watch with onready",
    "en": "English", "es": "Spanish", "pt-BR": "Portuguese - Brazil", "de": "German",
    "fr": "French", "it": "Italian", "pl": "Polish", "tr": "Turkish", "ru": "Russian",
    "nl": "Dutch", "primary": "IdP", "secondary": "Fallback",
}
NEW_USER = [("1 - Enter email", "screen.set_password"), ("2 - Choose password", "user.user_staged"),
            ("3 - Email verified", "user.user_confirmed"),
            ("4 - Logged in (assertion generated)", "assertion_generated")]
RESET = [("1 - Begin password reset", "user.reset_password_staged"),
         ("2 - New password confirmed", "user.reset_password_confirmed"),
         ("3 - Logged in (assertion generated)", "assertion_generated")]
PROGRESS = ["0 - Blob sent", "1 - Dialog shown", "2 - User engaged", "3 - Error screen",
            "4 - Logged in (assertion generated)"]
ACTIVATION = ["1 - Add email", "2 - Verification sent", "3 - Email confirmed",
              "4 - Logged in (assertion generated)"]
ENGAGED = {"screen.set_password", "screen.pick_email", "screen.provision_primary_user",
           "screen.verify_primary_user", "authenticate.enter_password"}
SEGMENTED = ["OS", "Browser", "Screen", "Emails", "Locale", "API", "EmailType"]


def pick(raw, name):
    if isinstance(raw, str) and ALIASES.get(raw, raw) in LISTS[name]:
        return ALIASES.get(raw, raw)
    return "Other"


def is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def segments(blob, fallback):
    ua = blob.get("user_agent") if isinstance(blob.get("user_agent"), dict) else {}
    width = (blob.get("screen_size") or {}).get("width") if isinstance(
        blob.get("screen_size"), dict) else None
    if not is_num(width):
        screen = "Other"
    else:
        screen = ("Desktop (>= 1024)" if width >= 1024 else
                  "Mobile (<= 640)" if width <= 640 else "Tablet Profile")
    n = blob.get("number_emails")
    if n is None:
        emails = "Unknown"
    elif is_num(n) and n >= 0 and n == int(n):
        emails = "3+" if n >= 3 else str(int(n))
    else:
        emails = "Other"
    lang = blob.get("lang")
    locale = pick(lang, "Locale")
    if locale == "Other" and isinstance(lang, str):
        locale = pick(lang.replace("_", "-").split("-")[0].lower(), "Locale")
    return {
        "OS": pick(ua.get("os"), "OS"), "Browser": pick(ua.get("browser"), "Browser"),
        "Screen": screen, "Emails": emails, "Locale": locale,
        "API": pick(blob.get("rp_api"), "API"),
        "EmailType": "Fallback" if fallback else pick(blob.get("email_type"), "EmailType"),
    }


def sites_of(blob):
    for name in ("number_sites_logged_in", "sites_signed_in", "number_sites_signed_in"):
        v = blob.get(name)
        if isinstance(v, str):
            try:
                v = float(v)
            except ValueError:
                continue
        if is_num(v):
            return float(v)
    return None


def fold(count, sites_values, min_segment_count):
    """Each (day, segmentation, segment) with fewer than `min_segment_count` blobs added to
    (day, segmentation, Other), Total and Other excepted (KPI_MIN_SEGMENT_COUNT)."""
    folded, values = defaultdict(lambda: defaultdict(float)), defaultdict(list)
    for key, c in count.items():
        day, segmentation, segment = key
        if segmentation != "Total" and segment != "Other" and c["blobs"] < min_segment_count:
            segment = "Other"
        for name, number in c.items():
            folded[(day, segmentation, segment)][name] += number
        values[(day, segmentation, segment)] += sites_values.get(key, [])
    return folded, values


def compute(blobs, min_segment_count=0):
    """{report: {(date, segmentation, segment, measure): (value, numerator, denominator)}},
    with segments of fewer than `min_segment_count` blobs on a day folded into Other."""
    count = defaultdict(lambda: defaultdict(float))
    sites_values = defaultdict(list)
    for blob in blobs:
        names = [e[0] for e in blob["event_stream"]]
        ev = set(names)
        if "staging_continuation" in ev:
            nu = [NEW_USER[2][0], NEW_USER[3][0]] if "assertion_generated" in ev else []
        elif "screen.set_password" not in ev or "authenticate.enter_password" in ev:
            nu = []
        else:
            nu = [s for s, e in NEW_USER if e in ev]
        pr = [s for s, e in RESET if e in ev] if "user.reset_password_staged" in ev else []
        gp = [PROGRESS[0]]
        gp += [PROGRESS[1]] if "screen.rp_info" in ev else []
        gp += [PROGRESS[2]] if ev & ENGAGED else []
        gp += [PROGRESS[3]] if any("screen.error" in n for n in names) else []
        gp += [PROGRESS[4]] if "assertion_generated" in ev else []
        ea = []
        if "user.email_staged" in ev:
            ea = [ACTIVATION[i] for i, e in enumerate(
                ["screen.add_email", "user.email_staged", None, "assertion_generated"]) if e in ev]
            if {"user.email_confirmed", "user.email_confrimed"} & ev:
                ea.append(ACTIVATION[2])
        outcome = None
        if "screen.rp_info" in ev:
            if not ev & ENGAGED:
                outcome = "bounce"
            elif "assertion_generated" in ev and nu:
                outcome = "fallback"
            elif ("assertion_generated" in ev and blob.get("new_account")
                  and "screen.provision_primary_user" in ev):
                outcome = "idp"
            elif "assertion_generated" in ev:
                outcome = "assertion"
            else:
                outcome = "fail"
        day = datetime.fromtimestamp(blob["timestamp"] // 1000, tz=UTC).date().isoformat()
        seg = segments(blob, bool(nu or pr))
        sites = sites_of(blob)
        for segmentation, segment in [("Total", "Total"), *seg.items()]:
            c = count[(day, segmentation, segment)]
            c["blobs"] += 1
            for s in nu:
                c["nu" + s] += 1
            for s in pr:
                c["pr" + s] += 1
            for s in gp:
                c["gp" + s] += 1
            for s in ea:
                c["ea" + s] += 1
            if outcome:
                c[outcome] += 1
            c["sites_sum"] += sites or 0
            if sites is not None:
                sites_values[(day, segmentation, segment)].append(sites)

    count, sites_values = fold(count, sites_values, min_segment_count)

    def ratio(n, d):
        return (n / d if d else None, n, d)

    out = defaultdict(dict)
    for key, c in count.items():
        total_only = key[1] == "Total"
        n_success = c["idp"] + c["fallback"]
        d = n_success + c["bounce"] + c["fail"]
        values = sorted(sites_values.get(key, []))
        if values:
            mid = len(values) // 2
            median = values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
        else:
            median = None
        for s, _ in NEW_USER:
            out["new_user"][(*key, s)] = (c["nu" + s], None, None)
        out["new_user_success"][(*key, "value")] = ratio(n_success, d)
        out["new_user_per_day"][(*key, "value")] = (n_success, None, None)
        out["new_user_bounce"][(*key, "value")] = ratio(c["bounce"], d)
        out["sites"][(*key, "value")] = ratio(c["sites_sum"], c["blobs"])
        out["sites_median"][(*key, "value")] = (median, None, None)
        out["assertions"][(*key, "value")] = (c["blobs"], None, None)
        if not total_only:
            continue
        for s, _ in NEW_USER:
            out["new_user_time"][(*key, s)] = ratio(c["nu" + s], c["nu" + NEW_USER[0][0]])
        for s, _ in RESET:
            out["password_reset"][(*key, s)] = ratio(c["pr" + s], c["pr" + RESET[0][0]])
        for s in PROGRESS:
            out["general_progress_time"][(*key, s)] = ratio(c["gp" + s], c["blobs"])
        shown, engaged = c["gp" + PROGRESS[1]], c["gp" + PROGRESS[2]]
        out["bounce_rate"][(*key, "value")] = (
            1 - engaged / shown if shown else None, shown - engaged, shown)
        for s in ACTIVATION:
            out["email_activation"][(*key, s)] = (c["ea" + s], None, None)
    return out
