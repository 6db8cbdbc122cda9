"""The development CouchDB: pouchdb-server from npm (pinned in package.json), started here.

Production points `KPI_COUCHDB_URL` at Apache CouchDB 3.x instead; nothing else changes.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import httpx

PROJECT_ROOT = Path(__file__).resolve().parent.parent
POUCHDB_SERVER = PROJECT_ROOT / "node_modules" / ".bin" / "pouchdb-server"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_dev_couchdb(port: int, data_dir: Path | None = None) -> subprocess.Popen:
    """Start pouchdb-server on 127.0.0.1:`port`; in memory when `data_dir` is None.

    Its config.json and log.txt go to `data_dir` (or a folder under .devdata/ in memory mode).
    Returns once the server answers; raises RuntimeError if it does not within 30 s.
    """
    if not POUCHDB_SERVER.exists():
        msg = f"{POUCHDB_SERVER} is missing: run `make setup` (npm install) first"
        raise RuntimeError(msg)
    workdir = Path(data_dir) if data_dir else PROJECT_ROOT / ".devdata" / f"pouchdb-mem-{port}"
    workdir.mkdir(parents=True, exist_ok=True)
    command = [
        str(POUCHDB_SERVER), "--host", "127.0.0.1", "--port", str(port),
        "--config", str(workdir / "config.json"), "--no-stdout-logs",
    ]
    command += ["--dir", str(workdir)] if data_dir else ["--in-memory"]
    # stderr to a file, not a pipe: nobody reads a pipe while the server runs, and a full one
    # would block the server on its next warning
    with open(workdir / "stderr.txt", "wb") as stderr:
        process = subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL,
                                   stderr=stderr)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/", process, log=workdir / "stderr.txt")
    except BaseException:  # a failed start, or an interrupt while waiting: no orphan server
        stop_process(process)
        raise
    return process


def stop_process(process: subprocess.Popen, grace: float = 10) -> None:
    """TERM, and KILL if it is still running after `grace` seconds."""
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_for_http(url: str, process: subprocess.Popen | None = None, timeout: float = 30,
                  log: Path | None = None) -> None:
    """Wait until `url` answers HTTP (any status); fail early if `process` died, with the end
    of its `log` (or of its stderr pipe)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            if log is not None:
                err = log.read_text(errors="replace") if log.exists() else ""
            else:
                err = process.stderr.read().decode(errors="replace") if process.stderr else ""
            msg = f"{url}: server exited with {process.returncode}: {err[-2000:]}"
            raise RuntimeError(msg)
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    msg = f"{url} did not answer within {timeout} s"
    raise RuntimeError(msg)
