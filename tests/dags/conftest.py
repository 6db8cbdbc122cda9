"""Airflow needs its home, DAG folder and a migrated metadata DB before anything imports it."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS_FOLDER = REPO / "dags"
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="kpi-airflow-")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS_FOLDER)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"


@pytest.fixture(scope="session")
def airflow_db():
    """A migrated SQLite metadata DB in this session's AIRFLOW_HOME."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True, capture_output=True, env=os.environ.copy(),
    )


@pytest.fixture(scope="session")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_FOLDER))


@pytest.fixture
def scratch_root(tmp_path):
    """A repository layout of its own for scripts/run-stack.sh (.devdata, .airflow and the
    site are created in it)."""
    root = tmp_path / "repo"
    root.mkdir()
    for name in ("scripts", "dags", ".venv"):
        (root / name).symlink_to(REPO / name)
    (root / "site_output").mkdir()  # as in a clone (its README.md)
    return root
