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
import contextlib
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
from myriad.sandbox.interface import Limits, RunResult, SandboxInfo
from myriad.sandbox.tools import Tool, as_tools, render_typescript

LANGUAGES = {None, "javascript", "js"}
MAX_CODE_BYTES = 1_048_576

# Runs once per isolate. Captures the dispatcher in a closure and removes the global,
# so sandboxed code reaches Python only through ``tools.<name>``.
_BOOTSTRAP = r"""
(() => {
  const call = globalThis.__myriad_call;
  delete globalThis.__myriad_call;
  const LIMIT = %(limit)d;
  let out = [], size = 0, truncated = false;
  const fmt = (a) => {
    if (typeof a === 'string') return a;
    if (a instanceof Error) return String(a.stack || a);
    try { const s = JSON.stringify(a); return s === undefined ? String(a) : s; } catch (e) { return String(a); }
  };
  const log = (level) => (...args) => {
    const line = args.map(fmt).join(' ');
    if (size + line.length > LIMIT) { truncated = true; return; }
    size += line.length + 1;
    out.push({level, message: line});
  };
  globalThis.console = Object.freeze({log: log('log'), info: log('info'), debug: log('debug'),
                                      warn: log('warn'), error: log('error')});
  const t = {};
  for (const name of %(names)s) {
    t[name] = async (args) => {
      const reply = JSON.parse(await call(name, JSON.stringify(args === undefined ? {} : args)));
      if ('error' in reply) throw new Error(reply.error);
      return reply.value;
    };
  }
  Object.defineProperty(globalThis, 'tools', {value: Object.freeze(t), writable: false, configurable: false});
  const AsyncFunction = Object.getPrototypeOf(async function () {}).constructor;
  const compile = (src) => {
    try { return new AsyncFunction('return (' + src + '\n);'); } catch (e) { return new AsyncFunction(src); }
  };
  const drain = () => { const r = {logs: out, truncated}; out = []; size = 0; truncated = false; return r; };
  Object.defineProperty(globalThis, '__myriad_run', {writable: false, configurable: false, value: (src) => (async () => {
    let value, error = null;
    try {
      value = await compile(src)();
      if (typeof value === 'function') value = await value();
    } catch (e) {
      error = (e && e.stack) ? String(e.stack) : String(e);
    }
    let encoded;
    try { encoded = JSON.stringify(value === undefined ? null : value); }
    catch (e) { encoded = 'null'; error = error || ('result is not JSON-serialisable: ' + e); }
    return JSON.stringify({value: encoded, error, ...drain()});
  })()});
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


class IsolateSandbox:
    """A V8 isolate running Code-Mode snippets against bound Python tools."""

    tier = "isolate"
    capabilities = frozenset({"javascript", "tools"})

    def __init__(self, *, id: str, owner: str, limits: Limits, tools: dict[str, Tool]) -> None:
        self.id = id
        self.owner = owner
        self.limits = limits
        self.tools = tools
        self.created_at = time.time()
        self.last_used_at = self.created_at
        self.runs = 0
        self._racer: Any = None
        self._stack = contextlib.AsyncExitStack()
        self._lock = asyncio.Lock()
        self._closed = False
        self._dead_reason: str | None = None

    # -- life cycle -----------------------------------------------------------------

    async def start(self) -> "IsolateSandbox":
        """Create the isolate and install console capture and the tools object."""
        mr_mod = _mini_racer()
        # Created inside the running loop, mini-racer reuses it instead of starting a
        # Python thread per isolate.
        self._racer = mr = mr_mod.MiniRacer()
        try:
            mr.set_hard_memory_limit(int(self.limits.memory_mb or 64) * 1024 * 1024)
            dispatcher = await self._stack.enter_async_context(mr.wrap_py_function(self._dispatch))
            mr.eval("globalThis")["__myriad_call"] = dispatcher
            mr.eval(_BOOTSTRAP % {"limit": int(self.limits.output_bytes or 1_048_576), "names": json.dumps(sorted(self.tools))})
        except BaseException:
            await self._dispose()
            raise
        return self

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        """Dispose of the isolate and release its memory; idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._dispose()

    async def _dispose(self) -> None:
        racer, self._racer = self._racer, None
        with contextlib.suppress(Exception):
            await self._stack.aclose()
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
        timeout = float(timeout or self.limits.timeout or 30.0)
        if self.limits.timeout:
            timeout = min(timeout, self.limits.timeout)
        async with self._lock:
            if self._racer is None:  # the previous run hit a limit: start afresh
                self._stack = contextlib.AsyncExitStack()
                await self.start()
            self.last_used_at = time.time()
            self.runs += 1
            return await self._run_locked(code, timeout)

    async def _run_locked(self, code: str, timeout: float) -> RunResult:
        mr = self._racer
        mr_mod = _mini_racer()
        started = time.perf_counter()
        deadline = started + timeout
        try:
            promise = await asyncio.wait_for(mr.eval_cancelable(f"__myriad_run({json.dumps(code)})"), timeout)
            raw = await self._await_promise(promise, deadline)
        except (asyncio.TimeoutError, mr_mod.JSTimeoutException):
            await self._kill(f"timed out after {timeout:g} s")
            raise SandboxTimeout(f"code ran longer than the {timeout:g} s limit; the isolate was terminated") from None
        except mr_mod.JSOOMException:
            await self._kill("memory limit")
            raise self._oom() from None
        except mr_mod.JSEvalException as e:
            if mr.was_hard_memory_limit_reached():
                await self._kill("memory limit")
                raise self._oom() from None
            return RunResult(error=str(e), exit_code=1, duration_ms=_ms(started))
        limit = int(self.limits.output_bytes or 1_048_576)
        if len(raw) > 4 * limit:
            raise SandboxLimitExceeded(f"the run produced {len(raw)} bytes of output, limit {limit}")
        reply = json.loads(raw)
        if len(reply["value"]) > limit:
            raise SandboxLimitExceeded(f"the result is {len(reply['value'])} bytes, limit {limit}")
        logs = reply["logs"]
        stdout = "".join(f"{entry['message']}\n" for entry in logs if entry["level"] in ("log", "info", "debug"))
        stderr = "".join(f"{entry['message']}\n" for entry in logs if entry["level"] in ("warn", "error"))
        return RunResult(
            value=json.loads(reply["value"]),
            stdout=stdout,
            stderr=stderr,
            logs=logs,
            error=reply["error"],
            exit_code=1 if reply["error"] else 0,
            truncated=bool(reply["truncated"]),
            duration_ms=_ms(started),
        )

    async def _await_promise(self, promise: Any, deadline: float) -> str:
        if isinstance(promise, str):
            return promise
        waiter = asyncio.ensure_future(_await(promise))
        try:
            while True:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    raise asyncio.TimeoutError
                done, _ = await asyncio.wait({waiter}, timeout=min(remaining, 0.05))
                if done:
                    return waiter.result()
                # An allocation bomb after an ``await`` kills the microtask without
                # settling the promise: notice it instead of waiting for the timeout.
                if self._racer is not None and self._racer.was_hard_memory_limit_reached():
                    raise _mini_racer().JSOOMException("memory limit")
        finally:
            if not waiter.done():
                waiter.cancel()

    async def _kill(self, reason: str) -> None:
        self._dead_reason = reason
        await self._dispose()
        self._stack = contextlib.AsyncExitStack()

    def _oom(self) -> SandboxLimitExceeded:
        mb = self.limits.memory_mb or 64
        return SandboxLimitExceeded(f"code exceeded the {mb} MiB memory limit; the isolate was terminated")

    async def _dispatch(self, name: Any, args_json: Any) -> str:
        tool = self.tools.get(str(name))
        if tool is None:
            return json.dumps({"error": f"no tool named {name!r}"})
        try:
            value = await tool.invoke(json.loads(str(args_json)))
            return json.dumps({"value": value}, default=str)
        except MyriadError as e:
            return json.dumps({"error": e.message})
        except Exception as e:  # a tool's failure is the snippet's error, not the host's
            return json.dumps({"error": f"{type(e).__name__}: {e}"})

    # -- introspection ----------------------------------------------------------------

    def heap_bytes(self) -> int:
        """Current V8 heap size of this isolate (0 when not running)."""
        if self._racer is None:
            return 0
        return int(self._racer.heap_stats().get("total_physical_size", 0))

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


async def _await(promise: Any) -> str:
    return await promise


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
        sandbox = IsolateSandbox(id=id, owner=owner, limits=limits, tools=as_tools(tools))
        return await sandbox.start()

    async def aclose(self) -> None:
        return None


__all__ = ["IsolateSandbox", "IsolateTier"]
