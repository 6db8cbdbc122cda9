"""Serve the published site folder over HTTP (`kpi serve`). Standard library only, so it
starts at once; any static web server can host the folder instead
(docs/operations.md, "Hosting the site")."""

from __future__ import annotations

import errno
import functools
import http.server
import io
import logging
import os
from http import HTTPStatus
from pathlib import Path

log = logging.getLogger(__name__)


class ServeError(RuntimeError):
    """The site cannot be served (no such folder, or the port is taken)."""


RETRY_SECONDS = 30
# What the site's address shows before the first build is published (the folder is empty).
WAITING_PAGE = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <meta name="color-scheme" content="light dark">
  <meta http-equiv="refresh" content="{RETRY_SECONDS}">
  <title>Waiting for the first run · Persona #signin Analytics</title>
  <style>body {{ font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto;
    padding: 0 1rem; line-height: 1.5; }}</style>
</head>
<body>
  <h1>Persona #signin Analytics</h1>
  <p>The site is waiting for the first run: no build has been published here yet. It appears
    once the pipeline has aggregated a day and built the site (with <code>make run</code>,
    about 15 seconds after Airflow is up; each day the catch-up adds shows up as it is
    published). This page checks again every {RETRY_SECONDS} seconds.</p>
</body>
</html>
""".encode()


class _SiteHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".js": "text/javascript",
        ".json": "application/json",
        ".csv": "text/csv; charset=utf-8",
    }

    def list_directory(self, path: str | os.PathLike[str]):
        """Never a listing: the site root without a page waits for the first build (503, with
        a page saying so); any other folder without `index.html` is not found."""
        if Path(path).resolve() != Path(self.directory).resolve():
            self.send_error(HTTPStatus.NOT_FOUND, "No such page")
            return None
        self.send_response(HTTPStatus.SERVICE_UNAVAILABLE)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(WAITING_PAGE)))
        self.send_header("Retry-After", str(RETRY_SECONDS))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        return io.BytesIO(WAITING_PAGE)

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
