"""The report configuration is data, validated with errors that name the key and value."""

from __future__ import annotations

import copy
import json

import pytest

from kpi.config import PRODUCTION_CONFIG, ConfigError, load_config, validate_config
from kpi.settings import Settings


@pytest.fixture
def raw():
    return json.loads(PRODUCTION_CONFIG.read_text(encoding="utf-8"))


def test_production_config_has_the_spec_values():
    config = load_config()
    assert config.segmentations["OS"][:2] == ("Windows 8", "Windows 7")
    assert len(config.aliases) == 21
    assert config.steps("new_user")[0] == "1 - Enter email"
    assert config.flows["password_reset"][0] == ("1 - Begin password reset",
                                                 "user.reset_password_staged")
    assert len(config.milestones) == 10


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c["segmentations"].pop("OS"), "'segmentations'"),
        (lambda c: c["segmentations"].__setitem__("Browser", "Firefox"),
         "'segmentations.Browser' has value 'Firefox'"),
        (lambda c: c["aliases"].__setitem__("en", 3), "'aliases.en' has value 3"),
        (lambda c: c["flows"]["new_user"][1].__setitem__(0, "Choose password"),
         "'flows.new_user[1]' has value 'Choose password'"),
        (lambda c: c["flows"]["new_user"].pop(), "'flows.new_user'"),
        (lambda c: c["flows"].pop("general_progress"), "'flows'"),
        (lambda c: c["milestones"].append(["launch", "2013-13-01"]),
         "'milestones[10]' has value '2013-13-01'"),
        (lambda c: c.__setitem__("colour", "red"), "'colour' has value 'red'"),
    ],
)
def test_bad_configs_name_the_key_and_value(raw, mutate, message):
    bad = copy.deepcopy(raw)
    mutate(bad)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate_config(bad)


def test_user_config_overrides_production(raw, tmp_path):
    raw["segmentations"]["Browser"] = ["Firefox", "Chrome", "MSIE", "Safari", "Opera"]
    path = tmp_path / "local.json"
    path.write_text(json.dumps(raw))
    settings = Settings.from_env({"KPI_CONFIG": str(path)})
    assert "Opera" in load_config(settings.config_path).segmentations["Browser"]


def test_a_missing_or_broken_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(broken)


def test_the_fingerprint_follows_what_shapes_the_aggregates():
    import dataclasses
    import subprocess
    import sys

    from kpi.config import production_config

    config = production_config()
    code = "from kpi.config import production_config; print(production_config().fingerprint)"
    for seed in ("1", "2"):  # stable across processes, whatever the hash seed
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               check=True, env={"PYTHONHASHSEED": seed})
        assert other.stdout.strip() == config.fingerprint
    more_milestones = dataclasses.replace(config, milestones=(("x", "2026-10-01"),))
    assert more_milestones.fingerprint == config.fingerprint
    other_alias = dataclasses.replace(config, aliases={**config.aliases, "Haiku": "Linux"})
    assert other_alias.fingerprint != config.fingerprint
