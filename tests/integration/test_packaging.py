"""The built wheel carries the page templates: a non-editable install publishes a site."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
BUILD_SITE = """
import sys
from datetime import UTC, datetime
from pathlib import Path

import kpi
from kpi.aggregate import daily_aggregates, sites_histogram
from kpi.config import production_config
from kpi.reports import QUALITY_MEASURES, Aggregates, build_reports
from kpi.site import TEMPLATES_DIR, render_site
from kpi.sitedir import publish
from kpi.stage import stage

assert kpi.__file__.startswith(sys.argv[1]), kpi.__file__  # the installed copy, not the checkout
assert str(TEMPLATES_DIR).startswith(sys.argv[1]), TEMPLATES_DIR
config = production_config()
blob = {"timestamp": 1791892800000, "event_stream": [["screen.rp_info", 1]]}
staged, _ = stage([blob, blob], config)
quality = staged.groupby("date", observed=True).size().rename("aggregated").reset_index()
quality["date"] = quality["date"].astype(str)
for column in QUALITY_MEASURES[:-1]:
    quality[column] = 0
aggregates = Aggregates(daily_aggregates(staged, config), sites_histogram(staged), quality)
reports = build_reports(aggregates, config)
site = Path(sys.argv[2])
publish(lambda t: render_site(t, aggregates, reports, config, datetime.now(UTC)), site)
print(sorted(p.name for p in site.iterdir()))
"""


def test_a_wheel_installed_elsewhere_builds_the_site(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w",
                            str(tmp_path / "dist"), str(ROOT)], check=True, capture_output=True,
                           text=True)
    assert "Warning" not in built.stdout + built.stderr  # e.g. setuptools' about packages
    wheel = next((tmp_path / "dist").glob("kpi-*.whl"))
    # a fresh venv whose only kpi is the wheel; the third-party packages come from this one
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    target = next(venv.glob("lib/python3*/site-packages"))
    (target / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(target), str(wheel)], check=True, capture_output=True)
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", BUILD_SITE, str(target), str(tmp_path / "site")],
        cwd=tmp_path, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("index.html", "new_user.html", "static", "data", "vendor"):
        assert name in result.stdout
    assert (tmp_path / "site" / "static" / "report.js").is_file()


def test_an_editable_install_is_one_path_and_warns_of_nothing(tmp_path):
    """What `make setup` does (`pip install -e .`): setuptools finds every package at the top
    of the checkout, so the install is one path entry, and prints no warning."""
    target = tmp_path / "target"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-e",
                                str(ROOT), "--target", str(target)], check=True,
                               capture_output=True, text=True)
    assert "Warning" not in installed.stdout + installed.stderr
    (path_file,) = target.glob("__editable__.kpi-*.pth")
    assert path_file.read_text().split() == [str(ROOT)]
