"""requirements.txt and constraints.txt agree, and the running environment is what they pin."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)")


def pins(name: str) -> dict[str, str]:
    found = {}
    for line in (ROOT / name).read_text().splitlines():
        match = PIN.match(line.strip())
        if match:
            found[match[1].lower().replace("_", "-")] = match[2]
    return found


def test_every_requirement_is_pinned_the_same_in_the_constraints():
    requirements, constraints = pins("requirements.txt"), pins("constraints.txt")
    assert requirements, "requirements.txt pins nothing"
    assert {name: constraints.get(name) for name in requirements} == requirements


def test_the_environment_is_the_constrained_one():
    """`make setup` installed exactly the constrained versions (Airflow's included)."""
    constraints = pins("constraints.txt")
    assert len(constraints) > 100  # Airflow's dependency tree, not only the direct ones
    for name in ("apache-airflow", "apache-airflow-core", "apache-airflow-task-sdk",
                 "sqlalchemy", "pandas", "pydantic"):
        assert version(name) == constraints[name], name
