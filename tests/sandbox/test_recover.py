"""What a killed host leaves behind is found and announced by the next one's ``recover()``."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import AsyncIterator

from myriad.sandbox import SandboxEvent, Sandboxes
from myriad.sandbox.journal import host_tag
from tests.sandbox.conftest import make_settings

DEAD = "1-1"  # pid 1 did not start at tick 1: a host that is gone


async def test_recover_announces_dead_sandboxes_and_sweeps_partial_copies(tmp_path: Path) -> None:
    sbs = Sandboxes(make_settings(tmp_path), tiers=["isolate"])
    live = sbs.root / "_live"
    live.mkdir(parents=True)
    (live / DEAD).write_text(
        "+ " + json.dumps({"instance": "a1", "owner": "acme", "id": "a", "tier": "isolate"}) + "\n"
        + "+ " + json.dumps({"instance": "b1", "owner": "acme/coder/x", "id": "b", "tier": "isolate"}) + "\n"
        + "- a1\n")
    snaps = sbs.root / "_snapshots"
    (snaps / f".partial-{DEAD}-snap_1" / "workspace").mkdir(parents=True)
    (snaps / f".partial-{host_tag()}-snap_2" / "workspace").mkdir(parents=True)  # ours, still copying
    seen: list[SandboxEvent] = []

    @contextlib.asynccontextmanager
    async def record(event: SandboxEvent) -> AsyncIterator[None]:
        seen.append(event)
        yield

    sbs.add_hook(record)
    try:
        await sbs.recover()
        assert [(e.kind, e.owner, e.sandbox_id, e.instance, e.reason) for e in seen] == [
            ("close", "acme/coder/x", "b", "b1", "crashed")]
        assert not (live / DEAD).exists()
        assert sorted(p.name for p in snaps.iterdir()) == [f".partial-{host_tag()}-snap_2"]
        # our own journal records what we open and close
        box = await sbs.open(owner="acme", id="c", tier="isolate")
        await sbs.close("acme", box.id)
        assert [line.split()[0] for line in (live / host_tag()).read_text().splitlines()] == ["+", "-"]
    finally:
        await sbs.aclose()


async def test_background_cpu_is_reported_between_operations(tmp_path: Path) -> None:
    import asyncio

    import pytest

    pytest.importorskip("myriad.sandbox.cgroups")
    sbs = Sandboxes(make_settings(tmp_path))
    seen: list[SandboxEvent] = []

    @contextlib.asynccontextmanager
    async def record(event: SandboxEvent) -> AsyncIterator[None]:
        yield
        seen.append(event)

    sbs.add_hook(record)
    try:
        box = await sbs.open(owner="acme", id="bg", needs={"processes"})
        if box.take_cpu_ms() is None:  # type: ignore[attr-defined]
            pytest.skip("no cgroup CPU counter on this machine (rlimit backend)")
        await box.start_process("while :; do :; done")  # type: ignore[attr-defined]
        await asyncio.sleep(1.0)
        await sbs.reap()  # the reaper reports what ran between operations
        usage = [e.cpu_ms for e in seen if e.kind == "usage" and e.sandbox_id == "bg"]
        assert usage and usage[0] > 100, usage  # before: background CPU was never charged
        await sbs.close("acme", "bg")
        (close,) = [e for e in seen if e.kind == "close"]
        assert close.cpu_ms is not None and close.cpu_ms >= 0
    finally:
        await sbs.aclose()


def test_a_forked_child_keeps_its_own_journal(tmp_path: Path) -> None:
    """The journal learns its process's tag once (not from /proc per sandbox), and a
    forked child still writes its own file, so one process's crash is not another's."""
    import os

    from myriad.sandbox.journal import LiveJournal

    journal = LiveJournal(tmp_path / "_live")
    journal.opened("p1", "acme", "a", "isolate")
    pid = os.fork()
    if pid == 0:
        try:
            journal.opened("c1", "acme", "b", "isolate")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    journal.closed("p1")
    files = {f.name: f.read_text().split() for f in (tmp_path / "_live").iterdir()}
    assert len(files) == 2
    mine = files.pop(host_tag())
    assert [mine[0], mine[-2], mine[-1]] == ["+", "-", "p1"]
    (child,) = files.values()
    assert child[0] == "+" and '"c1",' in child[2]
