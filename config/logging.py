"""Log formatters: JSON lines in production, readable text in development.

Anything passed through ``extra=`` (``generation_id``, ``run_id``, ``user_id`` …) is kept, so every
line of the generation pipeline can be followed by its generation and run.
"""

import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _context(record: logging.LogRecord) -> dict:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload.update(_context(record))
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = _context(record)
        if context:
            line += " " + " ".join(f"{k}={v}" for k, v in context.items())
        return line


# Capability secrets that travel in URL paths (the ComfyDeploy webhook token, password-reset and
# email-confirmation keys) must never reach a log line: Django logs 4xx/5xx paths, gunicorn logs
# every path.
_SECRET_PATHS = (
    (re.compile(r"(/webhooks/comfydeploy/[^/\s'\"]+/)[^/\s'\"]+"), r"\1<redacted>"),
    (re.compile(r"(/accounts/password/reset/key/)[^/\s'\"]+"), r"\1<redacted>"),
    (re.compile(r"(/accounts/confirm-email/)[^/\s'\"]+"), r"\1<redacted>"),
)


def redact_secrets(text: str) -> str:
    for pattern, replacement in _SECRET_PATHS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecretsFilter(logging.Filter):
    """Redacts secret URL segments from the message, its arguments and the ``request`` extra."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact_secrets(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact_secrets(a) if isinstance(a, str) else a for a in record.args)
        request = getattr(record, "request", None)
        if request is not None and not isinstance(request, str):
            record.request = redact_secrets(repr(request))
        return True


# Fields every log line inside a block carries (e.g. the generation and run around a ComfyDeploy
# call, so the HTTP client's own lines name them too without knowing about generations).
_LOG_CONTEXT: ContextVar[dict[str, object] | None] = ContextVar("log_context", default=None)


@contextmanager
def log_context(**fields: object) -> Iterator[None]:
    token = _LOG_CONTEXT.set({**(_LOG_CONTEXT.get() or {}), **fields})
    try:
        yield
    finally:
        _LOG_CONTEXT.reset(token)


class LogContextFilter(logging.Filter):
    """Adds the current ``log_context`` fields to a record (fields it already has win)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_LOG_CONTEXT.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True
