"""Report configuration as data: segmentations, aliases, flows and milestones (SPEC D9).

The production values ship as `kpi/production.json`; `KPI_CONFIG` names a file to use instead.
A file is validated when loaded, and a bad one fails with `ConfigError` naming the key and value.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path

PRODUCTION_CONFIG = Path(__file__).with_name("production.json")
SEGMENTATIONS = ("OS", "Browser", "Screen", "Emails", "Locale", "API", "EmailType")
# The special rules (SPEC §3.2, §4.2, §7) address steps by position: these are the step counts.
FLOW_STEPS = {"new_user": 4, "password_reset": 3, "general_progress": 5, "email_activation": 4}
MIN_FLOW_STEPS = {"password_reset": 3}  # local.json's 4-step password_reset flow is allowed
STEP_NAME = re.compile(r"^\d")


class ConfigError(ValueError):
    """The configuration file is malformed; the message names the key and the bad value."""


@dataclass(frozen=True)
class AnomalyRules:
    """The flagging rule's thresholds (configuration key `anomalies`)."""

    weeks: int = 4  # same weekday in this many previous weeks; the noise from as many weeks
    min_history_days: int = 7  # processed days before a day, else no verdict
    spread_factor: float = 3.0  # times the day-to-day noise
    sampling_factor: float = 4.0  # times the sampling noise
    min_change: float = 0.5  # a count: below (1 − this) × the baseline, or above it / (1 − this)
    min_rate_change: float = 0.3  # a rate: this share of the baseline away from it
    min_volume: int = 100  # blobs (or ratio denominator) a segment needs


