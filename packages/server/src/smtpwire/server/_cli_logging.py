"""The command line's logging: where the server's log lines go and how they
look.  Only the command line configures logging; the library only logs
(see :mod:`smtpwire.server._log_lines`).

``--log-format text`` (the default) writes ``time logger LEVEL message`` lines;
``--log-format json`` one JSON object per line, for log collectors (Loki,
Elasticsearch, journald's ``--output=json`` readers) that would otherwise have to
parse the text back: the transaction line's fields are keys of their own.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any

from ._log_lines import TRANSACTION

__all__ = ["LOG_FORMATS", "JsonFormatter", "configure_logging"]

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: ``time`` (ISO 8601, UTC),
    ``level``, ``logger``, ``message``, the transaction line's fields when the
    record has them, and ``exception`` with the traceback when there is one
    (a newline inside a JSON string is escaped, so the record stays one line)."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created, tz=datetime.timezone.utc)
        entry: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, TRANSACTION, None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(debug: int, log_format: str = "text") -> None:
    """stderr, WARNING and up; ``-d`` adds the server's INFO lines (sessions and
    the transaction lines), ``-dd`` its DEBUG lines, ``-ddd`` asyncio's debug mode.
    As :func:`logging.basicConfig`, nothing changes if the program calling
    ``main()`` configured logging already."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    if debug:
        level = logging.INFO if debug == 1 else logging.DEBUG
        logging.getLogger("mail.log").setLevel(level)
        logging.getLogger("mail.debug").setLevel(level)
    if debug >= 3:
        logging.getLogger("asyncio").setLevel(logging.DEBUG)
