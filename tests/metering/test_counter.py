"""UsageCounter: cheap counting, one event per subject per flush, retried flushes count once."""

import asyncio

from myriad.errors import StorageError
from myriad.metering import Resources, Subject, UsageCounter, UsageQuery

A = Subject("acme", agent="acme/chat/a")
B = Subject("acme", agent="acme/chat/b")


def counts(ledger):
    rows = ledger.totals(UsageQuery("acme", group_by=("agent", "resource")))
    return {(r.keys["agent"], r.keys["resource"]): r.quantity_micro // 10**6 for r in rows}


async def test_counts_are_flushed_as_one_event_per_subject(meter, ledger):
    c = UsageCounter(meter)
    for _ in range(1000):
        c.add(A, Resources.AGENT_WS_MESSAGES)
    c.add(A, Resources.AGENT_TURNS, 3)
    c.add(B, Resources.AGENT_TURNS)
    assert ledger.count_events() == 0 and c.pending == 2
    r = await c.flush()
    assert r.appended == 2 and c.pending == 0
    assert counts(ledger) == {("acme/chat/a", "agent.ws_messages"): 1000, ("acme/chat/a", "agent.turns"): 3,
                              ("acme/chat/b", "agent.turns"): 1}
    assert (await c.flush()).appended == 0


async def test_a_failed_flush_is_retried_with_the_same_ids(meter, ledger):
    c = UsageCounter(meter)
    c.add(A, Resources.AGENT_TURNS, 5)
    real = ledger.append
    calls = []

    def flaky(events):
        calls.append([e.id for e in events])
        if len(calls) == 1:
            real(events)  # the write landed but the caller saw an error (e.g. a timeout)
            raise StorageError("disk hiccup")
        return real(events)

    ledger.append = flaky
    try:
        try:
            await c.flush()
        except StorageError:
            pass
        c.add(A, Resources.AGENT_TURNS, 1)
        await c.flush()
    finally:
        del ledger.append
    assert calls[1][: len(calls[0])] == calls[0]  # the first batch went again with its ids
    assert counts(ledger) == {("acme/chat/a", "agent.turns"): 6}  # and counted once


async def test_periodic_flush_and_stop(meter, ledger):
    c = UsageCounter(meter, flush_every_s=0.05)
    c.start()
    c.add(A, Resources.AGENT_TURNS)
    await asyncio.sleep(0.2)
    assert counts(ledger) == {("acme/chat/a", "agent.turns"): 1}
    c.add(B, Resources.AGENT_TURNS)
    await c.stop()
    assert counts(ledger)[("acme/chat/b", "agent.turns")] == 1
