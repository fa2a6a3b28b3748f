"""Which server process a run belongs to, and whether that process is gone.

Every run this server starts carries, in its `additional_data`, the process serving it:
`{"host": <host name>, "pid": <pid>, "started": <its start time in clock ticks since boot, from
/proc/<pid>/stat; None where there is no /proc>}`. A run stored RUNNING or PENDING that this
process does not hold, stamped by this host, whose process no longer exists (no such pid, or a
pid now used by a process started at another time), will never be ended by anyone: the run
routes end it ERROR. A run of another host is left alone: from here there is no telling whether
its process still runs.
"""

from __future__ import annotations

import os
import socket
from typing import Any

KEY = "leasecron_server"  # the stamp's key in a run's additional_data
ENDED = "the server process running it ended"


def _start_time(pid: int) -> int | None:
    """The process's start time (field 22 of /proc/<pid>/stat), None if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])  # field 22 overall: the 20th after the name and the state
    except (IndexError, ValueError):
        return None


def this_process() -> dict[str, Any]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "started": _start_time(pid)}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    except OSError:
        return False
    return True


def process_gone(stamp: Any, me: dict[str, Any]) -> bool:
    """True if `stamp` names a process of this host (`me`'s) that no longer runs. False for a
    missing or malformed stamp, another host's, or this very process."""
    if not isinstance(stamp, dict) or stamp.get("host") != me["host"]:
        return False
    pid, started = stamp.get("pid"), stamp.get("started")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    if pid == me["pid"] and started == me["started"]:
        return False
    if not _alive(pid):
        return True
    # The pid is in use: by the same process only if it started at the same time.
    return started is not None and _start_time(pid) not in (None, started)
