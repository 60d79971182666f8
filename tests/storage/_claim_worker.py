"""One host process firing schedules from a shared PostgreSQL database (the claim test).

Usage: python -m tests.storage._claim_worker URL DATA_DIR LOG
Logs ``start <id>`` when a firing begins and ``done <id>`` when its row is settled.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from myriad.agents import Agent, AgentHost
from myriad.agents.schedules import Scheduler
from myriad.settings import AgentSettings
from myriad.storage import PostgresStorage


class Ticker(Agent):
    initial_state: list[str] = []

    async def tick(self, payload: str) -> None:
        await asyncio.sleep(0.002)  # some work, so a kill lands mid-fire now and then
        self.set_state([*self.state, payload])


async def main(url: str, data_dir: str, log_path: str) -> None:
    log = open(log_path, "a", buffering=1)
    fire = Scheduler._fire

    async def logged(self: Scheduler, record) -> None:  # type: ignore[no-untyped-def]
        log.write(f"start {record.id}\n")
        await fire(self, record)
        log.write(f"done {record.id}\n")

    Scheduler._fire = logged  # type: ignore[method-assign]
    storage = PostgresStorage(url, Path(data_dir), pool_size=8)
    await storage.open()
    renew, claim = storage.renew_claims, storage.claim_due

    async def logged_renew(owner, ids, until):  # type: ignore[no-untyped-def]
        import time
        log.write(f"renew {time.time():.3f} {len(ids)} until {until:.3f}\n")
        await renew(owner, ids, until)

    async def logged_claim(now, limit, owner, lease):  # type: ignore[no-untyped-def]
        import time
        got = await claim(now, limit, owner, lease)
        log.write(f"claim {time.time():.3f} now {now:.3f} {len(got)} {[r.id for r in got][:3]}\n")
        return got

    storage.renew_claims, storage.claim_due = logged_renew, logged_claim  # type: ignore[method-assign]
    host = AgentHost(storage, AgentSettings(hibernate_after=3600, schedule_lease=5.0))
    host.register(Ticker)
    await host.start()
    print("ready", flush=True)
    try:
        while True:
            await asyncio.sleep(0.2)
            if await storage.next_due() is None:
                break
    finally:
        await host.stop()
        await storage.close()
    log.write(f"exit {os.getpid()}\n")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
