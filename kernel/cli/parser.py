"""The `leasecron` argument parser, and a ValidationError told in the flags the user typed."""

from __future__ import annotations

import argparse
import re
from typing import Any

from ..errors import ValidationError
from ..fmt import iso_utc
from ..model import IF_EXISTS, MISFIRE_POLICIES, OVERLAP_POLICIES
from ..parts import present
from .inputs import TOKEN_ENV

PROG = "leasecron"
DEFAULT_DB = "leasecron.db"

# Kernel field names whose flag is named differently (the rest are the flag's dest).
_FIELD_DEST = {
    "interval_seconds": "interval",
    "retry_delay_seconds": "retry_delay",
    "timeout_seconds": "timeout",
    "jitter_seconds": "jitter",
    "cron_expr": "cron",
}


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="leasecron: a lease-based scheduler for agent services."
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db",
        default=DEFAULT_DB,
        metavar="PATH_OR_URL",
        help=f"a SQLite file, or a store URL such as postgresql://user@host/db "
        f"(default: {DEFAULT_DB})",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", parents=[common], help="run one scheduler replica until a signal")
    p.add_argument("--base-url", required=True, help="where endpoints are called, e.g. AgentOS")
    secret = p.add_mutually_exclusive_group()
    secret.add_argument(
        "--token-file",
        metavar="PATH",
        help=f"file holding the bearer token sent with every call (or set {TOKEN_ENV})",
    )
    secret.add_argument(
        "--token", help=f"bearer token (visible in ps: prefer --token-file or {TOKEN_ENV})"
    )
    p.add_argument("--replica-id", help="this replica's name (default: host-pid-random)")
    p.add_argument("--poll-interval", type=_number, default=1.0)
    p.add_argument("--lease-seconds", type=_number, default=30.0)
    p.add_argument("--max-concurrent", type=int, default=10)
    p.add_argument(
        "--allow-host",
        action="append",
        metavar="HOST",
        help="host (or host:port) absolute endpoint URLs may call; repeatable",
    )
    p.add_argument("--log-fires", action="store_true", help="print one line per fire and finish")
    p.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text lines, or one JSON object per line (fires, finishes, warnings, status)",
    )
    p.add_argument(
        "--quiet",
        action="store_true",
        help="log errors only (default: also warnings: failed attempts, lost leases)",
    )
    p.add_argument("--retention-days", type=_number, default=30.0, help="0 keeps all run rows")

    p = sub.add_parser("add", parents=[common], help="create a schedule")
    p.add_argument("name")
    p.add_argument("--endpoint", required=True, help="path like /agents/x/runs, or an http URL")
    timing = p.add_mutually_exclusive_group()
    timing.add_argument("--cron", metavar="EXPR", help='cron expression, e.g. "*/5 * * * *"')
    timing.add_argument("--interval", type=_number, metavar="SECONDS")
    timing.add_argument(
        "--run-at", metavar="WHEN", help="one-off: epoch seconds or ISO 8601 (naive: --timezone)"
    )
    p.add_argument(
        "--payload", metavar="JSON", help="JSON object sent with every call, or @FILE to read it"
    )
    p.add_argument("--timezone", metavar="TZ", help="IANA zone for cron (default UTC)")
    p.add_argument("--max-retries", type=int, metavar="N")
    p.add_argument("--retry-delay", type=_number, metavar="S")
    p.add_argument("--timeout", type=_number, metavar="S")
    p.add_argument("--overlap", choices=OVERLAP_POLICIES)
    p.add_argument("--misfire", choices=MISFIRE_POLICIES)
    p.add_argument("--jitter", type=_number, metavar="S")
    p.add_argument("--method", help="HTTP method (default POST)")
    p.add_argument("--description", metavar="TEXT")
    p.add_argument("--if-exists", choices=IF_EXISTS, default="raise")
    p.add_argument(
        "--allow-host",
        action="append",
        metavar="HOST",
        help="host (or host:port) an absolute --endpoint URL may name; repeatable "
        "(the replicas' `run --allow-host` must allow it too)",
    )

    p = sub.add_parser("list", parents=[common], help="list schedules")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--enabled", action="store_true", help="only enabled schedules")
    which.add_argument("--disabled", action="store_true", help="only disabled schedules")

    p = sub.add_parser(
        "show", parents=[common], help="all fields of a schedule and its last 5 runs, or of a run"
    )
    p.add_argument("schedule", metavar="NAME_OR_ID", nargs="?")
    p.add_argument("--run", metavar="RUN_ID", help="one run row whole (id or the short id of runs)")

    for name, text in (
        ("pause", "disable a schedule (pending triggers and retries are cancelled)"),
        ("resume", "enable a schedule from its next slot"),
        ("trigger", "queue a run now; prints the pending run id"),
        ("rm", "delete a schedule (its run history stays)"),
    ):
        p = sub.add_parser(name, parents=[common], help=text)
        p.add_argument("schedule", metavar="NAME_OR_ID")

    p = sub.add_parser(
        "status", parents=[common], help="replicas, leases, overdue schedules, recent failures"
    )
    p.add_argument("--window-minutes", type=_number, default=60, help="history summarised")
    p.add_argument("--json", action="store_true", help="the same as one JSON object")

    p = sub.add_parser("runs", parents=[common], help="the newest runs, oldest first")
    p.add_argument("schedule", metavar="NAME_OR_ID", nargs="?")
    p.add_argument("--limit", type=int, default=20)

    p = sub.add_parser("prune", parents=[common], help="delete finished runs older than N days")
    p.add_argument("--older-than-days", type=_number, required=True, metavar="DAYS")

    _add_sim(sub)

    p = sub.add_parser("demo", help="local target + replicas + an exactly-once report")
    p.add_argument("--seconds", type=_number, default=20.0)
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--db", default=None, help="SQLite file (default: a new temporary file)")
    p.add_argument(
        "--grace",
        type=_number,
        default=None,
        help="seconds attempts in flight may finish at stop (default: min(2, seconds/10))",
    )
    p.add_argument("--seed", type=int, default=None, help="seed of the flaky target")
    p = sub.add_parser("serve", help="serve an AgentOS (default: the demo app) with its scheduler")
    p.add_argument(
        "--app",
        metavar="TARGET",
        help="module:attr or path.py:attr naming an AgentOS or an ASGI app "
        "(default: examples/agentos_app.py:agent_os in the project)",
    )
    p.add_argument(
        "--db",
        metavar="PATH_OR_URL",
        help="the AgentOS's store, instead of the one the app names (a SQLite file or a URL)",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7777, help="0 picks a free port")
    p.add_argument(
        "--no-scheduler", action="store_true", help="serve the routes only; fire nothing"
    )
    p.add_argument(
        "--token-file",
        metavar="PATH",
        help=f"file holding the bearer token every request must carry (or set {TOKEN_ENV})",
    )
    p.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text lines, or one JSON object per line (fires, finishes, warnings, status)",
    )
    p.set_defaults(token=None)
    return parser


