"""Every public operation of the sandbox room goes through its hooks (issue 15).

The test enumerates the public coroutine methods of ``Sandboxes``, ``ContainerSandbox``
and ``IsolateSandbox`` by introspection: a method with no entry in ``CALLS`` fails
("say how to call it"), and each call must reach a recording hook with an event of the
expected kind for the right sandbox. It would have caught the proxies' misses (``fork``
took no live-sandbox slot; ``pause``, ``snapshot``, files went unobserved).
"""

from __future__ import annotations

import contextlib
import inspect
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from myriad.sandbox import ContainerSandbox, IsolateSandbox, SandboxEvent, Sandboxes, tool
from tests.sandbox.conftest import make_settings

pytestmark = pytest.mark.integration

NOT_OPERATIONS = {
    # lifecycle of the host, not of a sandbox: recover emits "close" for the dead (tested below)
    "Sandboxes.recover",
}


@tool
async def double(n: int) -> int:
    return n * 2


async def _calls(sbs: Sandboxes, box: ContainerSandbox, iso: IsolateSandbox) -> dict[str, tuple[Any, str, str]]:
    """``"Class.method": (call, expected event kind, sandbox id)``, run in this order."""
    snap: dict[str, Any] = {}

    async def snapshot() -> None:
        snap["id"] = (await sbs.snapshot("t", "c1")).id

    return {
        "Sandboxes.open": (lambda: sbs.open(owner="t", id="o1", tier="isolate"), "open", "o1"),
        "Sandboxes.open_for": (lambda: sbs.open_for("t", {"tier": "isolate", "id": "o2"}), "open", "o2"),
        "Sandboxes.snapshot": (snapshot, "snapshot", "c1"),
        "Sandboxes.restore": (lambda: sbs.restore("t", "c1", snap["id"]), "restore", "c1"),
        "Sandboxes.delete_snapshot": (lambda: sbs.delete_snapshot("t", snap["id"]), "delete_snapshot", "c1"),
        "Sandboxes.fork": (lambda: sbs.fork("t", "c1", new_id="f1"), "fork", "c1"),
        "Sandboxes.close": (lambda: sbs.close("t", "o1"), "close", "o1"),
        "IsolateSandbox.run": (lambda: iso.run("return await tools.double({n: 21})"), "run", "i1"),
        "ContainerSandbox.run": (lambda: box.run("echo hi"), "run", "c1"),
        "ContainerSandbox.exec": (lambda: box.exec("echo hi"), "exec", "c1"),
        "ContainerSandbox.git_clone": (lambda: box.git_clone("/nonexistent", "r"), "git_clone", "c1"),
        "ContainerSandbox.start_process": (lambda: box.start_process("sleep 30"), "start_process", "c1"),
        "ContainerSandbox.wait_process": (lambda: box.wait_process("proc_1", 0.01), "wait_process", "c1"),
        "ContainerSandbox.kill_process": (lambda: box.kill_process("proc_1"), "kill_process", "c1"),
        "ContainerSandbox.write_file": (lambda: box.write_file("a.txt", b"x"), "write_file", "c1"),
        "ContainerSandbox.read_file": (lambda: box.read_file("a.txt"), "read_file", "c1"),
        "ContainerSandbox.list_files": (lambda: box.list_files("."), "list_files", "c1"),
        "ContainerSandbox.exists": (lambda: box.exists("a.txt"), "exists", "c1"),
        "ContainerSandbox.mkdir": (lambda: box.mkdir("d"), "mkdir", "c1"),
        "ContainerSandbox.delete_file": (lambda: box.delete_file("d"), "delete_file", "c1"),
        "ContainerSandbox.pause": (lambda: box.pause(), "pause", "c1"),
        "ContainerSandbox.resume": (lambda: box.resume(), "resume", "c1"),
        "IsolateSandbox.close": (lambda: iso.close(), "close", "i1"),
        "Sandboxes.reap": (lambda: _reap_one(sbs), "close", "o2"),
        "ContainerSandbox.close": (lambda: box.close(), "close", "c1"),
        "Sandboxes.aclose": (lambda: sbs.aclose(), "close", "f1"),
    }


async def _reap_one(sbs: Sandboxes) -> None:
    sbs.settings.isolate_idle_timeout = 1e-9
    await sbs.reap()


def _public_coroutines(cls: type) -> set[str]:
    return {f"{cls.__name__}.{name}" for name, fn in inspect.getmembers(cls, inspect.iscoroutinefunction)
            if not name.startswith("_")}


async def test_every_public_operation_reaches_the_hooks(tmp_path: Path) -> None:
    sbs = Sandboxes(make_settings(tmp_path))
    seen: list[SandboxEvent] = []
    finished: list[SandboxEvent] = []

    @contextlib.asynccontextmanager
    async def record(event: SandboxEvent) -> AsyncIterator[None]:
        seen.append(event)
        try:
            yield
        finally:
            finished.append(event)

    sbs.add_hook(record)
    box = await sbs.open(owner="t", id="c1", needs={"filesystem", "binaries"})
    iso = await sbs.open(owner="t", id="i1", tools=[double])
    assert [(e.kind, e.sandbox_id) for e in seen] == [("open", "c1"), ("open", "i1")]
    calls = await _calls(sbs, box, iso)  # type: ignore[arg-type]
    operations = set().union(*(_public_coroutines(c) for c in (Sandboxes, ContainerSandbox, IsolateSandbox)))
    missing = operations - set(calls) - NOT_OPERATIONS
    assert not missing, f"public sandbox operations this test does not call (add them to _calls): {missing}"
    for name, (call, kind, sid) in calls.items():
        before = len(seen)
        with contextlib.suppress(Exception):  # git_clone of a missing repo fails, and must still be seen
            await call()
        new = [(e.kind, e.sandbox_id) for e in seen[before:]]
        assert (kind, sid) in new, f"{name} bypassed the hooks (events: {new})"
    assert len(finished) == len(seen)  # every event's after-half ran
    # the tool the isolate called and the fork's child are events too
    assert any(e.kind == "tool" and e.tool == "double" for e in seen)
    assert any(e.kind == "open" and e.sandbox_id == "f1" and e.source_id == "c1" for e in seen)
    closes = {e.sandbox_id: e.reason for e in seen if e.kind == "close"}
    assert closes == {"o1": "deleted", "o2": "idle", "i1": "deleted", "c1": "deleted", "f1": "shutdown"}


async def test_a_hook_can_refuse_an_operation(tmp_path: Path) -> None:
    from myriad.errors import RateLimited

    sbs = Sandboxes(make_settings(tmp_path))

    @contextlib.asynccontextmanager
    async def no_forks(event: SandboxEvent) -> AsyncIterator[None]:
        if event.kind == "open" and event.source_id is not None:
            raise RateLimited("no more sandboxes")
        yield

    sbs.add_hook(no_forks)
    try:
        await sbs.open(owner="t", id="c1", needs={"filesystem"})
        with pytest.raises(RateLimited):
            await sbs.fork("t", "c1", new_id="c2")
        assert [b.id for b in sbs.list("t")] == ["c1"]
        assert not list((sbs.root / "_snapshots").glob("*"))  # the fork's copy was removed
    finally:
        await sbs.aclose()