@dataclass(frozen=True)
class Config:
    """Segment lists, value aliases, flows (ordered (step name, event) pairs) and milestones."""

    segmentations: dict[str, tuple[str, ...]]
    aliases: dict[str, str]
    flows: dict[str, tuple[tuple[str, str], ...]]
    milestones: tuple[tuple[str, str], ...]
    anomalies: AnomalyRules = AnomalyRules()

    def steps(self, flow: str) -> tuple[str, ...]:
        """The step names of `flow`, in order."""
        return tuple(step for step, _event in self.flows[flow])

    @functools.cached_property
    def fingerprint(self) -> str:
        """A digest of everything that shapes the aggregates (not the milestones): stored with
        each day's aggregates, so a configuration change is detected and the day restated."""
        shaping = {"segmentations": self.segmentations, "aliases": self.aliases,
                   "flows": self.flows}
        text = json.dumps(shaping, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _fail(key: str, value: object, expected: str) -> None:
    msg = f"config key {key!r} has value {value!r}: expected {expected}"
    raise ConfigError(msg)


def _strings(key: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        _fail(key, value, "a list of non-empty strings")
    if len(set(value)) != len(value):
        _fail(key, value, "no repeated entries")
    return tuple(value)


def validate_config(raw: object) -> Config:
    """A `Config` from a decoded configuration file, or ConfigError naming what is wrong."""
    if not isinstance(raw, dict):
        _fail("<top level>", raw, "an object")
    for key in ("segmentations", "aliases", "flows", "milestones"):
        if key not in raw:
            _fail(key, None, "to be present")
    unknown = sorted(set(raw) - {"segmentations", "aliases", "flows", "milestones", "anomalies"})
    if unknown:
        _fail(unknown[0], raw[unknown[0]],
              "one of segmentations, aliases, flows, milestones, anomalies")

    segmentations_raw = raw["segmentations"]
    if not isinstance(segmentations_raw, dict):
        _fail("segmentations", segmentations_raw, "an object of segment lists")
    if set(segmentations_raw) != set(SEGMENTATIONS):
        _fail("segmentations", sorted(segmentations_raw), f"exactly {list(SEGMENTATIONS)}")
    segmentations = {
        name: _strings(f"segmentations.{name}", segmentations_raw[name]) for name in SEGMENTATIONS
    }
    for name, segments in segmentations.items():
        if "Other" in segments:
            _fail(f"segmentations.{name}", list(segments), "no 'Other' (it is added for you)")

    aliases = raw["aliases"]
    if not isinstance(aliases, dict):
        _fail("aliases", aliases, "an object of raw value → segment")
    for alias, target in aliases.items():
        if not isinstance(target, str) or not target:
            _fail(f"aliases.{alias}", target, "a non-empty string")

    flows_raw = raw["flows"]
    if not isinstance(flows_raw, dict) or set(flows_raw) != set(FLOW_STEPS):
        shown = sorted(flows_raw) if isinstance(flows_raw, dict) else flows_raw
        _fail("flows", shown, f"exactly {sorted(FLOW_STEPS)}")
    flows = {}
    for flow, expected in FLOW_STEPS.items():
        steps = flows_raw[flow]
        key = f"flows.{flow}"
        if not isinstance(steps, list):
            _fail(key, steps, "a list of [step name, event] pairs")
        allowed = len(steps) >= expected if flow in MIN_FLOW_STEPS else len(steps) == expected
        if not allowed:
            _fail(key, steps, f"{expected} steps")
        pairs = []
        for index, pair in enumerate(steps):
            if (not isinstance(pair, list) or len(pair) != 2
                    or not all(isinstance(part, str) for part in pair)):
                _fail(f"{key}[{index}]", pair, "a [step name, event] pair of strings")
            if not STEP_NAME.match(pair[0]):
                _fail(f"{key}[{index}]", pair[0], "a step name starting with its step digit")
            pairs.append((pair[0], pair[1]))
        if len({step for step, _ in pairs}) != len(pairs):
            _fail(key, steps, "distinct step names")
        flows[flow] = tuple(pairs)

    milestones_raw = raw["milestones"]
    if not isinstance(milestones_raw, list):
        _fail("milestones", milestones_raw, "a list of [name, YYYY-MM-DD] pairs")
    milestones = []
    for index, pair in enumerate(milestones_raw):
        key = f"milestones[{index}]"
        if (not isinstance(pair, list) or len(pair) != 2
                or not all(isinstance(part, str) for part in pair)):
            _fail(key, pair, "a [name, YYYY-MM-DD] pair")
        try:
            date.fromisoformat(pair[1])
        except ValueError:
            _fail(key, pair[1], "a YYYY-MM-DD date")
        milestones.append((pair[0], pair[1]))

    return Config(segmentations, dict(aliases), flows, tuple(milestones),
                  _anomaly_rules(raw.get("anomalies", {})))


def _anomaly_rules(raw: object) -> AnomalyRules:
    """The `anomalies` thresholds (each optional; defaults from `AnomalyRules`)."""
    if not isinstance(raw, dict):
        _fail("anomalies", raw, "an object of thresholds")
    defaults = AnomalyRules()
    known = {name: type(getattr(defaults, name)) for name in defaults.__dataclass_fields__}
    values = {}
    for name, value in raw.items():
        if name not in known:
            _fail(f"anomalies.{name}", value, f"one of {sorted(known)}")
        number = known[name] is float and isinstance(value, int | float)
        if isinstance(value, bool) or not (number or isinstance(value, known[name])) or value < 0:
            _fail(f"anomalies.{name}", value, f"a {known[name].__name__} of 0 or more")
        values[name] = known[name](value)
    if values.get("weeks", 1) < 1:
        _fail("anomalies.weeks", values["weeks"], "1 or more")
    return AnomalyRules(**values)


def load_config(path: Path | str | None = None) -> Config:
    """Read and validate a configuration file (the production one when `path` is empty)."""
    path = Path(path) if path else PRODUCTION_CONFIG
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        msg = f"KPI_CONFIG file {path} does not exist"
        raise ConfigError(msg) from None
    except json.JSONDecodeError as exc:
        msg = f"config file {path} is not valid JSON: {exc}"
        raise ConfigError(msg) from None
    try:
        return validate_config(raw)
    except ConfigError as exc:
        msg = f"{path}: {exc}"
        raise ConfigError(msg) from None


@cache
def production_config() -> Config:
    """The shipped production configuration (read once)."""
    return load_config(PRODUCTION_CONFIG)
