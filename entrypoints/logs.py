"""Logging set-up for `pairgate serve`: readable text, or one JSON object per line.

JSON lines carry `time`, `level`, `logger`, `message`, the session `key` when the log call
is about one (it passes `extra={"key": key}`), an `exception` when there is one, and any
other `extra=` fields.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Attributes every LogRecord has; anything else came in through `extra=`.
STANDARD = set(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


# Secrets as they show up in log lines: query parameters (uvicorn logs request URLs, and
# browsers and clients put tokens there), Authorization values, credential fields of
# dicts or JSON, and passwords in URLs (a database URL in an error).
REDACTED = "[redacted]"
SECRET_PATTERNS = (
    re.compile(
        r"(?i)([?&;](?:access_|auth_|id_|refresh_)?"
        r"(?:token|auth|authorization|password|passwd|secret|api_?key)=)[^&;\s\"'#]+"
    ),
    re.compile(r"(?i)(\bbearer\s+)[^\s,;\"')\]]+"),
    re.compile(r"(?i)(\bbasic\s+)[A-Za-z0-9+/=]{8,}"),
    re.compile(
        r"(?i)([\"']?\b(?:access_)?(?:token|authorization|password|secret)[\"']?\s*[:=]\s*b?[\"'])"
        r"[^\"']+"
    ),
    re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/\s@]+:)[^@\s/]+(@)"),
)
# The loggers uvicorn writes on: in text mode they have handlers of their own, and a
# logger's filters apply to what is logged on that very logger.
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


def configure_logging(level: str, fmt: str = "text", secrets: Iterable[str] = ()) -> None:
    """Log to stderr, in `fmt`, with `secrets` (the access tokens) and anything that looks
    like a secret taken out of every line."""
    redact = RedactSecrets(secrets)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(redact)
    root = logging.getLogger()
    for previous in root.handlers[:]:
        root.removeHandler(previous)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # python-socketio and python-engineio give these loggers a handler of their own unless
    # a level is set first; set one, and their errors (Redis down) come out here, once.
    for library in ("socketio.server", "engineio.server"):
        logging.getLogger(library).setLevel(logging.ERROR)
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, RedactSecrets)]:
            logger.removeFilter(old)
        logger.addFilter(redact)


class RedactSecrets(logging.Filter):
    """Rewrites a record before any handler formats it: its message, arguments, extra
    fields and exception text lose every secret. Arguments stay arguments (uvicorn's
    access formatter reads them one by one)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        # Known tokens anywhere in a line; the longest first, in case one contains another.
        known = sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True)
        self._known = re.compile("|".join(map(re.escape, known))) if known else None

    def redact(self, text: str) -> str:
        if self._known is not None:
            text = self._known.sub(REDACTED, text)
        for pattern in SECRET_PATTERNS:
            text = pattern.sub(_keep_around, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self._clean(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {name: self._clean(arg) for name, arg in record.args.items()}
        if not record.args:
            record.msg = self._clean(record.msg)
        elif record.name != "uvicorn.access":
            # A secret split between the template and an argument ("Bearer %s"): the line
            # as a whole. (The access formatter needs its arguments; they are URLs and
            # addresses, cleaned one by one above.)
            message = record.getMessage()
            clean = self.redact(message)
            if clean != message:
                record.msg, record.args = clean, ()
        for name, value in list(vars(record).items()):
            if name not in STANDARD:  # extra= fields: JSON lines show them
                setattr(record, name, self._clean(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True

    def _clean(self, arg: Any) -> Any:
        if isinstance(arg, str):
            return self.redact(arg)
        if isinstance(arg, int | float | bool) or arg is None:
            return arg
        text = str(arg)
        clean = self.redact(text)
        return arg if clean == text else clean


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        key = getattr(record, "key", None)  # extra={"key": key}: the line is about a session
        if key is not None:
            line["key"] = key if _is_json(key) else str(key)
        for name, value in vars(record).items():
            if name not in STANDARD and name not in line and name != "key":
                line[name] = value if _is_json(value) else str(value)
        if record.exc_text:  # redacted already
            line["exception"] = record.exc_text
        elif record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False)


def _keep_around(match: re.Match[str]) -> str:
    """A secret's match with the secret replaced: group 1 before it, group 2 after it."""
    after = match.group(2) if match.re.groups > 1 else ""
    return match.group(1) + REDACTED + after


def _is_json(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)
