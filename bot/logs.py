"""JSON logs, one object per line, carrying the correlation fields given in `extra`.
Message text appears only when LOG_MESSAGE_TEXT is on (the `text` field)."""

from __future__ import annotations

import json
import logging
import sys
import time

CONTEXT_FIELDS = (
    "ref", "thread_key", "ts", "event_id", "session", "invocation", "outcome", "seeded",
    "kind", "retry", "text",
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = record.__dict__.get(name)
            if value not in (None, ""):
                data[name] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


def setup_logging(level: str = "INFO", *, json_lines: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # `bot.bolt` is the logger Bolt and its Socket Mode client are given: at DEBUG they log
    # whole envelopes (message text), so it stays at WARNING like the libraries themselves.
    for noisy in ("httpx", "httpcore", "slack_bolt", "slack_sdk", "uvicorn.access", "bot.bolt"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
