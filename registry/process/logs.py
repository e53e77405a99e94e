"""Structured JSON logs: one object a line, with event id, model and version when known."""

from __future__ import annotations

import json
import logging
import os
import sys

CONTEXT_FIELDS = (
    "event_id",
    "model",
    "version",
    "user",
    "task",
    "task_id",
    "notice_ts",
    "route",
)


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "at": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: getattr(record, k) for k in CONTEXT_FIELDS if hasattr(record, k)})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str | None = None) -> None:
    """Send JSON logs to stderr at LOG_LEVEL (default INFO)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(log_level(level))
    logging.captureWarnings(True)  # a library's warning is a log line too, not bare text


def log_level(level: str | None = None) -> str:
    """Return the level to log at: `level`, else LOG_LEVEL, else INFO."""
    return (level or os.environ.get("LOG_LEVEL", "") or "INFO").upper()


def logging_config(level: str | None = None) -> dict:
    """Return a `logging.config.dictConfig` dict doing what configure_logging does, for
    servers that configure logging themselves (gunicorn's `logconfig_dict`): every logger,
    the server's own included, writes JSON to stderr."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    # Gunicorn's loggers lose their plain-text handlers and pass their lines to the root's.
    own = {"handlers": [], "propagate": True}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"json": handler},
        "root": {"level": log_level(level), "handlers": ["json"]},
        "loggers": {"gunicorn.error": own, "gunicorn.access": own},
    }
