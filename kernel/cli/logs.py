"""What `run` and `serve` print while they run: one line per fire and finish (text or JSON),
status lines, and the kernel's log records on stderr."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..clock import SystemClock
from ..fmt import fmt_duration, iso_utc, short_id
from ..observe.eventlog import JsonEventLog, JsonFormatter


class FireLog:
    """`--log-fires`: one line on stdout per fire and per finish (warnings go to the log)."""

    def __init__(self, out: Callable[[str], None]):
        self.out = out
        self.fires: dict[str, dict[str, Any]] = {}

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        if event == "fire":
            self.fires[data["run_row_id"]] = data
            slot = iso_utc(data["scheduled_for"], ms=True) if data["scheduled_for"] else "-"
            self.out(
                f"{iso_utc(data['at'], ms=True)}  fire    {data['name']}  "
                f"attempt={data['attempt']} trigger={data['trigger']} slot={slot} "
                f"run={short_id(data['run_row_id'])} replica={data['replica']}"
            )
        elif event == "finish":
            fire = self.fires.pop(data["run_row_id"], {})
            took = (data["at"] - fire["at"]) * 1000 if "at" in fire else None
            extra = f" retry_at={iso_utc(data['retry_at'], ms=True)}" if data["retry_at"] else ""
            if not data["recorded"]:
                extra += " (not recorded: lease lost)"
            self.out(
                f"{iso_utc(data['at'], ms=True)}  finish  {fire.get('name', data['schedule_id'])}  "
                f"status={data['status']} took={fmt_duration(took)} "
                f"run={short_id(data['run_row_id'])}{extra}"
            )


def _print_flush(line: str) -> None:
    print(line, flush=True)


class _UtcFormatter(logging.Formatter):
    """Record times as ISO 8601 UTC with milliseconds, like every other time the CLI prints."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"


@contextlib.contextmanager
def log_to_stderr(level: int, log_format: str = "text") -> Iterator[None]:
    """The "leasecron" loggers' records at `level` and up, one line each on stderr (a JSON
    object each with log_format="json")."""
    logger = logging.getLogger("leasecron")
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(_UtcFormatter("%(asctime)s %(levelname)s %(message)s"))
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def fire_log(args: argparse.Namespace, clock: SystemClock, fires: bool) -> Any:
    """The fire/finish lines of `run --log-fires` and `serve`: text, or JSON objects."""
    if args.log_format == "json":
        return JsonEventLog(_print_flush, clock, fires=fires)
    return FireLog(_print_flush) if fires else None


def say(args: argparse.Namespace, event: str, text: str, **fields: Any) -> None:
    """A status line on stdout: the text, or a JSON object under --log-format json."""
    if args.log_format == "json":
        print(json.dumps({"event": event, "message": text, **fields}), flush=True)
    else:
        print(text, flush=True)
