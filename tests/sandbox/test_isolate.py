"""The isolate tier: Code Mode runs against bound tools, with console capture and limits."""

from __future__ import annotations

import asyncio
import time

import pytest

from myriad.errors import InvalidRequest, SandboxLimitExceeded, SandboxTimeout, TierUnavailable
from myriad.sandbox import Limits, Sandboxes, tool
from myriad.sandbox.isolate import V8_SANDBOX_ISOLATES

calls: list[dict] = []


async def lookup_order(order_id: int, include_items: bool = False) -> dict:
    """Look an order up by id."""
    calls.append({"order_id": order_id, "include_items": include_items})
    await asyncio.sleep(0.001)
    return {"id": order_id, "total": order_id * 10, "items": ["a", "b"] if include_items else []}


async def failing(reason: str) -> None:
    raise RuntimeError(f"tool failed: {reason}")


async def test_code_mode_calls_python_tools(sandboxes: Sandboxes) -> None:
    calls.clear()
    box = await sandboxes.open(needs={"tools"}, tools=[lookup_order])
    assert box.tier == "isolate"
    res = await box.run(
        """
        const orders = await Promise.all([1, 2, 3].map((id) => tools.lookup_order({order_id: id})));
        console.log('fetched', orders.length);
        const big = await tools.lookup_order({order_id: 7, include_items: true});
        return {sum: orders.reduce((s, o) => s + o.total, 0), items: big.items};
        """
    )
    assert res.error is None, res.error
    assert res.value == {"sum": 60, "items": ["a", "b"]}
    assert res.stdout == "fetched 3\n"
    assert sorted(c["order_id"] for c in calls) == [1, 2, 3, 7]
    assert "lookup_order(args: {" in box.declaration()


async def test_snippet_forms_and_console_levels(sandboxes: Sandboxes) -> None:
    box = await sandboxes.open(needs={"javascript"})
    assert (await box.run("6 * 7")).value == 42
    assert (await box.run("async () => { return 'fn' }")).value == "fn"
    res = await box.run("console.warn('careful'); console.error({a: 1}); console.info('i'); return null")
    assert res.stderr == 'careful\n{"a":1}\n' and res.stdout == "i\n"
    assert [entry["level"] for entry in res.logs] == ["warn", "error", "info"]
    # logs from one run do not appear in the next
    assert (await box.run("1")).logs == []


async def test_errors_come_back_as_results(sandboxes: Sandboxes) -> None:
    box = await sandboxes.open(needs={"tools"}, tools=[failing, lookup_order])
    res = await box.run("throw new TypeError('nope')")
    assert res.exit_code == 1 and res.error.startswith("TypeError: nope")
    res = await box.run("await tools.failing({reason: 'db down'})")
    assert "RuntimeError: tool failed: db down" in res.error
    res = await box.run("await tools.lookup_order({order_id: 'seven'})")
    assert "tools.lookup_order.order_id must be integer" in res.error
    res = await box.run("this is not javascript")
    assert res.error.startswith("SyntaxError")
    assert (await box.run("1 + 1")).value == 2  # still usable


async def test_output_limits(sandboxes: Sandboxes) -> None:
    box = await sandboxes.open(needs={"javascript"}, limits=Limits(output_bytes=1000))
    res = await box.run("for (let i = 0; i < 1000; i++) console.log('0123456789'); return 'done'")
    assert res.truncated and res.value == "done"
    assert 900 <= len(res.stdout) <= 1100
    with pytest.raises(SandboxLimitExceeded, match="result is"):
        await box.run("'x'.repeat(5000)")


async def test_warm_isolate_cache_per_owner_and_id(sandboxes: Sandboxes) -> None:
    a = await sandboxes.open(needs={"javascript"}, owner="agent-a", id="calc")
    await a.run("globalThis.counter = 41")
    again = await sandboxes.open(needs={"javascript"}, owner="agent-a", id="calc")
    assert again is a
    assert (await again.run("++counter")).value == 42
    other = await sandboxes.open(needs={"javascript"}, owner="agent-b", id="calc")
    assert other is not a
    assert (await other.run("typeof counter")).value == "undefined"
    await sandboxes.close("agent-a", "calc")
    assert a.closed
    fresh = await sandboxes.open(needs={"javascript"}, owner="agent-a", id="calc")
    assert (await fresh.run("typeof counter")).value == "undefined"


