"""`make run` keeps the logs of earlier runs (scripts/rotate-logs.sh): each run's service logs
move into a folder named for when that run last logged, and the newest few are kept."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "rotate-logs.sh"


def a_run(folder: Path, when: datetime, text: str) -> None:
    """The logs one run leaves, last written at `when`."""
    for name in ("scheduler.log", "api-server.log"):
        log = folder / name
        log.write_text(f"{text} {name}\n")
        os.utime(log, (when.timestamp(), when.timestamp()))


def rotate(folder: Path, keep: int = 5) -> None:
    subprocess.run(["bash", str(SCRIPT), str(folder), str(keep)], check=True)


def test_a_runs_logs_move_aside_under_its_time_and_the_newest_are_kept(tmp_path):
    rotate(tmp_path)  # no log yet: nothing to keep
    assert list(tmp_path.iterdir()) == []
    times = [datetime(2026, 12, day, 9, 30, tzinfo=UTC) for day in range(1, 8)]
    for number, when in enumerate(times):
        a_run(tmp_path, when, f"run {number}")
        rotate(tmp_path)
        assert not list(tmp_path.glob("*.log"))  # the next run starts with no log of its own
    kept = sorted(path.name for path in (tmp_path / "previous-logs").iterdir())
    assert kept == [f"2026120{day}T093000Z" for day in range(3, 8)]  # the 5 newest of 7
    newest = tmp_path / "previous-logs" / "20261207T093000Z"
    assert (newest / "scheduler.log").read_text() == "run 6 scheduler.log\n"
    assert (newest / "api-server.log").read_text() == "run 6 api-server.log\n"


def test_two_runs_that_last_logged_in_the_same_second_are_both_kept(tmp_path):
    when = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    for number in range(2):
        a_run(tmp_path, when, f"run {number}")
        rotate(tmp_path)
    texts = sorted((folder / "scheduler.log").read_text()
                   for folder in (tmp_path / "previous-logs").iterdir())
    assert texts == ["run 0 scheduler.log\n", "run 1 scheduler.log\n"]
