"""A hostile corpus, end to end: served by the real fake KPIggybank, back-filled by the real
pipeline into the dev CouchDB, published, and every page loaded in headless Chromium.

Each input class states its outcome by SPEC D3/D4/D10/D12 (aggregated, skipped as an empty
stream, degraded to Other/Unknown/0, or quarantined with its reason). The test asserts that the
day completes, that the manifest and `data_quality.csv` equal the counts computed here from those
statements, that every quarantined row carries its reason, that the segments and sites values of
the aggregated blobs are what the rules say, and that no payload ever runs in the browser (no
dialog, no console error, no flag set by a payload). The configuration carries payloads too: a
Locale segment and its aliases, and milestone names.
"""

from __future__ import annotations

import csv
import json
import statistics
import threading
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import date
from urllib.parse import quote

import pytest

from kpi.backfill import backfill
from kpi.config import PRODUCTION_CONFIG
from kpi.couch import MANIFESTS, QUARANTINE, RAW, CouchStore
from kpi.days import day_start_ms
from kpi.serve import make_server
from kpi.source import BAD_TIMESTAMP, usable_id
from kpi.views import SEGMENTED
from tests.browser.test_site import CHROMIUM, CHROMIUM_ARGS, PAGE_FILES, close, open_page

pytestmark = [pytest.mark.browser, pytest.mark.integration]

DAY, PLAIN_DAY = date(2026, 10, 2), date(2026, 10, 3)
T = day_start_ms(DAY) + 10 * 3_600_000  # 10:00, the second 6-hour fetch window
T_LATE = day_start_ms(DAY) + 20 * 3_600_000  # 20:00, the fourth window
HUGE = (2**64, 1e308, -0.0)

# Every payload sets the same flag and opens a dialog if it ever runs.
RUN = "window.__hostile=1;alert(1)"
PAYLOADS = (
    f'<img src=x onerror="{RUN}">',
    f"</script><script>{RUN}</script>",
    f'"><svg onload="{RUN}">',
    f"javascript:{RUN}",
    f"{{{{ {RUN} }}}}<!--",
)
KLINGON = f'Klingon <img src=x onerror="{RUN}"> </script><script>{RUN}</script>'
KLINGON_ALIAS = f"tlh</script><script>{RUN}</script>"
MILESTONES = [[f'Release <img src=x onerror="{RUN}"> & "co"', DAY.isoformat()],
              [f"</script><script>{RUN}</script>", PLAIN_DAY.isoformat()]]

STREAM = [["screen.rp_info", 100], ["screen.pick_email", 350], ["assertion_generated", 900],
          ["window.unload", 1200]]
BASE = {
    "timestamp": T, "event_stream": STREAM, "lang": "de",
    "screen_size": {"width": 1280, "height": 800},
    "user_agent": {"os": "Linux", "browser": "Firefox", "version": "23"},
    "number_emails": 1, "number_sites_signed_in": 3, "rp_api": "get", "email_type": "primary",
    "new_account": False, "sample_rate": 1,
}
BASE_SEGMENTS = {"OS": "Linux", "Browser": "Firefox", "Screen": "Desktop (>= 1024)",
                 "Emails": "1", "Locale": "German", "API": "get", "EmailType": "IdP"}
ALL_OTHER = {"OS": "Other", "Browser": "Other", "Locale": "Other", "API": "Other",
             "EmailType": "Other"}
NOT_A_ROW = "row is not an object with a string id"
NOT_A_PAIR = "event_stream item is not a [name, offset] pair"
NOT_A_NAME = "event_stream item name is not a string"
DROP = object()  # marks a field removed from the base blob


@dataclass
class Case:
    """One input class: the rows delivered (key ms, row) and what SPEC says becomes of them."""

    name: str
    rows: list = field(default_factory=list)
    stored: set = field(default_factory=set)  # KPIggybank ids kept in the raw database
    duplicate: int = 0
    skipped: int = 0
    rejected: Counter = field(default_factory=Counter)  # reason → rows quarantined
    aggregated: list = field(default_factory=list)  # (segments, sites value or None) per blob
    last_blob: dict = field(default_factory=dict)  # id → the blob the raw document must hold


def blob(**changes) -> dict:
    """The base blob with fields changed (`DROP` removes one)."""
    result = {**BASE, **changes}
    return {k: v for k, v in result.items() if v is not DROP}


