"""Logs: one JSON object a line (or plain text for development), each with its request id.

The request id lives in a context variable that the HTTP middleware sets for the
request (``tokenbank.api.observe``): every record logged while the request runs,
by tokenbank, SQLAlchemy, the payments code or uvicorn, carries it, through a filter
on the handler that stamps it on the record. A task started during a request copies
its context: a group-commit writer's lines (the SQL of a batch that may hold other
requests' operations too) carry the id of the request that started it.

The JSON formatter is the standard ``logging.Formatter`` subclassed in a few lines
rather than a library's: it writes a fixed set of fields (time, level, logger,
message, request id, process, traceback, and a ``fields`` dict a call passes on
purpose) and never copies a record's other attributes, so a library that hangs a
request or its headers on a record cannot put them in a log line.
"""

from __future__ import annotations

import json
import logging
import logging.config
import random
import re
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["json", "text"]

REQUEST_ID_HEADER = "x-request-id"
# The request's id in its ASGI scope's state (``request.state.request_id``).
REQUEST_ID_STATE = "request_id"
# What an incoming X-Request-ID may be: enough for a UUID, a ULID or a trace id,
# nothing that could break a log line or a header (no spaces, quotes, controls).
MAX_REQUEST_ID_LENGTH = 128
REQUEST_ID_PATTERN = re.compile(rf"^[A-Za-z0-9._:-]{{1,{MAX_REQUEST_ID_LENGTH}}}$")

request_id_var: ContextVar[str | None] = ContextVar("tokenbank_request_id", default=None)


def new_request_id() -> str:
    """128 random bits as 32 hex digits (a UUID's entropy without building a UUID).

    An id, not a secret: Python's generator (seeded by the OS, and again in a forked
    child) draws it without the system call ``os.urandom`` made on every request,
    2% of a ping's CPU under load (py-spy).
    """
    return f"{random.getrandbits(128):032x}"


def accepted_request_id(header: bytes | None) -> str:
    """The client's X-Request-ID when it is safe to repeat, else a new one."""
    if header is not None and len(header) <= MAX_REQUEST_ID_LENGTH:
        text = header.decode("latin-1")
        if REQUEST_ID_PATTERN.fullmatch(text):
            return text
    return new_request_id()


class RequestIdFilter(logging.Filter):
    """Stamps ``record.request_id`` (None outside a request); never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, message, request_id, pid, [fields], [exc]."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
            "pid": record.process,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line["fields"] = fields
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def logging_config(log_format: LogFormat, level: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dict: one stderr handler on the root logger.

    The root stays at WARNING: SQLAlchemy logs every statement once its logger is at
    INFO. tokenbank's own loggers and uvicorn's take ``level``.
    """
    level = level.upper()
    formatter: dict[str, Any] = (
        {"()": JsonFormatter} if log_format == "json" else {"format": TEXT_FORMAT}
    )
    named = {"level": level, "handlers": [], "propagate": True}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"default": formatter},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "default",
                "filters": ["request_id"],
            }
        },
        "root": {"level": "WARNING", "handlers": ["default"]},
        "loggers": {
            "tokenbank": dict(named),
            "uvicorn": dict(named),
            "uvicorn.error": dict(named),
            "uvicorn.access": dict(named),
        },
    }


def configure_logging(log_format: LogFormat, level: str) -> None:
    logging.config.dictConfig(logging_config(log_format, level))
