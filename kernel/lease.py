"""The lease as its holder sees it: `Held` (a lease this replica holds and the attempts running
under it) and the fractions of the lease length that time the holder's heartbeat and watchdog.

A lease is local knowledge with an expiry: the store's fencing makes a stale holder's writes
harmless, the watchdog makes sure a stale holder also stops *sending*. Every renewal extends the
lease in the store to `lease` from its `now`, and the holder's own trust to TRUSTED_FOR of it; the
watchdog looks every CHECK_EVERY. So a holder stops sending at most TRUSTED_FOR + CHECK_EVERY after
its last confirmed renewal, and another replica, its clock up to CLOCK_SKEW ahead, sees the lease
expire no sooner than 1 - CLOCK_SKEW after it. The holder always stops first:

    TRUSTED_FOR + CHECK_EVERY  <  1 - CLOCK_SKEW        (1/2 + 1/8 = 5/8  <  2/3)

Renewals go every RENEW_EVERY, so one lost renewal is retried before the local trust runs out.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from .model import Schedule

# Fractions of lease_seconds.
RENEW_EVERY = 1 / 4  # the heartbeat renews every held lease this often
TRUSTED_FOR = 1 / 2  # a confirmed renewal makes the lease trusted locally this long
CHECK_EVERY = 1 / 8  # the watchdog gives up on leases whose local trust has run out
CLOCK_SKEW = 1 / 3  # the largest difference between replica clocks the lease tolerates
assert TRUSTED_FOR + CHECK_EVERY < 1 - CLOCK_SKEW
assert RENEW_EVERY == 2 * CHECK_EVERY < TRUSTED_FOR  # a renewal every other check


@dataclass(slots=True, eq=False)
class Held:
    """A lease this replica holds: its view of the schedule and the attempts running under it."""

    schedule: Schedule
    timing_version: int
    valid_until: float  # local deadline after which nothing more is sent under this lease
    tasks: dict[asyncio.Task[None], str] = field(default_factory=dict)  # attempt task -> run row id
    # overlap=allow: when to re-read the row for slots and pending work that came due meanwhile;
    # `frozen` once a re-read or start was refused (disabled, re-timed, lost): the last attempt
    # in flight then releases the lease and the row goes back to the common pool.
    check_at: float = 0.0
    frozen: bool = False