def row(row_id: str, value: object, key: int = T) -> tuple[int, dict]:
    document = {"_id": row_id, "_rev": "1-0", **value} if isinstance(value, dict) else value
    return key, {"id": row_id, "key": key, "value": document}


class Corpus:
    def __init__(self) -> None:
        self.cases: list[Case] = []
        self._n = 0

    def _id(self, label: str) -> str:
        self._n += 1
        return f"h{self._n:03d}-{label}"

    def aggregated(self, name: str, segments: dict | None = None, sites: float | None = 3.0,
                   kept_as_is: bool = True, **changes) -> None:
        row_id = self._id(name)
        value = blob(**changes)
        self.cases.append(Case(name, [row(row_id, value)], stored={row_id},
                               aggregated=[({**BASE_SEGMENTS, **(segments or {})}, sites)],
                               last_blob={row_id: value} if kept_as_is else {}))

    def skipped(self, name: str, **changes) -> None:
        row_id = self._id(name)
        self.cases.append(Case(name, [row(row_id, blob(**changes))], stored={row_id},
                               skipped=1))

    def rejected(self, name: str, reason: str, value: dict) -> None:
        self.cases.append(Case(name, [row(self._id(name), value)],
                               rejected=Counter({reason: 1})))

    def rejected_row(self, name: str, reason: str, whole_row: object) -> None:
        self.cases.append(Case(name, [(T, whole_row)], rejected=Counter({reason: 1})))

    def add(self, case: Case) -> None:
        self.cases.append(case)


