"""A password in the CouchDB and KPIggybank URLs never shows: not in the published site, its
build cache or the stored documents, not in the logs (every logger, at DEBUG), the command's
output, nor in the errors of failed runs (message and whole traceback), whatever fails: an
unreachable CouchDB, a source answering 500 until the retries run out, a source answering 404,
a missing database, a CouchDB or KPIggybank certificate that does not verify."""

from __future__ import annotations

import base64
import dataclasses
import http.server
import logging
import secrets
import threading
import traceback
from contextlib import ExitStack
from datetime import date
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from click.testing import CliRunner

from kpi.backfill import run_day
from kpi.cli import main
from kpi.couch import StoreError
from kpi.devserver import free_port
from kpi.publish import build_site
from kpi.source import SourceError
from tests.integration.test_cli import environment
from tests.unit.test_tls import https_server, self_signed

pytestmark = pytest.mark.integration

SECRET = f"S3ntinel-pw-{secrets.token_hex(8)}"
DAY = date(2026, 10, 2)


def with_password(url: str, user: str, password: str = SECRET) -> str:
    """`url` with `user:password@` (percent-encoded) in front of its host."""
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{user}:{quote(password, safe='')}@{rest}"


def assert_no_secret(text: str | bytes, where: str, secret: str = SECRET) -> None:
    """Neither `secret` nor its percent-encoded form is in `text`."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    for form in {secret, quote(secret, safe="")}:
        at = text.find(form)
        assert at < 0, f"the password leaks in {where}: …{text[max(0, at - 120):at + 40]}…"


def exception_text(exc: BaseException) -> str:
    """What a log or a terminal shows of `exc`: str, repr and the traceback with its chain."""
    return f"{exc}\n{exc!r}\n" + "".join(traceback.format_exception(exc))


def assert_no_secret_in_files(folder: Path) -> int:
    """No file under `folder` holds the password; how many files were read."""
    paths = [path for path in folder.rglob("*") if path.is_file()]
    for path in paths:
        assert_no_secret(path.read_bytes(), str(path))
    return len(paths)


def assert_no_secret_in_logs(caplog) -> None:
    for record in caplog.records:
        assert_no_secret(record.getMessage(), f"a log record of {record.name}")
        if record.exc_info and record.exc_info[1] is not None:
            assert_no_secret(exception_text(record.exc_info[1]),
                             f"the logged exception of {record.name}")
    assert_no_secret(caplog.text, "the captured log")


@pytest.fixture
def logs(caplog):
    """Every logger's records at DEBUG (httpx, httpcore, urllib3, tenacity, kpi…)."""
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore"):  # a library (Airflow, once imported) may quiet them
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


class _BasicAuthProxy(http.server.BaseHTTPRequestHandler):
    """CouchDB that checks the password (the dev server takes none): a request without
    `admin:SECRET` is answered 401, others are passed on without it."""

    upstream = ""

    def _forward(self) -> None:
        expected = "Basic " + base64.b64encode(f"admin:{SECRET}".encode()).decode()
        if self.headers.get("Authorization") != expected:
            status, body, kind = 401, b'{"error":"unauthorized"}', "application/json"
        else:
            length = int(self.headers.get("Content-Length") or 0)
            answer = httpx.request(
                self.command, self.upstream + self.path,
                content=self.rfile.read(length) if length else None, timeout=60,
                headers={"Content-Type": self.headers.get("Content-Type", "application/json")})
            status, body = answer.status_code, answer.content
            kind = answer.headers.get("Content-Type", "application/json")
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def guarded_couchdb(couchdb_url):
    """The dev CouchDB behind basic auth (user `admin`, password SECRET): its URL."""
    handler = type("Proxy", (_BasicAuthProxy,), {"upstream": couchdb_url})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def secret_settings(settings, guarded_couchdb):
    """The test settings with the password in both URLs (CouchDB checks it)."""
    return dataclasses.replace(settings,
                               source_url=with_password(settings.source_url, "kpi"),
                               couchdb_url=with_password(guarded_couchdb, "admin"))


