"""The site folder of a clone: `site_output/` is tracked (its README says what appears there),
and the live site is published below it, atomically, leaving the README alone."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from kpi.settings import Settings
from kpi.sitedir import PublishError, builds_dir, publish

ROOT = Path(__file__).resolve().parents[2]


def test_a_clone_has_site_output_and_the_site_goes_below_it():
    tracked = subprocess.run(["git", "ls-files", "site_output"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout.split()
    assert tracked == ["site_output/README.md"]
    default = Settings(site_dir=Settings.__dataclass_fields__["site_dir"].default).site_dir
    assert default == Path("site_output/site")
    readme = (ROOT / "site_output" / "README.md").read_text()
    assert "site_output/site" in readme and ".site.builds" in readme


def test_publishing_swaps_the_live_site_below_the_tracked_folder(tmp_path):
    folder = tmp_path / "site_output"
    folder.mkdir()
    shutil.copy(ROOT / "site_output" / "README.md", folder / "README.md")
    site = folder / "site"
    for page in ("first", "second"):
        publish(lambda target, page=page: (target / "index.html").write_text(page), site)
        assert site.is_symlink() and (site / "index.html").read_text() == page
        assert site.resolve().parent == builds_dir(site) == folder / ".site.builds"
    assert sorted(path.name for path in folder.iterdir()) == [".site.builds", "README.md",
                                                              "site"]
    assert (folder / "README.md").read_text() == (ROOT / "site_output" / "README.md").read_text()


def test_a_site_output_link_of_the_old_layout_is_refused_not_built_into(tmp_path):
    """Before site_output/site, `site_output` itself was the link to the published build: a
    publish below it would land inside that old build, unseen. It is refused, naming the fix."""
    old_build = tmp_path / ".site_output.builds" / "20261201T000000-a"
    old_build.mkdir(parents=True)
    (old_build / "index.html").write_text("old")
    (tmp_path / "site_output").symlink_to(old_build)
    with pytest.raises(PublishError, match="layout before site_output/site.*rm "):
        publish(lambda target: (target / "index.html").write_text("new"),
                tmp_path / "site_output" / "site")
    assert sorted(path.name for path in old_build.iterdir()) == ["index.html"]