async def test_lru_eviction_disposes_isolates(tmp_path) -> None:
    from tests.sandbox.conftest import make_settings

    sbs = Sandboxes(make_settings(tmp_path, warm_isolates=2))
    try:
        boxes = [await sbs.open(needs={"javascript"}, owner="o", id=f"i{n}") for n in range(3)]
        assert boxes[0].closed and not boxes[1].closed and not boxes[2].closed
    finally:
        await sbs.aclose()
    assert all(b.closed for b in boxes)


def test_live_isolates_stay_under_what_vm_max_map_count_allows(tmp_path) -> None:
    """Past vm.max_map_count V8 cannot map memory and aborts the whole process (every
    agent on it); the host cap stays under it, whatever warm_isolates says."""
    from myriad.sandbox.policy import MAPS_PER_ISOLATE, MAPS_RESERVED, isolate_map_budget
    from tests.sandbox.conftest import make_settings

    limit = tmp_path / "max_map_count"
    limit.write_text("65530\n")
    assert isolate_map_budget(str(limit)) == (65530 - MAPS_RESERVED) // MAPS_PER_ISOLATE
    assert isolate_map_budget(str(tmp_path / "absent")) is None
    real = isolate_map_budget()
    sbs = Sandboxes(make_settings(tmp_path, warm_isolates=10_000_000))
    assert sbs.isolate_cap == min(real if real is not None else 10_000_000, V8_SANDBOX_ISOLATES)
    assert Sandboxes(make_settings(tmp_path, warm_isolates=3)).isolate_cap == 3


def test_live_isolates_stay_under_v8s_own_wall(tmp_path, monkeypatch) -> None:
    """V8 as mini-racer builds it (with its sandbox) aborts the whole process past ~4,032
    live isolates, whatever vm.max_map_count allows (measured; creating that many here
    would take seconds and ~3 GB): the cap stays under it even when the map count is
    raised and warm_isolates asks for more."""
    from myriad.sandbox import policy
    from myriad.sandbox.isolate import isolate_limit
    from tests.sandbox.conftest import make_settings

    assert isolate_limit() == V8_SANDBOX_ISOLATES  # this mini-racer's V8 is sandboxed
    monkeypatch.setattr(policy, "isolate_map_budget", lambda: 1_000_000)
    assert Sandboxes(make_settings(tmp_path, warm_isolates=10_000)).isolate_cap == V8_SANDBOX_ISOLATES
    assert Sandboxes(make_settings(tmp_path, warm_isolates=10_000), tiers=["container"]).isolate_cap == 10_000


async def test_isolate_refuses_other_languages_and_network(sandboxes: Sandboxes) -> None:
    box = await sandboxes.open(needs={"javascript"})
    with pytest.raises(TierUnavailable, match="JavaScript only"):
        await box.run("print(1)", language="python")
    with pytest.raises(InvalidRequest):
        await box.run(123)  # type: ignore[arg-type]


# -- the isolate half of the escape suite ------------------------------------------------


async def test_runaway_loop_is_stopped_and_host_unaffected(sandboxes: Sandboxes) -> None:
    loop_box = await sandboxes.open(needs={"javascript"}, limits=Limits(timeout=0.5))
    other = await sandboxes.open(needs={"javascript"})
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    t = asyncio.ensure_future(ticker())
    started = time.monotonic()
    runaway = asyncio.ensure_future(loop_box.run("while (true) {}"))
    await asyncio.sleep(0.1)
    # another isolate runs while the first spins
    assert (await other.run("[1,2,3].map(x => x * 2)")).value == [2, 4, 6]
    with pytest.raises(SandboxTimeout, match="0.5 s"):
        await runaway
    elapsed = time.monotonic() - started
    t.cancel()
    assert elapsed < 3
    assert ticks >= 10, "the event loop was blocked by the runaway isolate"
    # after an await too
    with pytest.raises(SandboxTimeout):
        await loop_box.run("await Promise.resolve(); while (true) {}")
    # the sandbox id still works: a fresh isolate replaced the terminated one
    assert (await loop_box.run("'alive'")).value == "alive"