def test_a_backfill_and_its_site_show_no_password(secret_settings, logs, couchdb_url):
    env = environment(secret_settings)
    runner = CliRunner()
    result = runner.invoke(main, ["-v", "backfill", "--start", "2026-10-01", "--end",
                                  "2026-10-02", "--no-progress"], env=env)
    assert result.exit_code == 0, result.output
    rebuilt = runner.invoke(main, ["-v", "build-site"], env=env)
    assert rebuilt.exit_code == 0, rebuilt.output
    # the password did travel (CouchDB checks it), and the logs saw the requests
    assert SECRET in env["KPI_COUCHDB_URL"] and SECRET in env["KPI_SOURCE_URL"]
    wrong = {**env, "KPI_COUCHDB_URL": env["KPI_COUCHDB_URL"].replace(SECRET, "wrong")}
    assert runner.invoke(main, ["build-site"], env=wrong).exit_code == 1
    assert any(r.name == "httpx" for r in logs.records)
    assert any(r.name.startswith("kpi.") for r in logs.records)

    for outcome in (result, rebuilt):
        assert_no_secret(outcome.stdout + outcome.stderr, "the command's output")
    assert_no_secret_in_logs(logs)
    # the site, its build cache and lock beside it (the cache key names the server)
    site = secret_settings.site_dir
    assert (site / "data" / "manifest.json").is_file()
    assert list(site.parent.glob(f".{site.name}.cache"))
    assert assert_no_secret_in_files(site.parent) > 20
    # and every stored document: raw snapshots, quarantine, manifests, aggregates
    names = [name for name in httpx.get(f"{couchdb_url}/_all_dbs", timeout=10).json()
             if name.startswith(f"{secret_settings.db_prefix}_")]
    assert len(names) >= 4
    for name in names:
        body = httpx.get(f"{couchdb_url}/{name}/_all_docs", params={"include_docs": "true"},
                         timeout=30).text
        assert_no_secret(body, f"the documents of {name}")


def _unreachable_couchdb(settings, fake_app, tmp_path, stack):
    port = free_port()
    return dataclasses.replace(
        settings, couchdb_url=with_password(f"http://127.0.0.1:{port}", "admin")), "run-day"


def _source_answering_500(settings, fake_app, tmp_path, stack):
    fake_app.state.faults.script(*["500"] * settings.retry_attempts * 2)
    return settings, "run-day"


def _source_answering_404(settings, fake_app, tmp_path, stack):
    url = settings.source_url.replace("/wsapi/interaction_data", "/no/such/path")
    return dataclasses.replace(settings, source_url=url), "run-day"


def _missing_database(settings, fake_app, tmp_path, stack):
    return settings, "build-site"  # nothing was extracted with this prefix: no database


def _untrusted_couchdb_certificate(settings, fake_app, tmp_path, stack):
    cert, key = self_signed(tmp_path)
    url = stack.enter_context(https_server(cert, key))
    return dataclasses.replace(settings, couchdb_url=with_password(url, "admin")), "run-day"


def _untrusted_source_certificate(settings, fake_app, tmp_path, stack):
    cert, key = self_signed(tmp_path)
    url = stack.enter_context(https_server(cert, key))
    return dataclasses.replace(
        settings, source_url=with_password(f"{url}/wsapi/interaction_data", "kpi")), "run-day"


FAILURES = {
    "unreachable CouchDB": (_unreachable_couchdb, StoreError),
    "KPIggybank answering 500 until the retries run out": (_source_answering_500, SourceError),
    "KPIggybank answering 404": (_source_answering_404, SourceError),
    "missing database": (_missing_database, StoreError),
    "CouchDB's certificate not trusted": (_untrusted_couchdb_certificate, StoreError),
    "KPIggybank's certificate not trusted": (_untrusted_source_certificate, SourceError),
}


@pytest.mark.parametrize("failure", list(FAILURES))
def test_failures_name_no_password(failure, secret_settings, fake_app, logs, tmp_path):
    make, expected = FAILURES[failure]
    with ExitStack() as stack:
        settings, command = make(secret_settings, fake_app, tmp_path, stack)
        check_failure(failure, settings, command, expected, fake_app, logs)


def check_failure(failure, settings, command, expected, fake_app, logs):
    assert SECRET in settings.source_url and SECRET in settings.couchdb_url

    def run():
        if command == "run-day":
            return run_day(DAY, settings)
        return build_site(settings)

    with pytest.raises(expected) as caught:
        run()
    text = exception_text(caught.value)
    assert_no_secret(text, f"the error ({failure})")
    assert ":***@" in str(caught.value)  # the server is still named, password redacted
    if "certificate" in failure:
        assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    # the same failure through the command line: its output, with retries logged at DEBUG
    if failure == "KPIggybank answering 500 until the retries run out":
        fake_app.state.faults.script(*["500"] * settings.retry_attempts * 2)
    args = ["-v", "run-day", DAY.isoformat()] if command == "run-day" else ["-v", "build-site"]
    result = CliRunner().invoke(main, args, env=environment(settings))
    assert result.exit_code == 1, result.output
    assert "error:" in result.stderr
    assert_no_secret(result.stdout + result.stderr, f"the command's output ({failure})")
    if result.exc_info:
        assert_no_secret(exception_text(result.exc_info[1]), f"the command's error ({failure})")
    assert_no_secret_in_logs(logs)
