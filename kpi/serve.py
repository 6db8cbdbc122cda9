"""Serve the published site folder over HTTP (`kpi serve`). Standard library only, so it
starts at once; any static web server can host the folder instead (see the README)."""

from __future__ import annotations

import errno
import functools
import http.server
import logging
from pathlib import Path

log = logging.getLogger(__name__)


class ServeError(RuntimeError):
    """The site cannot be served (no such folder, or the port is taken)."""


class _SiteHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".js": "text/javascript",
        ".json": "application/json",
        ".csv": "text/csv; charset=utf-8",
    }

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s - %s", self.address_string(), format % args)


def make_server(site_dir: Path, host: str = "127.0.0.1", port: int = 3434):
    """A threading HTTP server for the static site folder (not started).

    Raises:
        ServeError: the folder does not exist, or the port is already in use.
    """
    # not resolved: the folder is a link swapped at each publish, followed at each request
    folder = Path(site_dir).absolute()
    if not folder.is_dir():
        msg = f"site folder {folder} does not exist: run `kpi build-site` (or a backfill) first"
        raise ServeError(msg)
    handler = functools.partial(_SiteHandler, directory=str(folder))
    try:
        return http.server.ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            msg = (f"port {port} on {host} is already in use (another `kpi serve` or web "
                   "server?): stop it or pick another port with --port")
            raise ServeError(msg) from None
        raise
