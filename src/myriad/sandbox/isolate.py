"""The isolate tier: one V8 isolate per sandbox (via ``mini-racer``), for Code Mode.

The model writes JavaScript against ``tools`` (see ``myriad.sandbox.tools``); the
snippet runs in an isolate with no network, no filesystem, no timers beyond
mini-racer's ``setTimeout`` and no host objects except the bound tools, which call
back into Python through one dispatcher. ``console`` output is captured (capped).

Limits: a wall-clock timeout over the whole run (synchronous part and every
``await``), a hard V8 heap limit, and a cap on captured output and on the result's
size. A run that hits the timeout or the heap limit is terminated and its isolate
disposed (the next run on the same id starts a fresh one); the host and other
isolates go on. mini-racer runs each isolate on its own native thread, so a
runaway loop never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from typing import Any

from myriad.errors import (
    InvalidRequest,
    MyriadError,
    SandboxError,
    SandboxLimitExceeded,
    SandboxTimeout,
    SandboxUnavailable,
    TierUnavailable,
)
from myriad.sandbox.events import NO_HOOKS, CloseReason, Hooks, SandboxEvent
from myriad.sandbox.interface import Limits, RunResult, SandboxInfo
from myriad.sandbox.tools import Tool, as_tools, render_typescript

LANGUAGES = {None, "javascript", "js"}
_BUFFER_LIMIT = "array buffers would exceed the isolate memory limit"
MAX_CODE_BYTES = 1_048_576

# Runs once per isolate. Python never calls into a running isolate synchronously
# (mini-racer would block the event loop while user code spins); instead the host
# *pumps*: ``__myriad_start`` / ``__myriad_poll`` return a JSON string of queued tool
# calls and, once finished, the result; ``__myriad_settle`` resolves one call. Every
# call is an ``eval_cancelable`` with the run's deadline, so a spinning snippet only
# ever makes a cancelable wait time out.
_BOOTSTRAP = r"""
(() => {
  'use strict';
  const LIMIT = %(limit)d, BUDGET = %(budget)d, MB = %(mb)d, NAMES = %(names)s;
  // Every built-in the host's protocol relies on is captured here, before any snippet
  // runs: a snippet that replaces JSON.stringify, Array.prototype.push, Promise.prototype
  // .then or Object.prototype.toJSON changes its own values, never what the host reads.
  const stringify = JSON.stringify, parse = JSON.parse, S = String, P = Promise, then = Promise.prototype.then;
  const reflectApply = Reflect.apply, reflectConstruct = Reflect.construct, ownKeys = Reflect.ownKeys;
  const defineProperty = Object.defineProperty, gopd = Object.getOwnPropertyDescriptor, freeze = Object.freeze;
  const getPrototypeOf = Object.getPrototypeOf, setPrototypeOf = Object.setPrototypeOf, arrayFrom = Array.from;
  const ErrorC = Error, TypeErrorC = TypeError, RangeErrorC = RangeError, trunc = Math.trunc, NumberC = Number;
  const SAB = SharedArrayBuffer, Int32 = Int32Array, waitAsync = Atomics.waitAsync, FR = FinalizationRegistry;
  const abByteLength = gopd(ArrayBuffer.prototype, 'byteLength').get;
  const AsyncFunction = getPrototypeOf(async function () {}).constructor;

  // -- memory: array buffers (and typed arrays' backing stores) count against the limit.
  // V8's heap limit does not see them (one run kept 1 GiB under a 64 MiB limit); the bytes
  // of live buffers are counted here and given back when the garbage collector frees them.
  let external = 0;
  const registry = new FR((n) => { external -= n; });
  const charge = (n) => {
    if (!(n > 0)) return 0;
    if (external + n > BUDGET) {
      throw new RangeErrorC('array buffers would exceed the isolate memory limit of ' + MB + ' MiB');
    }
    external += n;
    return n;
  };
  const toIndex = (x) => (x === undefined ? 0 : trunc(NumberC(x)));
  const isBuffer = (x) => { try { reflectApply(abByteLength, x, []); return true; } catch (e) { return false; } };
  const wrap = (Orig, plan) => {
    const W = function (...args) {
      if (new.target === undefined) throw new TypeErrorC("Constructor " + Orig.name + " requires 'new'");
      const p = plan(args);  // {n: bytes to charge, a: the arguments, coerced once}
      const n = charge(p.n);
      let obj;
      try { obj = reflectConstruct(Orig, p.a, new.target === W ? Orig : new.target); }
      catch (e) { external -= n; throw e; }
      if (n) registry.register(obj, n);
      return obj;
    };
    for (const key of ownKeys(Orig)) {
      if (key !== 'length' && key !== 'name' && key !== 'prototype') defineProperty(W, key, gopd(Orig, key));
    }
    defineProperty(W, 'name', {value: Orig.name});
    defineProperty(W, 'length', {value: Orig.length});
    W.prototype = Orig.prototype;
    defineProperty(Orig.prototype, 'constructor', {value: W, writable: true, configurable: true, enumerable: false});
    setPrototypeOf(W, getPrototypeOf(Orig));
    defineProperty(globalThis, Orig.name, {value: W, writable: true, configurable: true, enumerable: false});
    return W;
  };
  wrap(ArrayBuffer, (a) => {
    const len = toIndex(a[0]);
    const opts = a[1];
    if (opts !== undefined && opts !== null && typeof opts === 'object') {
      const max = opts.maxByteLength;
      if (max !== undefined) {
        const m = toIndex(max);
        return {n: m > len ? m : len, a: [len, {maxByteLength: m}]};
      }
    }
    return {n: len, a: [len]};
  });
  for (const T of [Int8Array, Uint8Array, Uint8ClampedArray, Int16Array, Uint16Array, Int32Array, Uint32Array,
                   Float32Array, Float64Array, BigInt64Array, BigUint64Array]) {
    const bpe = T.BYTES_PER_ELEMENT;
    wrap(T, (a) => {
      const src = a[0];
      if (src !== null && (typeof src === 'object' || typeof src === 'function')) {
        if (isBuffer(src)) return {n: 0, a};  // a view on an existing (already counted) buffer
        const list = arrayFrom(src);  // iterated once: what is counted is what is copied
        return {n: list.length * bpe, a: [list]};
      }
      const len = toIndex(src);
      return {n: len * bpe, a: [len]};
    });
  }
  for (const m of ['transfer', 'transferToFixedLength']) {
    const orig = ArrayBuffer.prototype[m];
    if (typeof orig !== 'function') continue;
    defineProperty(ArrayBuffer.prototype, m, {writable: true, configurable: true, value: function (len) {
      const n = charge(len === undefined ? reflectApply(abByteLength, this, []) : toIndex(len));
      let out;
      try { out = reflectApply(orig, this, len === undefined ? [] : [toIndex(len)]); } catch (e) { external -= n; throw e; }
      if (n) registry.register(out, n);
      return out;
    }});
  }
  // no other way to allocate outside the heap, and nothing that runs after a run returns:
  // WebAssembly memories, shared buffers, Atomics.waitAsync (timers) and finalizers are gone.
  for (const name of ['WebAssembly', 'SharedArrayBuffer', 'FinalizationRegistry']) delete globalThis[name];
  delete Atomics.waitAsync;

  // -- timers: each belongs to its run; when the run returns, the pending ones are dropped.
  let run = 0, nextTimer = 1;
  const timers = {__proto__: null};
  const setTimeoutImpl = function (fn, delay, ...args) {
    if (typeof fn !== 'function') throw new TypeErrorC('setTimeout needs a function');
    const id = nextTimer++;
    const mine = run;
    timers[id] = mine;
    const fire = () => {
      if (timers[id] !== mine || mine !== run) return;
      delete timers[id];
      reflectApply(fn, undefined, args);
    };
    // at least 1 ms: a zero wait would resolve as a microtask, inside the current job
    const w = waitAsync(new Int32(new SAB(4)), 0, 0, NumberC(delay) > 1 ? NumberC(delay) : 1);
    reflectApply(then, w.value, [fire]);
    return id;
  };
  const clearTimeoutImpl = (id) => { delete timers[id]; };
  for (const [name, value] of [['setTimeout', setTimeoutImpl], ['clearTimeout', clearTimeoutImpl]]) {
    defineProperty(globalThis, name, {value, writable: false});  // mini-racer's are non-configurable vars
  }

  // -- console, tools, the run itself
  let out = [], size = 0, truncated = false, queue = [], done = null, nextId = 0;
  const pending = {__proto__: null};
  const fmt = (a) => {
    if (typeof a === 'string') return a;
    try {
      if (a instanceof ErrorC) return S(a.stack || a);
      const s = stringify(a);
      return s === undefined ? S(a) : s;
    } catch (e) { return '[unprintable]'; }
  };
  const log = (level) => (...args) => {
    let line = '';
    for (let i = 0; i < args.length; i++) line += (i ? ' ' : '') + fmt(args[i]);
    if (size + line.length > LIMIT) { truncated = true; return; }
    size += line.length + 1;
    out[out.length] = {__proto__: null, level, message: line};
  };
  globalThis.console = freeze({log: log('log'), info: log('info'), debug: log('debug'),
                               warn: log('warn'), error: log('error')});
  const t = {};
  for (const name of NAMES) {
    t[name] = (args) => new P((resolve, reject) => {
      let encoded;
      try { encoded = stringify(args === undefined ? {} : args); }
      catch (e) { reject(new TypeErrorC('tools.' + name + ': arguments are not JSON-serialisable')); return; }
      if (typeof encoded !== 'string') encoded = '{}';
      const id = ++nextId;
      pending[id] = {__proto__: null, resolve, reject};
      queue[queue.length] = {__proto__: null, id, name, args: encoded};
    });
  }
  defineProperty(globalThis, 'tools', {value: freeze(t), writable: false, configurable: false});
  const compile = (src) => {
    try { return new AsyncFunction('return (' + src + '\n);'); } catch (e) { return new AsyncFunction(src); }
  };
  // The status the host reads is assembled from strings and numbers by hand, never by
  // calling anything a snippet can reach.
  const poll = () => {
    let r = '{"calls":[';
    for (let i = 0; i < queue.length; i++) {
      const c = queue[i];
      r += (i ? ',' : '') + '[' + c.id + ',' + stringify(c.name) + ',' + stringify(c.args) + ']';
    }
    r += '],"done":';
    if (done === null) {
      r += 'null}';
    } else {
      r += '{"value":' + stringify(done.value) + ',"error":' + (done.error === null ? 'null' : stringify(done.error))
        + ',"truncated":' + (truncated ? 'true' : 'false') + ',"logs":[';
      for (let i = 0; i < out.length; i++) {
        r += (i ? ',' : '') + '{"level":' + stringify(out[i].level) + ',"message":' + stringify(out[i].message) + '}';
      }
      r += ']}}';
      done = null; out = []; size = 0; truncated = false;
      for (const k in pending) delete pending[k];
    }
    queue = [];
    return r;
  };
  const hidden = (name, value) => defineProperty(globalThis, name, {value, writable: false, configurable: false, enumerable: false});
  hidden('__myriad_poll', poll);
  hidden('__myriad_settle', (id, ok, payload) => {
    const p = pending[id];
    if (p === undefined) return 0;
    delete pending[id];
    if (ok) p.resolve(parse(payload)); else p.reject(new ErrorC(payload));
    return 1;
  });
  hidden('__myriad_start', (src) => {
    (async () => {
      let value, error = null, encoded;
      try {
        value = await compile(src)();
        if (typeof value === 'function') value = await value();
      } catch (e) {
        try { error = (e && e.stack) ? S(e.stack) : S(e); } catch (e2) { error = 'an error that cannot be printed'; }
        if (typeof error !== 'string') error = 'error';
      }
      try { encoded = stringify(value === undefined ? null : value); }
      catch (e) { encoded = 'null'; error = error || ('result is not JSON-serialisable: ' + S(e)); }
      run++;  // the run has returned: every timer it left is dropped, none fires from now on
      done = {__proto__: null, value: typeof encoded === 'string' ? encoded : 'null', error};
    })();
    return poll();
  });
})();
"""


def _mini_racer() -> Any:
    try:
        import py_mini_racer
    except ImportError:
        raise SandboxUnavailable(
            "the isolate tier needs mini-racer: pip install mini-racer (it is a dependency of myriad)"
        ) from None
    return py_mini_racer


V8_SANDBOX_ISOLATES = 4_000
"""Live isolates one process can hold when V8 runs with its sandbox, as mini-racer's
builds do: every isolate takes a slot of the process's one sandbox reservation, and
past ~4,032 of them (mini-racer 0.14.1, V8 14.4, measured: the 4,033rd) creating one
aborts the whole process (``Fatal JavaScript out of memory: MemoryChunk allocation
failed during deserialization``), every agent on it with it. Not a memory limit: it
happens with 2.7 GB resident, and raising ``vm.max_map_count`` does not move it."""


def isolate_limit() -> int | None:
    """How many live isolates this process may hold before V8 aborts it (None: no known
    limit, V8 without its sandbox)."""
    mr_mod = _mini_racer()
    try:
        dll = mr_mod.init_mini_racer(ignore_duplicate_init=True)
        sandboxed = bool(dll.mr_v8_is_using_sandbox())
    except Exception:  # an unknown build: assume the wall
        return V8_SANDBOX_ISOLATES
    return V8_SANDBOX_ISOLATES if sandboxed else None


def _new_racer(mr_mod: Any) -> Any:
    """A ``MiniRacer`` on a fresh V8 isolate, without the ``setTimeout`` script its
    constructor evaluates (the bootstrap installs the run-scoped timers instead; skipping
    it saves one synchronous eval per isolate, ~0.4 ms CPU, and leaves no
    ``__timer_manager`` global). Falls back to the plain constructor when this
    mini-racer's internals differ from the ones this was written against (0.12-0.14)."""
    cls = mr_mod.MiniRacer
    make = getattr(getattr(mr_mod, "_mini_racer", None), "_make_context", None)
    if make is None or not {"_own_context_maker", "_ctx"} <= set(getattr(cls.__init__, "__code__").co_names):
        return cls()
    racer = cls.__new__(cls)
    try:
        maker = make()
        racer._ctx = maker.__enter__()
    except TypeError:  # a changed internal signature: the public way, one eval slower
        racer._own_context_maker = racer._ctx = None
        return cls()
    racer._own_context_maker = maker
    return racer


