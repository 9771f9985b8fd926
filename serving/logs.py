"""Structured logs: one JSON object per line, for the server's own loggers (``mmserve.*``)."""

from __future__ import annotations

import json
import logging
from typing import Any


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", ...the record's ``fields``, "exception"}``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def config(level: str, access_log: bool) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for ``mmserve serve``: uvicorn's own loggers as uvicorn
    sets them, mmserve's as JSON lines on stderr (the access log only when asked for)."""
    from uvicorn.config import LOGGING_CONFIG

    return {
        **LOGGING_CONFIG,
        "formatters": {**LOGGING_CONFIG["formatters"], "json": {"()": JsonFormatter}},
        "handlers": {
            **LOGGING_CONFIG["handlers"],
            "json": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            },
        },
        "loggers": {
            **LOGGING_CONFIG["loggers"],
            "mmserve": {"handlers": ["json"], "level": level.upper(), "propagate": False},
            "mmserve.access": {
                "handlers": ["json"],
                "level": "INFO" if access_log else "WARNING",
                "propagate": False,
            },
        },
    }
