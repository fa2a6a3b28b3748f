"""What the command line reads from the user: a run time, a JSON payload, the bearer token,
and a schedule named by id, name or id prefix. Each bad value is a ValidationError naming it."""

from __future__ import annotations

import argparse
import json
import math
import os
from datetime import datetime
from typing import Any

from ..cron import load_timezone
from ..errors import ScheduleNotFoundError, ValidationError
from ..manager import ScheduleManager
from ..model import Schedule

TOKEN_ENV = "LEASECRON_TOKEN"


def parse_run_at(text: str, tz: str | None) -> float:
    """Epoch seconds, or ISO 8601; a naive ISO time is read in `tz` (default UTC)."""
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise ValidationError("run_at", f"{text!r} must be finite")
        return value
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(
            "run_at", f"{text!r} is neither epoch seconds nor ISO 8601 (2030-01-31T09:00:00Z)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=load_timezone(tz or "UTC"))
    return dt.timestamp()


def parse_payload(text: str) -> Any:
    """JSON text, or @PATH: the JSON in that file."""
    where = ""
    if text.startswith("@"):
        path = text[1:]
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValidationError("payload", f"cannot read {path}: {_reason(exc)}") from None
        where = f"{path}: "
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValidationError("payload", f"{where}not valid JSON: {exc}") from None


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def read_token(args: argparse.Namespace) -> str | None:
    """The bearer token: --token-file (its trailing newline stripped), --token, or the
    LEASECRON_TOKEN environment variable; a file or variable keeps the secret out of `ps`."""
    if args.token_file is not None:
        try:
            with open(args.token_file, encoding="utf-8") as f:
                token = f.read().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValidationError(
                "--token-file", f"cannot read {args.token_file}: {_reason(exc)}"
            ) from None
        source = "--token-file"
        if not token.strip():
            raise ValidationError("--token-file", f"{args.token_file} is empty")
    elif args.token is not None:
        token, source = args.token, "--token"
    else:
        token, source = os.environ.get(TOKEN_ENV) or None, TOKEN_ENV
    if token is not None and ("\n" in token or "\r" in token):
        raise ValidationError(source, "the token must be one line")
    return token


async def resolve(manager: ScheduleManager, key: str) -> Schedule:
    """A schedule by id, by name, or by a unique id prefix (the short id of `list`)."""
    schedule = await manager.get(key) or await manager.get_by_name(key)
    if schedule is not None:
        return schedule
    if len(key) >= 4:
        matches = [s for s in await manager.list() if s.id.startswith(key)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            names = ", ".join(s.name for s in matches)
            raise ValidationError("schedule", f"id prefix {key!r} is ambiguous: {names}")
    raise ScheduleNotFoundError(key)
