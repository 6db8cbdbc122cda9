"""Run a fake KPIggybank: as a process (`kpi fake-source`) or in a thread for tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.applications import Starlette


def serve(app: Starlette, host: str = "127.0.0.1", port: int = 3435) -> None:
    """Serve `app` until interrupted."""
    uvicorn.run(app, host=host, port=port, log_level="warning")


@contextmanager
def running_in_thread(app: Starlette, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve `app` in a background thread; yields its base URL (`http://host:port`)."""
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            msg = "fake KPIggybank did not start"
            raise RuntimeError(msg)
        time.sleep(0.02)
    bound_port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
