"""Logging: one line per event, human-readable by default, JSON with ``--log-format json``.

Every logger of lbdns is a child of ``lbdns`` (``lbdns.dns``, ``lbdns.http``, ``lbdns.query``,
...) and writes through the one handler set up here on the root logger, so both formats cover
every event, including those of libraries. An event may carry structured fields:
``log.info("query", extra={"fields": {"client": ip, ...}})``. The text format prints those the
message does not already show after it as ``key=value`` (values with spaces quoted); the JSON
format adds them all as keys.

Text:  ``2026-01-02T03:04:05.678Z INFO lbdns.query: query client=127.0.0.1 qname=...``
JSON:  ``{"time": "2026-01-02T03:04:05.678Z", "level": "info", "logger": "lbdns.query",
"message": "query", "client": "127.0.0.1", ...}``
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

# Keys of a JSON line that fields may not replace.
RESERVED = ("time", "level", "logger", "message")


def _timestamp(record: logging.LogRecord) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{stamp}.{int(record.msecs):03d}Z"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, dict) else {}


def _text_value(value: Any) -> str:
    text = str(value)
    if not text or any(ch.isspace() or ch in "\"'=" for ch in text):
        return json.dumps(text)
    return text


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message key=value ...``. Fields whose value the message already
    shows are not repeated. Further lines of a message (a list of zone errors) and a traceback
    follow on indented lines, so every line that starts at the margin starts an event."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        extra = [
            f"{k}={_text_value(v)}" for k, v in _fields(record).items() if str(v) not in message
        ]
        first, *more = message.split("\n")
        line = f"{_timestamp(record)} {record.levelname} {record.name}: {first}"
        if extra:
            line += " " + " ".join(extra)
        if more:
            line += "\n" + "\n".join("    " + row for row in more)
        if record.exc_info:
            trace = self.formatException(record.exc_info)
            line += "\n" + "\n".join("    " + row for row in trace.splitlines())
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a traceback is one string field, so it stays on the line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _fields(record).items():
            line[f"field_{key}" if key in RESERVED else key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class ClientFaultFilter(logging.Filter):
    """aiohttp logs a request it cannot parse (a body that is not the gzip it claims to be, ...)
    as an unhandled exception with a traceback at ERROR. The client sent bad input and already
    got a 4xx: keep one INFO line without the traceback, so bad requests cannot flood the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if (
            record.levelno >= logging.ERROR
            and record.exc_info
            and _client_fault(record.exc_info[1])
        ):
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args = "bad request from a client: %s", (record.exc_info[1],)
            record.exc_info = record.exc_text = None
        return True


def _client_fault(exc: BaseException | None) -> bool:
    from aiohttp.http_exceptions import HttpProcessingError

    while exc is not None:
        if isinstance(exc, HttpProcessingError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class LineHandler(logging.StreamHandler):
    """Each record is one ``write(2)`` on the stream's descriptor, so that processes sharing it
    (the DNS workers inherit the main process's standard error) never split one another's
    lines: a file takes each write whole (at its end with O_APPEND; without, at the offset the
    processes share, as they share the main process's open file); a pipe, whole up to 4 KiB.
    A stream with no descriptor (a test's capture) is written as usual."""

    def __init__(self, stream: Any):
        super().__init__(stream)
        try:
            self.fd: int | None = stream.fileno()
        except (AttributeError, OSError, ValueError):
            self.fd = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.fd is None:
            super().emit(record)
            return
        try:
            line = (self.format(record) + "\n").encode("utf-8", "backslashreplace")
            self.stream.flush()  # whatever else was written to the stream goes first
            view = memoryview(line)
            while view:
                view = view[os.write(self.fd, view) :]
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


def setup(log_format: str = "text", level: str = "info") -> None:
    handler = LineHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ClientFaultFilter) for f in server_log.filters):
        server_log.addFilter(ClientFaultFilter())
