"""Report configuration as data: segmentations, aliases, flows and milestones (SPEC D9).

The production values ship as `kpi/production.json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PRODUCTION_CONFIG = Path(__file__).with_name("production.json")
SEGMENTATIONS = ("OS", "Browser", "Screen", "Emails", "Locale", "API", "EmailType")


@dataclass(frozen=True)
class Config:
    """Segment lists, value aliases, flows (ordered (step name, event) pairs) and milestones."""

    segmentations: dict[str, tuple[str, ...]]
    aliases: dict[str, str]
    flows: dict[str, tuple[tuple[str, str], ...]]
    milestones: tuple[tuple[str, str], ...]

    def steps(self, flow: str) -> tuple[str, ...]:
        """The step names of `flow`, in order."""
        return tuple(step for step, _event in self.flows[flow])


def load_config(path: Path = PRODUCTION_CONFIG) -> Config:
    """Read a configuration file."""
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    return Config(
        segmentations={name: tuple(raw["segmentations"][name]) for name in SEGMENTATIONS},
        aliases=dict(raw["aliases"]),
        flows={name: tuple((s, e) for s, e in steps) for name, steps in raw["flows"].items()},
        milestones=tuple((name, day) for name, day in raw["milestones"]),
    )


@cache
def production_config() -> Config:
    """The shipped production configuration (read once)."""
    return load_config(PRODUCTION_CONFIG)