class IsolateSandbox:
    """A V8 isolate running Code-Mode snippets against bound Python tools."""

    tier = "isolate"
    capabilities = frozenset({"javascript", "tools"})
    events: Hooks = NO_HOOKS
    """Where this sandbox announces its operations (``Sandboxes`` sets its own)."""

    def __init__(self, *, id: str, owner: str, limits: Limits, tools: dict[str, Tool], instance: str = "") -> None:
        self.id = id
        self.owner = owner
        self.limits = limits
        self.tools = tools
        self.created_at = time.time()
        self.last_used_at = self.created_at
        self.runs = 0
        self._racer: Any = None
        self._lock = asyncio.Lock()
        self._closed = False
        self._dead_reason: str | None = None
        self.instance = instance

    def _event(self, kind: Any, **fields: Any) -> SandboxEvent:
        return SandboxEvent(kind, owner=self.owner, sandbox_id=self.id, tier=self.tier, instance=self.instance,
                            limits=self.limits, sandbox=self, **fields)

    # -- life cycle -----------------------------------------------------------------

    async def _start(self) -> "IsolateSandbox":
        """Create the isolate and install console capture and the tools object."""
        mr_mod = _mini_racer()
        # Created inside the running loop, mini-racer reuses it instead of starting a
        # Python thread per isolate.
        self._racer = mr = _new_racer(mr_mod)
        try:
            mr.set_hard_memory_limit(int(self.limits.memory_mb or 64) * 1024 * 1024)
            mb = int(self.limits.memory_mb or 64)
            mr.eval(_BOOTSTRAP % {"limit": int(self.limits.output_bytes or 1_048_576), "names": json.dumps(sorted(self.tools)),
                                  "budget": mb * 1024 * 1024, "mb": mb})
        except BaseException:
            await self._dispose()
            raise
        return self

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self, *, reason: CloseReason = "deleted") -> None:
        """Dispose of the isolate and release its memory; idempotent."""
        if self._closed:
            return
        self._closed = True
        async with self.events.around(self._event("close", reason=reason)):
            await self._dispose()

    async def _dispose(self) -> None:
        racer, self._racer = self._racer, None
        if racer is not None:
            racer.close()

    # -- running ----------------------------------------------------------------------

    def declaration(self) -> str:
        """The TypeScript declaration of this sandbox's ``tools`` for a model's prompt."""
        return render_typescript(self.tools)

    async def run(self, code: str, *, language: str | None = None, timeout: float | None = None) -> RunResult:
        """Run a JavaScript snippet; its awaited value comes back as ``RunResult.value``.

        ``code`` may be an expression (``1 + 1``, ``tools.get({id: 3})``), a function
        (``async () => {...}``, which is called) or a function body using ``await`` and
        ``return``. A thrown error is returned in ``RunResult.error``; hitting the
        timeout raises ``SandboxTimeout`` and the heap limit ``SandboxLimitExceeded``.
        """
        if language not in LANGUAGES:
            raise TierUnavailable(f"the isolate tier runs JavaScript only, not {language!r}; open a container sandbox for it")
        if not isinstance(code, str):
            raise InvalidRequest("code must be a string")
        if len(code.encode()) > MAX_CODE_BYTES:
            raise InvalidRequest(f"code is larger than {MAX_CODE_BYTES} bytes")
        if self._closed:
            raise SandboxError(f"sandbox {self.id} is closed")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
            raise InvalidRequest(f"timeout must be a positive number of seconds, got {timeout!r}")
        timeout = float(timeout or self.limits.timeout or 30.0)
        if self.limits.timeout:
            timeout = min(timeout, self.limits.timeout)
        async with self.events.around(self._event("run", timeout=timeout, language="javascript")) as event:
            started = time.perf_counter()
            try:
                async with self._lock:
                    if self._racer is None:  # the previous run hit a limit: start afresh
                        await self._start()
                    self.last_used_at = time.time()
                    self.runs += 1
                    event.result = await self._run_locked(code, timeout)
                    return event.result  # type: ignore[no-any-return]
            finally:
                event.wall_ms = (time.perf_counter() - started) * 1000

    async def _run_locked(self, code: str, timeout: float) -> RunResult:
        mr_mod = _mini_racer()
        started = time.perf_counter()
        deadline = started + timeout
        calls: dict[asyncio.Task[tuple[bool, str]], int] = {}
        try:
            status = await self._eval(f"__myriad_start({json.dumps(code)})", deadline)
            raw = await self._pump(status, calls, deadline)
        except (asyncio.TimeoutError, mr_mod.JSTimeoutException):
            await self._kill(f"timed out after {timeout:g} s")
            raise SandboxTimeout(f"code ran longer than the {timeout:g} s limit; the isolate was terminated") from None
        except mr_mod.JSOOMException:
            await self._kill("memory limit")
            raise self._oom() from None
        except mr_mod.JSEvalException as e:
            if self._racer is not None and self._racer.was_hard_memory_limit_reached():
                await self._kill("memory limit")
                raise self._oom() from None
            await self._kill(f"failed: {e}")
            return RunResult(error=str(e), exit_code=1, duration_ms=_ms(started))
        except SandboxError:
            await self._kill("malformed status")
            raise
        finally:
            for task in calls:
                task.cancel()
        limit = int(self.limits.output_bytes or 1_048_576)
        if len(raw["value"]) > limit:
            raise SandboxLimitExceeded(f"the result is {len(raw['value'])} bytes, limit {limit}")
        if raw["error"] and _BUFFER_LIMIT in raw["error"] and self._racer is not None:
            # the snippet ran into the array-buffer budget: collect now, so the bytes its
            # dropped buffers held count again from the next run (finalizers give them back)
            self._racer.low_memory_notification()
        logs = raw["logs"]
        stdout = "".join(f"{entry['message']}\n" for entry in logs if entry["level"] in ("log", "info", "debug"))
        stderr = "".join(f"{entry['message']}\n" for entry in logs if entry["level"] in ("warn", "error"))
        return RunResult(
            value=json.loads(raw["value"]),
            stdout=stdout,
            stderr=stderr,
            logs=logs,
            error=raw["error"],
            exit_code=1 if raw["error"] else 0,
            truncated=bool(raw["truncated"]),
            duration_ms=_ms(started),
        )

    async def _eval(self, js: str, deadline: float) -> Any:
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            raise asyncio.TimeoutError
        racer = self._racer
        if racer is None:
            raise asyncio.TimeoutError
        async with asyncio.timeout(remaining):  # no extra task per eval, unlike wait_for
            result = await racer.eval_cancelable(js)
        if racer.was_hard_memory_limit_reached():
            raise _mini_racer().JSOOMException("memory limit")
        return result

    async def _pump(self, status: Any, calls: dict[asyncio.Task[tuple[bool, str]], int], deadline: float) -> dict[str, Any]:
        """Run queued tool calls and feed their results back until the snippet finishes."""
        idle = 0.0  # poll once at once: microtasks ran at the end of the last eval
        while True:
            state = _status(status)
            for call_id, name, args_json in state["calls"]:
                calls[asyncio.ensure_future(self._call_tool(name, args_json))] = call_id
            finished: dict[str, Any] | None = state["done"]
            if finished is not None:
                return finished
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise asyncio.TimeoutError
            if calls:
                done, _ = await asyncio.wait(calls, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    call_id = calls.pop(task)
                    ok, payload = task.result()
                    await self._eval(f"__myriad_settle({call_id}, {'true' if ok else 'false'}, {json.dumps(payload)})", deadline)
                idle = 0.0
            else:
                # Waiting on the snippet's own timers: poll, backing off to 20 ms.
                if idle:
                    await asyncio.sleep(min(idle, remaining))
                idle = min(max(idle * 2, 0.001), 0.02)
            status = await self._eval("__myriad_poll()", deadline)

    async def _call_tool(self, name: str, args_json: str) -> tuple[bool, str]:
        tool = self.tools.get(name)
        if tool is None:
            return False, f"no tool named {name!r}"
        try:
            args = json.loads(args_json)
            async with self.events.around(self._event("tool", tool=name, arguments=args)) as event:
                event.result = value = await tool.invoke(args)
            return True, json.dumps(value, default=_jsonable)
        except MyriadError as e:
            return False, e.message
        except Exception as e:  # a tool's failure is the snippet's error, not the host's
            return False, f"{type(e).__name__}: {e}"

    async def _kill(self, reason: str) -> None:
        self._dead_reason = reason
        await self._dispose()

    def _oom(self) -> SandboxLimitExceeded:
        mb = self.limits.memory_mb or 64
        return SandboxLimitExceeded(f"code exceeded the {mb} MiB memory limit; the isolate was terminated")

    # -- introspection ----------------------------------------------------------------

    def info(self) -> SandboxInfo:
        return SandboxInfo(
            id=self.id,
            tier=self.tier,
            owner=self.owner,
            status="closed" if self._closed else "running",
            created_at=self.created_at,
            last_used_at=self.last_used_at,
            limits=self.limits.to_json(),
            capabilities=sorted(self.capabilities),
        )


_LEVELS = frozenset({"log", "info", "debug", "warn", "error"})


def _status(raw: Any) -> dict[str, Any]:
    """The isolate's status, checked field by field (it is built from captured built-ins,
    so a mismatch is a bug, and must not turn into anything the host acts on)."""
    try:
        state = json.loads(raw) if isinstance(raw, str) else None
        calls, done = state["calls"], state["done"]  # type: ignore[index]
        ok = isinstance(calls, list) and all(
            isinstance(c, list) and len(c) == 3 and type(c[0]) is int and isinstance(c[1], str) and isinstance(c[2], str)
            for c in calls)
        if done is not None:
            ok = ok and isinstance(done, dict) and isinstance(done.get("value"), str) \
                and (done.get("error") is None or isinstance(done.get("error"), str)) \
                and isinstance(done.get("truncated"), bool) and isinstance(done.get("logs"), list) \
                and all(isinstance(e, dict) and e.get("level") in _LEVELS and isinstance(e.get("message"), str)
                        for e in done["logs"])
    except (ValueError, TypeError, KeyError):
        ok = False
    if not ok:
        raise SandboxError("the isolate answered with a malformed status; it was terminated")
    return state  # type: ignore[return-value]


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


class IsolateTier:
    """Makes ``IsolateSandbox``es."""

    name = "isolate"
    weight = 10
    capabilities = IsolateSandbox.capabilities

    def __init__(self, settings: Any = None) -> None:
        self.settings = settings

    def check(self) -> None:
        _mini_racer()

    async def create(self, *, id: str, owner: str, limits: Limits, tools: Any = None, **options: Any) -> IsolateSandbox:
        if options.get("network"):
            raise TierUnavailable("the isolate tier has no network; bind a tool that makes the request instead")
        sandbox = IsolateSandbox(id=id, owner=owner, limits=limits, tools=as_tools(tools),
                                 instance=str(options.get("instance") or ""))
        return await sandbox._start()

    async def aclose(self) -> None:
        return None


__all__ = ["IsolateSandbox", "IsolateTier"]
