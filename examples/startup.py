"""Create schedules in code at start-up (idempotent) and run one replica against a service.

    python examples/startup.py --base-url http://127.0.0.1:7777 --db leasecron.db

Run it on every replica: `if_exists="update"` makes creation idempotent, and only a change of a
schedule's timing moves its slot cursor, so restarts never skip or refire a slot.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from leasecron.kernel import HttpDispatcher, ScheduleManager, Scheduler, SqliteStore


async def main(db: str, base_url: str, token: str | None) -> None:
    store = SqliteStore(db)
    manager = ScheduleManager(store)
    await manager.create(
        name="morning-digest",
        cron="0 9 * * 1-5",
        timezone="Europe/Paris",
        endpoint="/agents/digest/runs",
        payload={"message": "Summarise yesterday's tickets"},
        max_retries=2,
        retry_delay_seconds=60,
        if_exists="update",
    )
    await manager.create(
        name="index-refresh",
        interval_seconds=300,
        endpoint="/workflows/refresh-index/runs",
        overlap="skip",
        if_exists="update",
    )
    dispatcher = HttpDispatcher(base_url, token=token)
    async with Scheduler(store, dispatcher, on_event=lambda name, data: print(name, data)):
        await asyncio.Event().wait()  # until Ctrl-C


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", default="leasecron.db")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--token")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is the way to stop it
        asyncio.run(main(args.db, args.base_url, args.token))
