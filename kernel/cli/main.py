"""The `leasecron` command line: run a replica, manage schedules in a SQLite file, inspect runs,
and a self-contained demo (a local HTTP target, several replicas on one file, an exactly-once
report checked against what the target actually received).

    leasecron run   --db PATH --base-url URL [--token-file F] [--log-fires] [--quiet] ...
    leasecron add   NAME --endpoint /agents/x/runs (--cron EXPR | --interval S | --run-at T) ...
    leasecron list  [--enabled | --disabled]
    leasecron show  NAME_OR_ID | --run RUN_ID
    leasecron pause | resume | trigger | rm  NAME_OR_ID
    leasecron runs  [NAME_OR_ID] [--limit 20]
    leasecron demo  [--seconds 20] [--replicas 2] [--db PATH]
    leasecron sim   [--seed S] [--seeds N] [--hours H] [--faults ...] [--store URL] ...
    leasecron serve [--app module:attr | path.py:attr] [--db PATH_OR_URL] [--port 7777] ...

Bad input (a ValidationError, a duplicate name, an unknown schedule) prints the flag and the
rule on stderr and exits 2; a storage failure exits 1; Ctrl-C exits 130, a closed output pipe
ends quietly. `list`, `show` and `runs` only read: they open a SQLite file read-only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sqlite3
import sys
from collections.abc import Sequence

from ..errors import (
    LeasecronError,
    ScheduleExistsError,
    ScheduleNotFoundError,
    StoreError,
    ValidationError,
)
from ..manager import ScheduleManager
from ..open_store import open_store
from ..parts import present
from .demo import cmd_demo
from .parser import PROG, build_parser, flag_message
from .replica import cmd_run
from .schedules import (
    cmd_add,
    cmd_list,
    cmd_pause,
    cmd_prune,
    cmd_resume,
    cmd_rm,
    cmd_runs,
    cmd_show,
    cmd_status,
    cmd_trigger,
)
from .serve_command import cmd_serve

# Commands that only read: a SQLite file is opened read-only (never created or migrated).
_READ_ONLY = frozenset({"list", "show", "runs", "status"})
# Commands that act on existing schedules: a SQLite path that does not exist is an error.
_NEED_FILE = _READ_ONLY | {"pause", "resume", "trigger", "rm", "prune"}


_CRUD = {
    "add": cmd_add,
    "list": cmd_list,
    "show": cmd_show,
    "pause": cmd_pause,
    "resume": cmd_resume,
    "trigger": cmd_trigger,
    "rm": cmd_rm,
    "runs": cmd_runs,
    "prune": cmd_prune,
    "status": cmd_status,
}


class NoSuchDatabase(LeasecronError):
    def __init__(self, path: str):
        super().__init__(f"no such database: {path}")


async def _crud(args: argparse.Namespace) -> int:
    if "://" not in args.db and args.command in _NEED_FILE and not os.path.exists(args.db):
        raise NoSuchDatabase(args.db)  # rather than create an empty file to find nothing in
    store = open_store(args.db, inline=True, readonly=args.command in _READ_ONLY)
    try:
        manager = ScheduleManager(store, allowed_hosts=getattr(args, "allow_host", None) or ())
        return await _CRUD[args.command](args, manager)
    finally:
        await store.close()


class NoSimulator(LeasecronError):
    def __init__(self) -> None:
        super().__init__(
            "sim: this copy of the kernel has no sim/ folder (the simulator and its checker); "
            "every other command works without it"
        )


async def _sim(args: argparse.Namespace) -> int:
    # imported here: the simulator is an optional folder a vendored copy may leave out
    if not present("sim"):
        raise NoSimulator()
    from .simulate import cmd_sim

    return await cmd_sim(args)


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


def _quiet_stdout() -> None:
    """After a closed pipe: point stdout at /dev/null, so the interpreter's last flush at exit
    does not fail again and print a traceback of its own."""
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):
        return  # not a real file (captured in-process): nothing will flush to the pipe
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # `leasecron runs | head`: the reader has all it wanted
        _quiet_stdout()
        return 128 + signal.SIGPIPE
    except KeyboardInterrupt:
        _error("interrupted")
        return 130


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed by argparse
        return exc.code if isinstance(exc.code, int) else 2
    try:
        if args.command == "run":
            return asyncio.run(cmd_run(args))
        if args.command == "sim":
            return asyncio.run(_sim(args))
        if args.command == "demo":
            return asyncio.run(cmd_demo(args))
        if args.command == "serve":
            return asyncio.run(cmd_serve(args))
        return asyncio.run(_crud(args))
    except ValidationError as exc:
        _error(flag_message(parser, args.command, exc))
        return 2
    except ScheduleExistsError as exc:
        _error(f"{exc} (use --if-exists update or skip)")
        return 2
    except ScheduleNotFoundError as exc:
        _error(f"schedule: no schedule with id or name {exc.key!r}")
        return 2
    except (StoreError, sqlite3.Error) as exc:
        where = getattr(args, "db", None) or getattr(args, "store", None)
        _error(f"db: {exc}" if not where or where in str(exc) else f"db: {where}: {exc}")
        return 1
    except LeasecronError as exc:
        _error(str(exc))
        return 1


if __name__ == "__main__":
    sys.exit(main())
