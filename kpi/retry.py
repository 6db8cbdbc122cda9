"""One retry policy for every remote call (KPIggybank and CouchDB): exponential backoff."""

from __future__ import annotations

import functools
import logging

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from kpi.settings import Settings

log = logging.getLogger(__name__)


def retrying(settings: Settings, transient: tuple[type[BaseException], ...]) -> Retrying:
    """Retry on `transient` errors: `KPI_RETRY_ATTEMPTS` attempts, waits doubling from
    `KPI_RETRY_BACKOFF` seconds (at most 30 s). When they run out, tenacity's RetryError is
    raised; callers turn it into their own clear error."""
    return Retrying(
        stop=stop_after_attempt(settings.retry_attempts),
        wait=wait_exponential(multiplier=settings.retry_backoff, max=30),
        retry=retry_if_exception_type(transient),
        before_sleep=functools.partial(_log_retry, settings),
    )


def _log_retry(settings: Settings, state) -> None:
    error = settings.redact(str(state.outcome.exception()))
    log.warning("attempt %s failed: %s; retrying", state.attempt_number, error)
