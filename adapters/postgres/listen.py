"""Cross-host wake-ups for PostgresStore: one dedicated LISTEN connection per store relays the
NOTIFYs other replicas send on commit to this process's schedulers. Polling stays the safety net
for anything missed while the connection was down."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg

from .sql import LISTEN_SQL, PROBE_SQL

log = logging.getLogger("leasecron.postgres")


async def relay_notifications(
    dsn: str, channel: str, connect_timeout: float, wake: Callable[[], None]
) -> None:
    """Call `wake` for every NOTIFY on `channel`, reconnecting for ever with capped backoff. A
    dedicated connection: LISTEN belongs to a session, and a pooled one would be lent out. Each
    time LISTEN is (re)established `wake` is called once, since a notification sent while we were
    not listening is lost."""
    delay = 0.1
    while True:
        try:
            conn = await psycopg.AsyncConnection.connect(
                dsn, autocommit=True, connect_timeout=max(1, int(connect_timeout))
            )
            async with conn:
                await conn.execute(LISTEN_SQL.format(channel=channel))
                delay = 0.1
                wake()
                while True:
                    # The timeout bounds how long a silently dead peer goes unnoticed: an idle
                    # LISTEN reads nothing, so probe the connection between notifications.
                    async for _ in conn.notifies(timeout=30.0):
                        wake()
                    await conn.execute(PROBE_SQL)
        except Exception as exc:  # whatever broke: reconnect; polling covers the gap
            log.warning("%s: LISTEN connection lost (%s); retry in %.1fs", channel, exc, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)