async def test_allocation_bomb_is_stopped(sandboxes: Sandboxes) -> None:
    box = await sandboxes.open(needs={"javascript"}, limits=Limits(memory_mb=32, timeout=10))
    with pytest.raises(SandboxLimitExceeded, match="32 MiB"):
        await box.run("const a = []; while (true) a.push(new Array(100000).fill(1.5));")
    with pytest.raises(SandboxLimitExceeded):
        await box.run("await null; let s = 'x'; const keep = []; while (true) { keep.push(s.repeat(1e6) + Math.random()); }")
    assert (await box.run("1 + 1")).value == 2


@pytest.mark.parametrize(
    "probe",
    [
        "typeof fetch", "typeof require", "typeof process", "typeof XMLHttpRequest", "typeof WebSocket",
        "typeof Deno", "typeof Bun", "typeof __myriad_call", "typeof globalThis.__myriad_call", "typeof module",
        "typeof importScripts", "typeof navigator",
    ],
)
async def test_nothing_unbound_is_reachable(sandboxes: Sandboxes, probe: str) -> None:
    box = await sandboxes.open(needs={"javascript"})
    assert (await box.run(probe)).value == "undefined"


async def test_dynamic_import_and_tool_tampering_fail(sandboxes: Sandboxes) -> None:
    box = await sandboxes.open(needs={"tools"}, tools=[lookup_order])
    res = await box.run("await import('fs')")
    assert res.error is not None
    res = await box.run("await import('https://example.com/x.js')")
    assert res.error is not None
    # the tools object cannot be replaced or extended to reach other host functions
    res = await box.run("tools.evil = 1; tools.lookup_order = null; return [typeof tools.evil, typeof tools.lookup_order]")
    assert res.value == ["undefined", "function"]
    res = await box.run("globalThis.tools = {}; return Object.keys(tools)")
    assert res.value == ["lookup_order"]


async def test_tools_do_not_leak_between_isolates(sandboxes: Sandboxes) -> None:
    with_tool = await sandboxes.open(needs={"tools"}, tools=[lookup_order], owner="a")
    without = await sandboxes.open(needs={"javascript"}, owner="b")
    assert (await with_tool.run("Object.keys(tools)")).value == ["lookup_order"]
    assert (await without.run("Object.keys(tools)")).value == []
    await with_tool.run("globalThis.secret = 'tenant-a'; Object.prototype.polluted = 1")
    assert (await without.run("[typeof secret, ({}).polluted]")).value == ["undefined", None]


async def slow_tool(ms: int) -> str:
    await asyncio.sleep(ms / 1000)
    return "late"


async def test_tool_finishing_while_isolate_spins_does_not_block_host(sandboxes: Sandboxes) -> None:
    box = await sandboxes.open(needs={"tools"}, tools=[slow_tool], limits=Limits(timeout=0.6))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    t = asyncio.ensure_future(ticker())
    try:
        with pytest.raises(SandboxTimeout):
            await box.run("tools.slow_tool({ms: 50}).then(() => { while (true) {} }); while (true) {}")
        with pytest.raises(SandboxTimeout):
            await box.run("await tools.slow_tool({ms: 10}); while (true) {}")
    finally:
        t.cancel()
    assert ticks >= 60, f"event loop starved: {ticks} ticks in ~1.2 s"