def build_corpus() -> list[Case]:
    c = Corpus()
    # Rows that are not objects, or carry no usable id or blob (D10: quarantined).
    c.rejected_row("row is a list", NOT_A_ROW, [1, "two", {"three": 3}])
    c.rejected_row("row is a string", NOT_A_ROW, f"row {PAYLOADS[0]}")
    c.rejected_row("row is a number", NOT_A_ROW, 42)
    c.rejected_row("row is null", NOT_A_ROW, None)
    c.rejected_row("row without id", NOT_A_ROW, {"key": T, "value": blob()})
    c.rejected_row("row with a numeric id", NOT_A_ROW, {"id": 7, "key": T, "value": blob()})
    c.rejected_row("row with an empty id", NOT_A_ROW, {"id": "", "key": T, "value": blob()})
    c.rejected_row("value is a list", "blob is not a JSON object", {
        "id": "h-value-list", "key": T, "value": [blob()]})
    c.rejected_row("value is a string", "blob is not a JSON object", {
        "id": "h-value-string", "key": T, "value": PAYLOADS[1]})
    # Timestamps (D10: a number > 0; the project also requires ms before year 10000, on the
    # requested day).
    c.rejected("timestamp missing", BAD_TIMESTAMP, blob(timestamp=DROP))
    c.rejected("timestamp null", BAD_TIMESTAMP, blob(timestamp=None))
    c.rejected("timestamp a numeric string", BAD_TIMESTAMP, blob(timestamp=str(T)))
    c.rejected("timestamp true", BAD_TIMESTAMP, blob(timestamp=True))
    c.rejected("timestamp negative", BAD_TIMESTAMP, blob(timestamp=-T))
    c.rejected("timestamp zero", BAD_TIMESTAMP, blob(timestamp=0))
    c.rejected("timestamp -0.0", BAD_TIMESTAMP, blob(timestamp=-0.0))
    c.rejected("timestamp 1e308", BAD_TIMESTAMP, blob(timestamp=1e308))
    c.rejected("timestamp 2**64", BAD_TIMESTAMP, blob(timestamp=2**64))
    c.rejected("timestamp an object", BAD_TIMESTAMP, blob(timestamp={"ms": T}))
    c.rejected("timestamp in seconds", "timestamp outside the requested day",
               blob(timestamp=T // 1000))
    # event_stream (D10: present but not a list of [name, offset] pairs with a string name).
    c.rejected("event_stream a string", "event_stream is not a list",
               blob(event_stream="screen.rp_info,window.unload"))
    c.rejected("event_stream an object", "event_stream is not a list",
               blob(event_stream={"screen.rp_info": 1}))
    c.rejected("event_stream a number", "event_stream is not a list", blob(event_stream=2**64))
    for label, item in (("a bare name", "screen.rp_info"), ("one element", ["screen.rp_info"]),
                        ("three elements", ["screen.rp_info", 1, 2]),
                        ("an object", {"screen.rp_info": 1}), ("null", None)):
        c.rejected(f"event_stream item {label}", NOT_A_PAIR,
                   blob(event_stream=[*STREAM[:2], item]))
    for label, name in (("number", 2**64), ("null", None), ("list", ["screen.rp_info"]),
                        ("object", {"name": "screen.rp_info"}), ("boolean", True)):
        c.rejected(f"event name a {label}", NOT_A_NAME,
                   blob(event_stream=[[name, 5], *STREAM]))
    # Missing or empty streams are stored but skipped (D10, SPEC 3.2 step 1).
    c.skipped("event_stream missing", event_stream=DROP)
    c.skipped("event_stream null", event_stream=None)
    c.skipped("event_stream empty", event_stream=[])
    # Big inputs are aggregated like any other.
    c.aggregated("20,000-event stream",
                 event_stream=[[name, n] for n in range(5000) for name, _ in STREAM])
    long = "x" * 100_000
    c.aggregated("100 KB strings in every string field", segments=ALL_OTHER, lang=long,
                 user_agent={"os": long, "browser": long, "version": long}, rp_api=long,
                 email_type=long, event_stream=[*STREAM, [long, 1300]])
    # Objects and lists where strings or numbers belong degrade (D3, D10).
    c.aggregated("objects and lists where strings belong", segments={
        **ALL_OTHER, "Screen": "Other", "Emails": "Other"}, sites=None,
        lang={"tag": "de"}, user_agent={"os": {"name": "Linux"}, "browser": ["Firefox"]},
        rp_api={"api": "get"}, email_type=["primary"], screen_size={"width": {"px": 1280}},
        number_emails={"n": 1}, number_sites_signed_in=[3])
    c.aggregated("user_agent a string, screen_size a string",
                 segments={"OS": "Other", "Browser": "Other", "Screen": "Other"},
                 user_agent="Mozilla/5.0 (X11; Linux)", screen_size="1280x800")
    c.aggregated("user_agent a list", segments={"OS": "Other", "Browser": "Other"},
                 user_agent=["Linux", "Firefox"])
    # NUL and right-to-left override characters: no alias matches, so Other.
    c.aggregated("NUL and RLO characters", segments=ALL_OTHER, lang="de\u0000",
                 user_agent={"os": "Linux\u202e", "browser": "\u202eFirefox", "version": "\u0000"},
                 rp_api="get\u0000", email_type="\u202eprimary",
                 event_stream=[["\u0000", 1], *STREAM, ["\u202e\u0000", 2]])
    nul_id = c._id("id-\u0000-\u202e-</script>")
    c.add(Case("NUL, RLO and markup in the row id", [row(nul_id, blob())], stored={nul_id},
               aggregated=[(BASE_SEGMENTS, 3.0)], last_blob={nul_id: blob()}))
    # Numbers as strings: D3 makes them Other; D4 coerces a numeric sites string.
    c.aggregated("numbers as strings", segments={"Emails": "Other", "Screen": "Other"},
                 sites=7.0, number_emails="2", screen_size={"width": "1280", "height": "800"},
                 number_sites_signed_in="7", new_account="false")
    c.aggregated("non-finite numeric strings fall through", sites=4.0,
                 number_sites_logged_in="Infinity", sites_signed_in="NaN",
                 number_sites_signed_in="4")
    c.aggregated("1e400 as a string falls through", sites=None,
                 number_sites_logged_in="1e400", number_sites_signed_in=DROP)
    # Huge numbers in every numeric field (D3: integral ≥ 0 is a count; D4: out of range
    # falls through; -0.0 is 0).
    for value in HUGE:
        negative = value == 0
        c.aggregated(f"{value!r} in every numeric field", segments={
            "Emails": "0" if negative else "3+",
            "Screen": "Mobile (<= 640)" if negative else "Desktop (>= 1024)"},
            sites=0.0 if negative else None,
            number_emails=value, screen_size={"width": value, "height": value},
            number_sites_logged_in=value, sites_signed_in=value, number_sites_signed_in=value,
            number_sites_remembered=value, sample_rate=value, new_account=value,
            user_agent={"os": "Linux", "browser": "Firefox", "version": value},
            event_stream=[[name, value] for name, _ in STREAM])
    # Valid JSON a fast decoder refuses: a number beyond a double (read as infinity) and an
    # unpaired surrogate escape (stored with `?` for it).
    c.rejected("timestamp 1e400", BAD_TIMESTAMP, blob(timestamp=float("inf")))
    c.aggregated("1e400 in every other numeric field", kept_as_is=False, segments={
        "Emails": "Other", "Screen": "Other"}, sites=6.0, number_emails=float("inf"),
        screen_size={"width": float("inf"), "height": float("-inf")},
        number_sites_logged_in=float("inf"), sites_signed_in=6)
    c.rejected("timestamp a 400-digit integer", BAD_TIMESTAMP, blob(timestamp=10**400))
    c.aggregated("a 400-digit integer in every other numeric field", kept_as_is=False,
                 segments={"Emails": "Other", "Screen": "Other"}, sites=6.0,
                 number_emails=10**400, screen_size={"width": 10**400, "height": -(10**400)},
                 number_sites_logged_in=10**400, sites_signed_in=6)
    c.rejected_row("an id with an unpaired surrogate", NOT_A_ROW,
                   {"id": "h-\ud800-id", "key": T, "value": blob()})
    c.aggregated("unpaired surrogates in string fields", kept_as_is=False,
                 segments={"Locale": "Other", "OS": "Other"}, lang="de\ud800",
                 user_agent={"os": "\udc00Linux", "browser": "Firefox", "version": "23"},
                 event_stream=[*STREAM, ["\ud83d", 1300]])
    c.aggregated("an out-of-range sites value lets the next field count", sites=5.0,
                 number_sites_logged_in=1e20, sites_signed_in=-1, number_sites_signed_in=5)
    c.aggregated("emails: a negative count", segments={"Emails": "Other"},
                 number_emails=-2)
    c.aggregated("emails: null is Unknown", segments={"Emails": "Unknown"}, number_emails=None)
    # Nesting deeper than a JSON encoder follows: the blob is stored with that part cut.
    deep: list = []
    for _ in range(300):
        deep = [deep]
    c.aggregated("an ignored field nested 300 levels deep", kept_as_is=False, sample_rate=deep)
    c.rejected("an event name nested 300 levels deep", NOT_A_NAME,
               blob(event_stream=[[deep, 1], *STREAM]))
    # CouchDB's reserved fields inside a blob are data, not instructions.
    c.aggregated("CouchDB reserved fields in the blob", _deleted=True,
                 _attachments={"x": {"data": "eA=="}}, _conflicts=["1-a"])
    # Markup in every string field: it never matches a segment and is never published.
    for payload in PAYLOADS:
        c.aggregated(f"markup {payload[:12]!r} in every string field", sites=None,
                     segments={**ALL_OTHER, "Screen": "Other", "Emails": "Other"},
                     lang=payload, rp_api=payload, email_type=payload,
                     user_agent={"os": payload, "browser": payload, "version": payload},
                     screen_size={"width": payload, "height": payload},
                     number_emails=payload, number_sites_signed_in=payload,
                     event_stream=[[payload, 1], *STREAM])
    # Markup that the configuration aliases to a segment named with markup (it is published).
    c.aggregated("a lang aliased to a segment named with markup",
                 segments={"Locale": KLINGON}, lang=KLINGON_ALIAS)
    c.aggregated("a lang whose primary subtag is aliased to it", segments={"Locale": KLINGON},
                 lang="tlh-KX")
    # Repeated ids (D12: n deliveries count once in their class and n − 1 times as duplicate,
    # whatever the validity; the last delivery's content wins).
    same = c._id("same-content")
    c.add(Case("an id delivered three times, same content", [row(same, blob())] * 3,
               stored={same}, duplicate=2, aggregated=[(BASE_SEGMENTS, 3.0)],
               last_blob={same: blob()}))
    late = c._id("other-content-two-windows")
    c.add(Case("an id in two windows with other content", [
        row(late, blob()), row(late, blob(lang="fr", timestamp=T_LATE), key=T_LATE)],
        stored={late}, duplicate=1, aggregated=[({**BASE_SEGMENTS, "Locale": "French"}, 3.0)],
        last_blob={late: blob(lang="fr", timestamp=T_LATE)}))
    near = c._id("other-content-one-window")
    c.add(Case("an id twice in one window with other content", [
        row(near, blob(number_sites_signed_in=9)), row(near, blob(lang="es"))],
        stored={near}, duplicate=1, aggregated=[({**BASE_SEGMENTS, "Locale": "Spanish"}, 3.0)],
        last_blob={near: blob(lang="es")}))
    turned_bad = c._id("valid-then-invalid")
    c.add(Case("an id valid, then invalid", [
        row(turned_bad, blob()), row(turned_bad, blob(event_stream="oops"), key=T_LATE)],
        duplicate=1, rejected=Counter({"event_stream is not a list": 1})))
    turned_good = c._id("invalid-then-valid")
    c.add(Case("an id invalid, then valid", [
        row(turned_good, blob(timestamp="soon")), row(turned_good, blob())],
        stored={turned_good}, duplicate=1, aggregated=[(BASE_SEGMENTS, 3.0)],
        last_blob={turned_good: blob()}))
    bad_thrice = c._id("invalid-three-times")
    c.add(Case("an invalid row delivered three times", [row(bad_thrice, blob(timestamp=-1))] * 3,
               duplicate=2, rejected=Counter({BAD_TIMESTAMP: 1})))
    c.add(Case("a row that is not an object, delivered twice", [(T, [PAYLOADS[2]])] * 2,
               duplicate=1, rejected=Counter({NOT_A_ROW: 1})))
    return c.cases


CASES = build_corpus()
PLAIN_ROWS = [row(f"plain-{n}", blob(timestamp=day_start_ms(PLAIN_DAY) + n * 600_000),
                  key=day_start_ms(PLAIN_DAY) + n * 600_000) for n in range(6)]


def hostile_config(path) -> str:
    raw = json.loads(PRODUCTION_CONFIG.read_text(encoding="utf-8"))
    raw["segmentations"]["Locale"].append(KLINGON)
    raw["aliases"]["tlh"] = KLINGON
    raw["aliases"][KLINGON_ALIAS] = KLINGON
    raw["milestones"] = MILESTONES
    path.write_text(json.dumps(raw), encoding="utf-8")
    return str(path)


@pytest.fixture
def fake_app():
    """A fake KPIggybank with no generated history: it serves exactly the corpus, failing a
    seeded third of the requests."""
    from fake_source import create_app

    # a third of the requests fail (5xx, truncated and garbage bodies, timeouts, disconnects):
    # the counts must still come out exact, repeats and all
    app = create_app(days=0, last_day=PLAIN_DAY, fault_rate=0.33, slow_seconds=1.5)
    app.state.store.add_rows([r for case in CASES for r in case.rows] + PLAIN_ROWS)
    return app


def read_csv(folder, report: str) -> list[dict]:
    with open(folder / "data" / f"{report}.csv", encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def expected_quality() -> dict:
    stored = set().union(*(case.stored for case in CASES))
    rejected = sum((case.rejected for case in CASES), Counter())
    quality = {
        "fetched": sum(len(case.rows) for case in CASES),
        "stored": len(stored),
        "duplicate": sum(case.duplicate for case in CASES),
        "skipped_empty_stream": sum(case.skipped for case in CASES),
        "rejected_invalid": sum(rejected.values()),
        "aggregated": sum(len(case.aggregated) for case in CASES),
    }
    return quality, rejected


def test_the_corpus_is_broad():
    assert len(CASES) >= 25
    outcomes = Counter()
    for case in CASES:
        outcomes.update(["aggregated"] * len(case.aggregated) + ["skipped"] * case.skipped
                        + ["duplicate"] * case.duplicate + list(case.rejected.elements()))
    assert outcomes["aggregated"] and outcomes["skipped"] and outcomes["duplicate"]
    assert len([o for o in outcomes if o not in ("aggregated", "skipped", "duplicate")]) >= 6


def test_hostile_corpus_end_to_end(settings, fake_app, tmp_path):
    # folding off: every hostile segment name must reach the pages, and the counts per segment
    settings = replace(settings, config_path=hostile_config(tmp_path / "hostile.json"),
                       min_segment_count=0, retry_attempts=10)
    results = backfill(DAY, PLAIN_DAY, settings, progress=False)
    injected = [kind for kind in fake_app.state.faults.injected if kind]
    assert len(set(injected)) >= 4, injected  # several kinds of fault were survived

    quality, reasons = expected_quality()
    assert quality["fetched"] == (quality["stored"] + quality["rejected_invalid"]
                                  + quality["duplicate"])
    by_day = {result["day"]: result for result in results}
    assert {k: by_day[DAY.isoformat()][k] for k in quality} == quality
    assert by_day[PLAIN_DAY.isoformat()]["aggregated"] == len(PLAIN_ROWS)

    store = CouchStore(settings)
    manifest = store.get(MANIFESTS, DAY.isoformat())
    assert manifest["complete"] is True
    assert {k: manifest[k] for k in quality if k != "aggregated"} == {
        k: v for k, v in quality.items() if k != "aggregated"}
    assert manifest["rejected_reasons"] == dict(reasons)
    quarantined = list(store.day_docs(QUARANTINE, DAY))
    assert Counter(doc["reason"] for doc in quarantined) == reasons
    for case in CASES:  # a quarantined row with an id is found under it, with its reason
        for reason in case.rejected:
            ids = {r["id"] for _, r in case.rows if isinstance(r, dict) and usable_id(r.get("id"))}
            for row_id in ids:
                doc = store.get(QUARANTINE, f"{DAY.isoformat()}:{row_id}")
                assert doc is not None and doc["reason"] == reason, case.name
    raw = {doc["kpiggybank_id"]: doc["blob"] for doc in store.day_docs(RAW, DAY)}
    assert len(raw) == quality["stored"]
    for case in CASES:
        for row_id, expected in case.last_blob.items():
            assert raw[row_id] == json.loads(json.dumps(expected)), case.name

    folder = settings.site_dir
    published = {r["measure"]: int(r["value"]) for r in read_csv(folder, "data_quality")
                 if r["date"] == DAY.isoformat()}
    assert published == quality

    segments = Counter()
    sites = []
    for case in CASES:
        for blob_segments, value in case.aggregated:
            segments["Total", "Total"] += 1
            segments.update(blob_segments.items())
            sites.append(value)
    attempts = {(r["segmentation"], r["segment"]): int(r["value"])
                for r in read_csv(folder, "assertions") if r["date"] == DAY.isoformat()}
    assert attempts == dict(segments)
    mean = next(r for r in read_csv(folder, "sites")
                if r["date"] == DAY.isoformat() and r["segmentation"] == "Total")
    with_value = [v for v in sites if v is not None]
    assert float(mean["numerator"]) == sum(with_value)
    assert int(mean["denominator"]) == len(sites)
    median = next(r for r in read_csv(folder, "sites_median")
                  if r["date"] == DAY.isoformat() and r["segmentation"] == "Total")
    assert float(median["value"]) == statistics.median(with_value)

    server = make_server(folder, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        _every_page_is_inert(base)
    finally:
        server.shutdown()


def _every_page_is_inert(base: str) -> None:
    from playwright.sync_api import sync_playwright

    shown = f"&show={quote(KLINGON)}&show=Other&show=German"
    urls = [f"{base}/{name}" for name in PAGE_FILES]
    urls += [f"{base}/{report}.html?seg=Locale{shown}" for report in sorted(SEGMENTED)]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            _listeners_catch_a_payload_that_runs(browser, base)
            markup_shown = Counter()
            for url in urls:
                opened = open_page(browser, url)
                page = opened.page
                assert page.evaluate("window.__hostile") is None, url
                text = page.evaluate("document.body.innerText")
                markup_shown.update(name for name, _ in MILESTONES if name in text)
                markup_shown[KLINGON] += KLINGON in text
                assert opened.dialogs == [], url
                assert opened.problems == [], url
                close(opened)
            # the payloads did reach the pages, shown as text
            assert markup_shown[KLINGON] and markup_shown[MILESTONES[0][0]], markup_shown
        finally:
            browser.close()


def _listeners_catch_a_payload_that_runs(browser, base: str) -> None:
    """The checks above can fail: the same payload, put into a page as markup, is caught."""
    opened = open_page(browser, f"{base}/definitions.html")
    page = opened.page
    page.evaluate("markup => { document.body.insertAdjacentHTML('beforeend', markup); }",
                  KLINGON)
    page.wait_for_function("window.__hostile === 1", timeout=5_000)
    assert opened.dialogs == ["1"]
    page.context.close()
