"""Logging set-up, for the server and the relay's process alike."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter


def configure_logging(level: str, form: str) -> None:
    """Logs go to stderr: one JSON object a line (`time`, `level`, `logger`, `message` and
    the line's own fields), or plain text."""
    handler = logging.StreamHandler(sys.stderr)
    if form == "json":
        handler.setFormatter(
            JsonFormatter(
                "{asctime}{levelname}{name}{message}",
                style="{",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                timestamp=False,
            )
        )
    elif form == "text":
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    else:
        raise SystemExit(f"--log-format is json or text, not {form!r}")
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
