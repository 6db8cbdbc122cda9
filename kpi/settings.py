"""One settings object for the whole pipeline, read from the environment.

Every setting has an environment variable, a default and a help line; the README's
configuration table lists them all (a test keeps the two in step).
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from datetime import date
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

NIGHTLY_AT_PATTERN = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
MAX_MAPPED_WINDOWS = 1024  # Airflow's default [core] max_map_length
DB_PREFIX_PATTERN = re.compile(r"^[a-z][a-z0-9_$()+\-/]*$")


def _setting(env: str, default: object, help: str, secret: bool = False) -> object:
    return field(default=default, repr=not secret, metadata={"env": env, "help": help})


@dataclass(frozen=True)
class Settings:
    """Pipeline settings. Build with `Settings.from_env()`; pass explicitly."""

    source_url: str = _setting(
        "KPI_SOURCE_URL",
        "http://127.0.0.1:3435/wsapi/interaction_data",
        "KPIggybank interaction-data endpoint (GET range queries are sent here).",
        secret=True,
    )
    couchdb_url: str = _setting(
        "KPI_COUCHDB_URL",
        "http://127.0.0.1:5984",
        "CouchDB server URL; may carry credentials (http://user:pass@host:5984), never logged.",
        secret=True,
    )
    db_prefix: str = _setting(
        "KPI_DB_PREFIX", "kpi", "Prefix of every CouchDB database name the pipeline creates."
    )
    site_dir: Path = _setting(
        "KPI_SITE_DIR", Path("site_output/site"),
        "The published site, the path a web server serves: a link to the current build, "
        "swapped in one step (builds beside it in .<name>.builds/).",
    )
    fetch_chunk_hours: int = _setting(
        "KPI_FETCH_CHUNK_HOURS", 6,
        "Hours of each fetch window (1-24): the window of each mapped extract task of the "
        "nightly DAG, and the most one KPIggybank request asks for (an extract asks for pages "
        "of about 20,000 rows within the windows).",
    )
    http_timeout: float = _setting(
        "KPI_HTTP_TIMEOUT", 60.0, "Seconds before one KPIggybank or CouchDB request times out."
    )
    retry_attempts: int = _setting(
        "KPI_RETRY_ATTEMPTS", 5, "Attempts per request before the run fails with a clear error."
    )
    retry_backoff: float = _setting(
        "KPI_RETRY_BACKOFF", 1.0, "First retry wait in seconds; doubles per attempt (max 30 s)."
    )
    start_date: date = _setting(
        "KPI_START_DATE",
        date(2026, 10, 1),
        "First UTC day the Airflow DAG processes (catchup starts here), YYYY-MM-DD.",
    )
    config_path: str = _setting(
        "KPI_CONFIG",
        "",
        "Report configuration file (segmentations, aliases, flows, milestones); "
        "empty = the shipped kpi/production.json.",
    )
    bulk_size: int = _setting(
        "KPI_BULK_SIZE", 1000,
        "Documents per CouchDB _bulk_docs request, and per page of documents read "
        "(ten times as many per page when only ids are read).",
    )
    couchdb_writers: int = _setting(
        "KPI_COUCHDB_WRITERS", 2,
        "_bulk_docs requests one write of many documents keeps in flight at once (1-8).",
    )
    restate_max_removed: float = _setting(
        "KPI_RESTATE_MAX_REMOVED", 0.1,
        "Largest share (0-1) of a stored day's rows a restatement may remove; a restatement "
        "removing more, or every row, is refused unless the run allows removals.",
    )
    max_document_bytes: int = _setting(
        "KPI_MAX_DOCUMENT_BYTES", 8_000_000,
        "Largest CouchDB document written (the server's max_document_size; Apache CouchDB's "
        "default is 8,000,000): a larger row is quarantined, kept whole as an attachment.",
    )
    restate_days: int = _setting(
        "KPI_RESTATE_DAYS", 2,
        "Days before its own that each nightly run re-extracts and restates (late or corrected "
        "rows); 0 = only the run's own day.",
    )
    nightly_at: str = _setting(
        "KPI_NIGHTLY_AT", "00:00",
        "UTC time of day (HH:MM) the nightly DAG runs; it processes the UTC day that ended "
        "before.",
    )
    extract_parallel: int = _setting(
        "KPI_EXTRACT_PARALLEL", 4,
        "Fetch windows one nightly Airflow run extracts at once (its mapped extract tasks; "
        "the executor spreads them over its workers).",
    )
    task_timeout_minutes: int = _setting(
        "KPI_TASK_TIMEOUT_MINUTES", 120, "Airflow execution_timeout of each task, in minutes."
    )
    publish_queue: str = _setting(
        "KPI_PUBLISH_QUEUE", "default",
        "Airflow queue of the publish task (on a multi-worker deployment: the worker that "
        "holds KPI_SITE_DIR, e.g. on the web host).",
    )
    ca_bundle: str = _setting(
        "KPI_CA_BUNDLE", "",
        "PEM file of every certificate authority trusted for HTTPS to KPIggybank and CouchDB "
        "(for a private CA, a copy of the usual bundle with it appended); empty = the HTTP "
        "libraries' default bundle. Certificates are always verified.",
    )
    min_segment_count: int = _setting(
        "KPI_MIN_SEGMENT_COUNT", 5,
        "Fewest blobs a segment needs on a day to be published under its own name; smaller "
        "segments are folded into Other for that day in every published file, chart and page "
        "(Total never is; the stored aggregates stay exact). 0 = no folding.",
    )
    failure_callback: str = _setting(
        "KPI_FAILURE_CALLBACK", "",
        "Dotted path `module:function` called with the Airflow context when a task fails for "
        "good (e.g. to page someone); empty = log only.",
    )

    anomaly_callback: str = _setting(
        "KPI_ANOMALY_CALLBACK", "",
        "Dotted path `module:function` called with the flags (a list of dicts) and the Airflow "
        "context when the nightly check flags the run's own day (e.g. to post to a chat room); "
        "empty = log only. A failing callback is logged, never fails the run.",
    )

    def tls_context(self) -> ssl.SSLContext:
        """What HTTP clients verify certificates against: the CA bundle, or httpx's default
        (certifi's). Certificates are always verified. One context per bundle for the
        process: loading a bundle costs about 20 ms, and every day's clients share it."""
        return _tls_context(self.ca_bundle)

    def __post_init__(self) -> None:
        if not DB_PREFIX_PATTERN.match(self.db_prefix):
            msg = (
                f"KPI_DB_PREFIX={self.db_prefix!r} is not a valid CouchDB database name prefix: "
                "start with a lowercase letter, then a-z 0-9 _ $ ( ) + - / only"
            )
            raise ValueError(msg)
        if not 1 <= self.fetch_chunk_hours <= 24:
            msg = f"KPI_FETCH_CHUNK_HOURS={self.fetch_chunk_hours} must be between 1 and 24"
            raise ValueError(msg)
        if self.ca_bundle and not Path(self.ca_bundle).is_file():
            msg = f"KPI_CA_BUNDLE={self.ca_bundle!r} is not a file (a PEM bundle of CAs)"
            raise ValueError(msg)
        if self.extract_parallel < 1:
            msg = f"KPI_EXTRACT_PARALLEL={self.extract_parallel} must be 1 or more"
            raise ValueError(msg)
        if not 0 <= self.restate_max_removed <= 1:
            msg = (f"KPI_RESTATE_MAX_REMOVED={self.restate_max_removed} must be a share "
                   "between 0 and 1")
            raise ValueError(msg)
        if self.max_document_bytes < 4096:
            msg = f"KPI_MAX_DOCUMENT_BYTES={self.max_document_bytes} must be at least 4096"
            raise ValueError(msg)
        if self.restate_days < 0:
            msg = f"KPI_RESTATE_DAYS={self.restate_days} must be 0 or more"
            raise ValueError(msg)
        windows = (self.restate_days + 1) * -(-24 // self.fetch_chunk_hours)
        if windows > MAX_MAPPED_WINDOWS:
            msg = (
                f"KPI_RESTATE_DAYS={self.restate_days} with KPI_FETCH_CHUNK_HOURS="
                f"{self.fetch_chunk_hours} makes {windows} fetch windows per nightly run; "
                f"Airflow maps at most {MAX_MAPPED_WINDOWS} tasks: restate fewer days or fetch "
                "larger windows"
            )
            raise ValueError(msg)
        if not NIGHTLY_AT_PATTERN.match(self.nightly_at):
            msg = f"KPI_NIGHTLY_AT={self.nightly_at!r} must be a UTC time HH:MM, e.g. 02:30"
            raise ValueError(msg)
        if self.task_timeout_minutes < 1:
            msg = f"KPI_TASK_TIMEOUT_MINUTES={self.task_timeout_minutes} must be at least 1"
            raise ValueError(msg)
        if self.min_segment_count < 0:
            msg = f"KPI_MIN_SEGMENT_COUNT={self.min_segment_count} must be 0 (no folding) or more"
            raise ValueError(msg)
        if self.retry_attempts < 1:
            msg = f"KPI_RETRY_ATTEMPTS={self.retry_attempts} must be at least 1"
            raise ValueError(msg)
        if self.bulk_size < 1:
            msg = f"KPI_BULK_SIZE={self.bulk_size} must be at least 1"
            raise ValueError(msg)
        if not 1 <= self.couchdb_writers <= 8:
            msg = f"KPI_COUCHDB_WRITERS={self.couchdb_writers} must be between 1 and 8"
            raise ValueError(msg)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from environment variables (unset ones keep their defaults)."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = environ.get(f.metadata["env"])
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.name, f.metadata["env"], type(f.default), raw)
        values.update(overrides)
        return cls(**values)

    @property
    def nightly_cron(self) -> str:
        """The nightly schedule as a cron expression (minute hour * * *), in UTC."""
        hour, minute = self.nightly_at.split(":")
        return f"{int(minute)} {int(hour)} * * *"

    @property
    def couchdb_url_redacted(self) -> str:
        """The CouchDB URL with any password replaced, safe for logs and errors."""
        return redact_url(self.couchdb_url)

    @property
    def source_url_redacted(self) -> str:
        """The KPIggybank URL with any password replaced, safe for logs and errors."""
        return redact_url(self.source_url)

    def redact(self, text: str) -> str:
        """`text` with the passwords of the KPIggybank and CouchDB URLs replaced by `***`.

        For messages that quote another library's error or a server's answer, which may
        repeat a URL: applied where such a message is raised or logged.
        """
        return redact(text, (self.source_url, self.couchdb_url))


def _parse(name: str, env: str, kind: type, raw: str) -> object:
    try:
        if kind is date:
            return date.fromisoformat(raw)
        if issubclass(kind, Path):
            return Path(raw)
        return kind(raw)
    except ValueError as exc:
        wanted = {int: "an integer", float: "a number", date: "a date (YYYY-MM-DD)"}.get(
            kind, f"a valid {kind.__name__}")
        detail = f": {exc}" if kind is date else ""  # which part of the date is wrong
        msg = f"{env}={raw!r} must be {wanted} (setting {name}){detail}"
        raise ValueError(msg) from exc


REDACTED = "***"


def redact_url(url: str) -> str:
    """`url` with its password (if any) replaced by `***`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    netloc = f"{userinfo.partition(':')[0]}:{REDACTED}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@functools.cache
def _tls_context(ca_bundle: str) -> ssl.SSLContext:
    if ca_bundle:
        return ssl.create_default_context(cafile=ca_bundle)
    import httpx

    return httpx.create_ssl_context()


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """`url` without its user and password, and (user, password) percent-decoded, or None.

    HTTP clients get the credentials apart (e.g. as basic auth), so the URL they log and put
    in their errors carries none.
    """
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    host = parts.netloc.rpartition("@")[2]
    bare = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return bare, (unquote(parts.username or ""), unquote(parts.password or ""))


def redact(text: str, urls: Iterable[str]) -> str:
    """`text` with the password of each of `urls` replaced by `***`, as written in the URL
    and percent-decoded (the one redaction rule; `redact_url` for a URL alone)."""
    for url in urls:
        password = urlsplit(url).password
        if not password:
            continue
        for form in sorted({password, unquote(password)}, key=len, reverse=True):
            text = text.replace(form, REDACTED)
    return text


def settings_table() -> list[tuple[str, str, str]]:
    """(environment variable, default, help) for every setting, in declaration order."""
    rows = []
    for f in fields(Settings):
        default = f.default.isoformat() if isinstance(f.default, date) else str(f.default)
        default = default or '""'
        rows.append((f.metadata["env"], default, f.metadata["help"]))
    return rows


def load_callback(path: str, setting: str = "KPI_FAILURE_CALLBACK") -> Callable[..., object]:
    """The function a `module:function` path names (ValueError when malformed)."""
    module, _, name = path.partition(":")
    if not module or not name:
        msg = f"{setting}={path!r} must look like package.module:function"
        raise ValueError(msg)
    return getattr(importlib.import_module(module), name)
