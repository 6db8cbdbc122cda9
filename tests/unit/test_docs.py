"""The docs say what the code does: docs/configuration.md is generated from `Settings` (cog),
and every setting is in it. (datasette's tests/test_docs.py checks its settings the same way.)"""

from __future__ import annotations

import io
import re
import shutil
from dataclasses import fields
from pathlib import Path

import pytest
from cogapp import Cog

from kpi.settings import Settings, settings_reference, settings_table

ROOT = Path(__file__).resolve().parents[2]
CONFIGURATION = ROOT / "docs" / "configuration.md"


def run_cog(*args: str) -> tuple[int, str]:
    """cog's exit status (0: done, 5: --check found a stale file) and what it printed."""
    cog, out = Cog(), io.StringIO()
    cog.set_output(stdout=out, stderr=out)
    return cog.main(["cog", *args]), out.getvalue()


def test_configuration_page_is_what_make_docs_generates():
    status, printed = run_cog("--check", "--diff", str(CONFIGURATION))
    assert status == 0, f"docs/configuration.md is stale: run `make docs`\n{printed}"


def test_the_check_fails_on_a_stale_page(tmp_path):
    stale = tmp_path / "configuration.md"
    shutil.copy(CONFIGURATION, stale)
    text = stale.read_text(encoding="utf-8")
    assert "| `KPI_DB_PREFIX` | `kpi` |" in text
    stale.write_text(text.replace("| `KPI_DB_PREFIX` | `kpi` |", "| `KPI_DB_PREFIX` | `x` |"),
                     encoding="utf-8")
    assert run_cog("--check", str(stale))[0] == 5
    assert run_cog("-r", str(stale))[0] == 0
    assert stale.read_text(encoding="utf-8") == CONFIGURATION.read_text(encoding="utf-8")


@pytest.mark.parametrize("setting", [f.name for f in fields(Settings)])
def test_every_setting_is_documented_with_its_default(setting):
    env = next(f.metadata["env"] for f in fields(Settings) if f.name == setting)
    default = dict((e, d) for e, d, _ in settings_table())[env]
    text = CONFIGURATION.read_text(encoding="utf-8")
    line = next((ln for ln in text.splitlines() if ln.startswith(f"| `{env}` |")), None)
    assert line is not None, f"docs/configuration.md lacks {env} ({setting}): run `make docs`"
    assert line.startswith(f"| `{env}` | `{default}` |"), (
        f"docs/configuration.md gives another default for {env}: run `make docs`")


def test_every_setting_has_an_environment_variable_and_help():
    for f in fields(Settings):
        assert f.metadata["env"].startswith("KPI_"), f.name
        assert f.metadata["help"].strip(), f.name


def test_the_reference_is_one_table_row_per_setting():
    lines = settings_reference().splitlines()
    assert lines[:2] == ["| Variable | Default | Meaning |", "|---|---|---|"]
    assert len(lines) == 2 + len(fields(Settings))
    assert all(line.count(" | ") - line.count(r"\|") == 2 for line in lines[2:])
    assert "<" not in "".join(lines[2:]), "a <word> in a help text would vanish as an HTML tag"


DOCS = [ROOT / "README.md", ROOT / "tests" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.M | re.S)
    return {github_anchor(line.lstrip("#")) for line in text.splitlines()
            if re.match(r"#{1,6} ", line)}


@pytest.mark.parametrize("page", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_between_the_docs_resolves(page):
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.is_relative_to(ROOT), f"{page.name} links outside the repository: {target}"
        assert linked.exists(), f"{page.name} links to a missing file: {target}"
        if anchor:
            assert anchor in anchors(linked), f"{page.name}: no heading for {target}"


def test_the_readme_is_one_screen_that_links_every_docs_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    for page in (ROOT / "docs").glob("*.md"):
        assert f"(docs/{page.name})" in readme, f"README.md does not link docs/{page.name}"


@pytest.mark.parametrize("page", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_docs_stand_alone(page):
    """The docs name no file outside the repository (a planning folder, a spec): every
    relative path that climbs (`../…`) stays inside it, and no spec is cited."""
    text = page.read_text(encoding="utf-8")
    for climbing in re.findall(r"(?:\.\./)+[\w.-]+", text):
        assert (page.parent / climbing).resolve().is_relative_to(ROOT), (page.name, climbing)
    assert "SPEC" not in text
