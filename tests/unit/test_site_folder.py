"""The site folder of a clone: `site_output/` is tracked (its README says what appears there),
and the live site is published below it, atomically, leaving the README alone."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from kpi.settings import Settings
from kpi.sitedir import builds_dir, publish

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
