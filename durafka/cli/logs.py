"""Logging of the ``durafka`` commands: ``--log-level`` and ``--log-format``.

Every command logs to stderr, as text lines or as one JSON object per line
(for log collectors). The Kafka client libraries' own logs (librdkafka's,
through :data:`~durafka.transport.connection.LIBRDKAFKA_LOGGER`, and
aiokafka's) are shown only with ``--log-level debug``: at other levels a
connection problem is one line naming its cause, not their retry chatter.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from enum import StrEnum

from durafka.transport.connection import CLIENT_LIBRARY_LOGGERS

__all__ = ["JsonFormatter", "LogFormat", "LogLevel", "configure_logging", "uses_json"]

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class LogLevel(StrEnum):
    """``--log-level`` values."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class LogFormat(StrEnum):
    """``--log-format`` values."""

    TEXT = "text"
    JSON = "json"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time``, ``level``, ``logger``, ``message``[, ``exception``]."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a single line of JSON."""
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


_json = False


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is emitted.

    A command run in-process (a test's CLI runner swaps ``sys.stderr`` for its
    own stream, then closes it) must not leave a handler bound to a closed
    stream for the threads that go on logging.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def configure_logging(level: LogLevel = LogLevel.INFO, fmt: LogFormat = LogFormat.TEXT) -> None:
    """Send every log record of this process to stderr, at ``level``, as ``fmt``.

    Replaces the root logger's handlers, so calling it again (a test running
    several commands in one process) reconfigures rather than duplicates.
    """
    global _json
    _json = fmt is LogFormat.JSON
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter() if _json else logging.Formatter(_TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    quiet = level is not LogLevel.DEBUG
    for name in CLIENT_LIBRARY_LOGGERS:
        # Above CRITICAL: nothing of theirs passes unless asked for with debug.
        logging.getLogger(name).setLevel(logging.CRITICAL + 10 if quiet else logging.DEBUG)


def uses_json() -> bool:
    """Whether the last :func:`configure_logging` chose JSON lines."""
    return _json