def _add_sim(sub: Any) -> None:
    """`sim`'s flags; in a copy of the kernel without sim/, a `sim` that only says so."""
    if not present("sim"):
        # no option prefix: any flags after `sim` are taken as they are, and main() says why not
        p = sub.add_parser(
            "sim",
            help="(not in this copy of the kernel: it has no sim/ folder)",
            prefix_chars="\0",
            add_help=False,
        )
        p.add_argument("ignored", nargs="*")
        return
    from ..sim.config import FAULTS

    p = sub.add_parser("sim", help="deterministic simulation with faults and an invariant check")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--schedules", type=int, default=24)
    p.add_argument("--hours", type=_number, default=2.0, help="simulated hours of faults")
    p.add_argument("--faults", default="all", help=f"all, none, or a list of: {','.join(FAULTS)}")
    p.add_argument("--fault-rate", type=_number, default=1.0)
    p.add_argument(
        "--min-interval",
        type=_number,
        default=20.0,
        help="the densest interval schedule, seconds (lower fires more)",
    )
    p.add_argument("--seeds", type=int, default=1, help="run this many seeds from --seed on")
    p.add_argument(
        "--store",
        metavar="URL",
        help="run on this store instead of a temporary SQLite file, e.g. postgresql://... "
        "(each run gets a new schema, kept for inspection)",
    )


def _flags(parser: argparse.ArgumentParser, command: str) -> dict[str, str]:
    """dest -> the long flag that sets it, for `command`'s options."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {
        a.dest: max(a.option_strings, key=len)
        for a in sub.choices[command]._actions
        if a.option_strings
    }


_PAST = re.compile(r"^(-?\d+(?:\.\d+)?) is in the past \(now (\d+(?:\.\d+)?)\)$")


def flag_message(parser: argparse.ArgumentParser, command: str, exc: ValidationError) -> str:
    """A ValidationError as the user typed it: the flag, not the kernel's field name, and
    epoch times as ISO 8601 UTC."""
    field = exc.field
    message = str(exc)[len(field) + 2 :]
    flag = _flags(parser, command).get(_FIELD_DEST.get(field, field), field)
    past = _PAST.match(message)
    if past:
        message = f"{iso_utc(float(past[1]))} is in the past (now {iso_utc(float(past[2]))})"
    return f"{flag}: {message}"