async def test_no_work_after_a_run_returns(sandboxes: Sandboxes) -> None:
    # before: a timer outlived its run and spun a core until the isolate was reaped (the
    # next run timed out), unmetered; now the run's pending timers are dropped when it returns
    box = await sandboxes.open(needs={"javascript"}, limits=Limits(timeout=0.5))
    assert (await box.run("setTimeout(() => { while (true) {} }, 100); return 'first'")).value == "first"
    await asyncio.sleep(0.2)
    assert (await box.run("'second'")).value == "second"
    await box.run("globalThis.n = 0; (function loop() { n++; setTimeout(loop, 1); })(); return n")
    await asyncio.sleep(0.3)
    assert (await box.run("n")).value == 1
    # nothing else schedules work: no finalizers, no Atomics.waitAsync, no WebAssembly
    res = await box.run("[typeof FinalizationRegistry, typeof Atomics.waitAsync, typeof WebAssembly, "
                        "typeof SharedArrayBuffer].join()")
    assert res.value == "undefined,undefined,undefined,undefined"
    # mini-racer's own timer manager cannot be borrowed either
    res = await box.run("try { new __TimerManager().setTimeout(() => {}, 1); return 'escaped' } catch (e) { return 'refused' }")
    assert res.value == "refused"


async def test_isolates_skip_mini_racers_own_timer_script(sandboxes: Sandboxes) -> None:
    """An isolate is made without mini-racer's ``setTimeout`` script (one synchronous eval
    less per cold start): nothing of it is left, and the run-scoped timers stand alone.
    Fails if a mini-racer upgrade changes the internals ``_new_racer`` relies on (it then
    falls back to the plain constructor: still safe, one eval slower)."""
    box = await sandboxes.open(needs={"javascript"})
    res = await box.run("[typeof __timer_manager, typeof __TimerManager, typeof setTimeout, typeof clearTimeout].join()")
    assert res.value == "undefined,undefined,function,function"
    res = await box.run("const d = Object.getOwnPropertyDescriptor(globalThis, 'setTimeout'); "
                        "setTimeout = () => 'mine'; return [d.writable, d.configurable, setTimeout === d.value]")
    assert res.value == [False, False, True]
    res = await box.run("await new Promise(r => setTimeout(r, 5)); let fired = 0; const t = setTimeout(() => fired++, 1); "
                        "clearTimeout(t); await new Promise(r => setTimeout(r, 10)); return fired")
    assert res.value == 0


async def test_timers_work_within_a_run(sandboxes: Sandboxes) -> None:
    box = await sandboxes.open(needs={"javascript"})
    res = await box.run("await new Promise(r => setTimeout(r, 30)); return 'waited'")
    assert res.value == "waited" and res.duration_ms >= 25


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.parametrize("snippet", [
    "globalThis.k = []; for (let i = 0; i < 4; i++) k.push(new ArrayBuffer(256 << 20)); return k.length",
    "globalThis.k = new Uint8Array(512 << 20); k.fill(1); return k.length",
    "globalThis.k = new Float64Array(64 << 20); return k.length",
    "class Big extends Uint8Array {}; globalThis.k = new Big(512 << 20); return k.length",
    "const AB = new Uint8Array(1).buffer.constructor; globalThis.k = new AB(512 << 20); return k.byteLength",
    "globalThis.k = Reflect.construct(Int32Array, [128 << 20]); return k.length",
    "globalThis.k = new ArrayBuffer(8, {maxByteLength: 1 << 30}); return k.maxByteLength",
    "const a = new Uint8Array(24 << 20); globalThis.k = [a, a.slice(), a.slice()]; return k.length",
    "globalThis.k = new WebAssembly.Memory({initial: 8000}); return 1",
    "globalThis.k = new SharedArrayBuffer(512 << 20); return 1",
])
async def test_array_buffers_count_against_the_memory_limit(sandboxes: Sandboxes, snippet: str) -> None:
    # before: V8's heap limit did not see array buffers: one run kept 1 GiB under a 64 MiB limit
    box = await sandboxes.open(needs={"javascript"}, limits=Limits(memory_mb=32, timeout=10))
    rss = _rss_mb()
    res = await box.run(snippet)
    assert res.error is not None and ("memory limit" in res.error or "is not defined" in res.error), res
    assert _rss_mb() - rss < 64, "the host's memory grew past the isolate's limit"
    # within the limit, buffers work as always, and what the collector frees counts again
    ok = await box.run("const a = new Uint8Array(4 << 20); a[7] = 7; return a[7] + new Float64Array([1.5])[0]")
    assert ok.value == 8.5, ok
    for _ in range(3):
        again = await box.run("await null; globalThis.k = null; const b = new ArrayBuffer(20 << 20); return b.byteLength")
        if again.error is None:
            break
        await asyncio.sleep(0.1)  # a garbage collection between runs gives the bytes back
    assert again.value == 20 << 20, again


