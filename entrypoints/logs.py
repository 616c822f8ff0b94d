"""Logging set-up for `pairgate serve`: readable text, or one JSON object per line.

JSON lines carry `time`, `level`, `logger`, `message`, the session `key` when the log call
is about one, an `exception` when there is one, and any other `extra=` fields.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from adapters.payloads import KEY_PATTERN

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# pairgate's log calls pass a session key as a %s argument ("engine report for %s failed");
# the word before the placeholder says which one is the key.
KEY_PLACEHOLDER = re.compile(
    r"\b(?:for|of|quiet on|start|resume|unlink|reconnect|pairing|that) %s"
    r"|^(?:neonize: )?%s\b"  # "neonize: %s lost its connection"
)
PLACEHOLDER = re.compile(r"%[-#0 +]*\d*(?:\.\d+)?[sdifrxXeEgGc%]")
KEY_VALUE = re.compile(KEY_PATTERN)
# Attributes every LogRecord has; anything else came in through `extra=`.
STANDARD = set(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


def configure_logging(level: str, fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for previous in root.handlers[:]:
        root.removeHandler(previous)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # python-socketio and python-engineio give these loggers a handler of their own unless
    # a level is set first; set one, and their errors (Redis down) come out here, once.
    for library in ("socketio.server", "engineio.server"):
        logging.getLogger(library).setLevel(logging.ERROR)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        key = getattr(record, "key", None) or key_argument(record)
        if key is not None:
            line["key"] = key
        for name, value in vars(record).items():
            if name not in STANDARD and name not in line:
                line[name] = value if _is_json(value) else str(value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False)


def key_argument(record: logging.LogRecord) -> str | None:
    """The session key among a record's %-arguments, when its message names one."""
    template, args = record.msg, record.args
    if not isinstance(template, str) or not isinstance(args, tuple) or not args:
        return None
    match = KEY_PLACEHOLDER.search(template)
    if match is None:
        return None
    # Which argument the matched "%s" consumes: count the placeholders before it.
    before = template[: match.end() - 2]
    index = sum(1 for p in PLACEHOLDER.findall(before) if p != "%%")
    value = args[index] if index < len(args) else None
    return value if isinstance(value, str) and KEY_VALUE.match(value) else None


def _is_json(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)
