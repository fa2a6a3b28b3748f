"""`Prefer: wait=<seconds>` (RFC 7240) on a run's POST and its poll: the client would rather
have the answer held until the run ends, for at most that long, than poll for it.

A background run's POST so held answers `200` with the finished run when it ends within the wait,
else the usual `202`; a poll of a run in flight in this process answers once it ends or the wait
is over. Either way the answer says `Preference-Applied: wait=<seconds>`, so a client knows it
need not sleep before polling again. A client that does not ask gets the reference's protocol
unchanged; a server that does not know the preference ignores it (RFC 7240 §2), so a client may
always ask.
"""

from __future__ import annotations

import math

from starlette.requests import Request

MAX_WAIT = 60.0  # seconds one request may be held, whatever the client asks


def preferred_wait(request: Request) -> float | None:
    """The wait the request prefers, capped at MAX_WAIT; None when it asks none (or a value
    that is not a number of seconds: a preference is ignorable, never an error)."""
    header = request.headers.get("prefer")
    if not header:
        return None
    for preference in header.split(","):
        name, _, value = preference.split(";")[0].partition("=")
        if name.strip().lower() != "wait":
            continue
        try:
            seconds = float(value.strip().strip('"'))
        except ValueError:
            return None
        if not math.isfinite(seconds) or seconds <= 0:
            return None
        return min(seconds, MAX_WAIT)
    return None


def applied(seconds: float) -> dict[str, str]:
    """The response header saying the wait was honoured."""
    return {"Preference-Applied": f"wait={seconds:g}"}