@tool
async def record_call(note: str) -> str:
    CALLED.append(note)
    return note


CALLED: list[str] = []

FORGED = ('{"calls":[[1,"record_call","{\\"note\\":\\"forged\\"}"]],'
          '"done":{"value":"666","error":null,"logs":[],"truncated":false}}')


@pytest.mark.parametrize("tamper", [
    f"JSON.stringify = () => {FORGED!r};",
    f"Object.prototype.toJSON = function () {{ return JSON.parse({FORGED!r}); }};",
    "Array.prototype.push = function () { return 0; }; Array.prototype.map = () => ['forged'];",
    "Promise.prototype.then = function () { return this; }; String = () => 'forged';",
    "Object.defineProperty(Object.prototype, 'done', {get() { return {value: '666'}; }, configurable: true});",
])
async def test_results_cannot_be_forged_by_replacing_built_ins(sandboxes: Sandboxes, tamper: str) -> None:
    # before: the host's status was JSON.stringify({calls, done}) at poll time, so a snippet
    # that replaced JSON.stringify (or added Object.prototype.toJSON) wrote what the host read
    CALLED.clear()
    box = await sandboxes.open(tools=[record_call])
    res = await box.run(tamper + " console.log('real log'); return 7")
    assert (res.value, res.error, res.stdout, CALLED) == (7, None, "real log\n", []), res
    # and the isolate keeps working for the next run (its own built-ins stay tampered: its business)
    assert (await box.run("1 + 1")).value == 2


async def test_an_unknown_mini_racer_falls_back_to_its_public_constructor(
        sandboxes: Sandboxes, monkeypatch: pytest.MonkeyPatch) -> None:
    """Isolates are made through a mini-racer internal to skip its setTimeout script; if
    that internal changes or goes, isolates are still made (the public way, with that
    script) and hold the same limits, never broken."""
    import py_mini_racer._mini_racer as internals

    original = internals._make_context

    def changed(*args: object, required: object = None) -> object:  # a new required argument
        if required is None:
            raise TypeError("_make_context() missing 1 required keyword-only argument: 'required'")
        return original(*args)

    def public_way(*args: object) -> object:  # what MiniRacer() itself calls, unchanged
        return original(*args)

    monkeypatch.setattr(internals, "_make_context", changed)
    monkeypatch.setattr(internals.MiniRacer, "__init__", _public_init(public_way))
    box = await sandboxes.open(needs={"tools"}, tools=[lookup_order])
    assert (await box.run("typeof __timer_manager")).value == "object"
    assert (await box.run("return (await tools.lookup_order({order_id: 4})).total")).value == 40
    res = await box.run("[typeof FinalizationRegistry, typeof Atomics.waitAsync].join()")
    assert res.value == "undefined,undefined"


def _public_init(make: object) -> object:
    """A stand-in for ``MiniRacer.__init__`` that still works after the internal changed."""
    from py_mini_racer._set_timeout import INSTALL_SET_TIMEOUT

    def init(self: object, context: object = None) -> None:
        self._own_context_maker = make()  # type: ignore[attr-defined,operator]
        self._ctx = self._own_context_maker.__enter__()  # type: ignore[attr-defined]
        self.eval(INSTALL_SET_TIMEOUT)  # type: ignore[attr-defined]

    return init
