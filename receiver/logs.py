"""structlog set-up: our lines and the standard library's (uvicorn, httpx, asyncpg) through one renderer,
JSON lines when stderr is not a terminal and readable lines on one; nothing secret reaches a line."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import structlog
from structlog.stdlib import ProcessorFormatter

# Values under these keys are never shown, whatever they hold.
SECRET_KEYS = frozenset(
    {"authorization", "api_key", "x-key", "password", "secret", "token", "webhook_secret", "x-webhook-secret"}
)
_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^\s/@'\"]*@", re.IGNORECASE)
_QUERY = re.compile(r"(?P<url>[a-z][a-z0-9+.-]*://[^\s?'\"]*)\?[^\s'\"]*", re.IGNORECASE)
# One line per HTTP request the clients make is too much at info; at debug they are all shown.
CHATTY_LOGGERS = ("httpx", "httpcore")


def scrub(text: str) -> str:
    """`text` with the credentials and query strings of any URL in it replaced by `***`: DSN passwords,
    tokens in sink URLs and the signatures of result URLs never reach a log line."""
    return _QUERY.sub(r"\g<url>?***", _CREDENTIALS.sub(r"\g<scheme>***@", text))


def scrub_values(logger: Any, name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event.items():
        if key.lower() in SECRET_KEYS:
            event[key] = "***"
        elif isinstance(value, str) and "://" in value:
            event[key] = scrub(value)
    return event


def job_keys(logger: Any, name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A line about a job names its BFL task too (null until BFL gave it one)."""
    if "job_id" in event:
        event.setdefault("bfl_task_id", None)
    return event


@contextmanager
def about_job(job_id: str, bfl_task_id: str | None) -> Iterator[None]:
    """Every line logged inside, ours or a library's through structlog (stamina's retries), carries
    the job's ids."""
    with structlog.contextvars.bound_contextvars(job_id=job_id, bfl_task_id=bfl_task_id):
        yield


def configure_logging(level: str = "info", json: bool | None = None) -> None:
    """Log at `level` to stderr; `json=None` chooses JSON lines unless stderr is a terminal."""
    as_json = not sys.stderr.isatty() if json is None else json
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        job_keys,
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, *shared, ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                scrub_values,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(level.upper() if level == "debug" else logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # through the root handler above
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
