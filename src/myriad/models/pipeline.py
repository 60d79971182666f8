"""The gateway's one pipeline: every model call is a typed ``Call`` that passes an
ordered list of middleware before (and after) the gateway routes it.

::

    door / agent ──► Gateway.chat / chat_stream(_batches) / embed / responses
                         │  builds Call(kind, tenant, user, agent, model, body)
                         ▼
                  Pipeline.unary / Pipeline.stream
                    enter:  identity ─► telemetry ─► metering (admission)      (in order)
                    core:   cache ─► routing ─► retries/fallbacks ─► provider
                            (the core fills call.deployment, call.usage, ...)
                    finish: usage and cost computed once (call.usage, call.cost_usd)
                    exit:   metering (settle) ─► telemetry (span end) ─► identity  (reverse)

A middleware is any object with ``name``, ``order`` and two coroutines,
``enter(call)`` (raise to refuse the call: nothing upstream is touched) and
``exit(call)`` (sees ``call.error``, ``call.usage``, ``call.cost_usd``; must not
raise). One that needs something *current* while the core works (a span, so the
W3C context injected into the upstream request names it) also has
``attach(call) -> token`` and ``detach(token)``; for a stream the pipeline attaches
only while the core routes and opens the upstream (up to the first batch), never
while the consumer runs between chunks.

Per chunk the pipeline does nothing: the core counts (first-chunk time, streamed
characters, the usage chunk) into the ``Call`` as it relabels chunks anyway.

Every public operation of the gateway enters here; ``tests/models/test_pipeline.py``
calls each one (in process and through the HTTP door) and fails if one does not.
"""

from __future__ import annotations

import time
from typing import Any, AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Protocol, TypeVar

from myriad.models.types import Usage

T = TypeVar("T")

KINDS = ("chat", "embeddings", "responses")
"""Kinds of call; a streamed call has ``stream=True`` and the kind of its unary twin."""


class Call:
    """One model call as every middleware sees it. The gateway fills in the
    response side (deployment, usage, ...) as the call proceeds."""

    __slots__ = ("kind", "body", "tenant", "user", "agent", "model", "stream", "want_usage", "started",
                 "deployment", "response_model", "response_id", "finish_reasons", "attempts", "cached",
                 "first_chunk_s", "stream_chars", "usage", "cost_usd", "error", "result", "output_text", "state")

    def __init__(self, kind: str, model: str, body: Mapping[str, Any] | None = None, *, tenant: str | None = None,
                 agent: str | None = None, user: str | None = None, stream: bool = False,
                 want_usage: bool = False) -> None:
        self.kind = kind
        self.body = body
        self.tenant = tenant
        self.user = user
        self.agent = agent
        self.model = model
        """The model asked for (the default model when the body named none)."""
        self.stream = stream
        self.want_usage = want_usage
        """A stream's caller asked for the usage chunk (it is always asked upstream)."""
        self.started = time.perf_counter()
        self.deployment = ""
        """The deployment that answered (``"cache"`` for a semantic-cache hit)."""
        self.response_model: str | None = None
        self.response_id: str | None = None
        self.finish_reasons: tuple[str, ...] = ()
        self.attempts = 0
        self.cached = False
        self.first_chunk_s: float | None = None
        self.stream_chars = 0
        """Characters streamed so far (what a stream that broke before its usage chunk is charged by)."""
        self.usage: Usage | None = None
        """What the upstream reported, set once when the call ends (None: it reported nothing)."""
        self.cost_usd: float | None = None
        """The call's price, computed once by the pipeline's pricer (the meter's price book when
        metering is on, else the deployment's price)."""
        self.error: BaseException | None = None
        self.result: Any = None
        self.output_text: list[str] | None = None
        """Set to a list by a middleware that wants the streamed text (content capture)."""
        self.state: dict[str, Any] = {}
        """Scratch space, one key per middleware (a span, a reservation)."""

    def __repr__(self) -> str:
        return f"Call({self.kind}{' stream' if self.stream else ''} {self.model!r} tenant={self.tenant!r})"


class Middleware(Protocol):
    """See the module docstring. ``order``: lower runs first on the way in."""

    name: str
    order: int

    async def enter(self, call: Call) -> None: ...

    async def exit(self, call: Call) -> None: ...


Pricer = Callable[[Call], "float | None"]

IDENTITY, TELEMETRY, METERING, HOOKS = 0, 10, 20, 90
"""Conventional ``order`` values: who the caller is, then tracing (so a refused call is
traced too), then admission, then usage hooks."""


class Pipeline:
    """The ordered middleware of one gateway, and the code that runs a call through them."""

    def __init__(self, pricer: Pricer | None = None) -> None:
        self._mw: list[Any] = []
        self._attach: list[Any] = []
        self.pricer: Pricer | None = pricer
        self.calls = 0
        """Calls that entered the pipeline (for tests and stats)."""

    @property
    def middleware(self) -> list[Any]:
        return list(self._mw)

    def use(self, mw: Any) -> Any:
        """Register ``mw`` (kept sorted by ``order``); returns it."""
        self._mw.append(mw)
        self._mw.sort(key=lambda m: getattr(m, "order", 50))
        self._attach = [m for m in self._mw if hasattr(m, "attach")]
        return mw

    def remove(self, mw: Any) -> None:
        self._mw.remove(mw)
        self._attach = [m for m in self._mw if hasattr(m, "attach")]

    def find(self, name: str) -> Any:
        return next((m for m in self._mw if getattr(m, "name", None) == name), None)

    # -- running ------------------------------------------------------------------------

    async def _enter(self, call: Call) -> int:
        """Enter every middleware; on a refusal, exit those already entered and re-raise."""
        self.calls += 1
        done = 0
        try:
            for mw in self._mw:
                await mw.enter(call)
                done += 1
        except BaseException as e:
            call.error = e
            await self._exit(call, done)
            raise
        return done

    async def _exit(self, call: Call, entered: int) -> None:
        if call.cost_usd is None and call.usage is not None and self.pricer is not None:
            call.cost_usd = self.pricer(call)
        for mw in reversed(self._mw[:entered]):
            await mw.exit(call)

    def _attach_all(self, call: Call) -> list[tuple[Any, Any]]:
        return [(m, m.attach(call)) for m in self._attach]

    @staticmethod
    def _detach_all(tokens: list[tuple[Any, Any]]) -> None:
        for m, tok in reversed(tokens):
            m.detach(tok)

    async def unary(self, call: Call, core: Callable[[Call], Awaitable[T]]) -> T:
        """Run a one-shot call: middleware in, ``core(call)``, middleware out."""
        entered = await self._enter(call)
        tokens = self._attach_all(call) if self._attach else None
        try:
            result = await core(call)
        except BaseException as e:
            call.error = e
            raise
        else:
            call.result = result
            return result
        finally:
            if tokens:
                self._detach_all(tokens)
            await self._exit(call, entered)

    async def stream(self, call: Call, core: Callable[[Call], AsyncIterator[T]]) -> AsyncGenerator[T, None]:
        """Run a streamed call: middleware in, relay ``core(call)``'s items, middleware out
        (also when the consumer stops early: that is not an error)."""
        entered = await self._enter(call)
        agen = core(call)
        try:
            tokens = self._attach_all(call) if self._attach else None
            try:
                first = await agen.__anext__()
            except StopAsyncIteration:
                return
            finally:
                if tokens:
                    self._detach_all(tokens)
            yield first
            async for item in agen:
                yield item
        except GeneratorExit:
            raise
        except BaseException as e:
            call.error = e
            raise
        finally:
            try:
                await agen.aclose()  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001 - closing a broken stream must not hide why it broke
                pass
            await self._exit(call, entered)


def deployment_pricer(price_of: Callable[[str], Any]) -> Pricer:
    """A pricer from deployment prices (``price_of(deployment) -> Price | None``)."""

    def price(call: Call) -> float | None:
        u = call.usage
        if u is None or call.cached:
            return 0.0 if call.cached else None
        p = price_of(call.deployment)
        if p is None:
            return None
        if call.kind == "embeddings":
            return float(p.cost(u.prompt_tokens, 0, 0))
        return float(p.cost(u.prompt_tokens, u.completion_tokens, u.cached_tokens))

    return price


class UsageHookMiddleware:
    """Calls a ``UsageRecord`` hook (the gateway's ``on_usage``) once per finished call."""

    name = "usage_hook"
    order = HOOKS

    def __init__(self, hook: Callable[[Any], Any]) -> None:
        self.hook = hook

    async def enter(self, call: Call) -> None:
        return None

    async def exit(self, call: Call) -> None:
        if call.error is not None or not call.deployment:
            return
        from myriad.models.types import UsageRecord

        rec = UsageRecord(call.tenant, call.agent, call.model, call.deployment, call.usage or Usage(),
                          call.cost_usd or 0.0, time.perf_counter() - call.started,
                          "embeddings" if call.kind == "embeddings" else call.kind, cached=call.cached)
        out = self.hook(rec)
        if hasattr(out, "__await__"):
            await out


__all__ = ["Call", "KINDS", "Middleware", "Pipeline", "Pricer", "UsageHookMiddleware", "deployment_pricer",
           "IDENTITY", "TELEMETRY", "METERING", "HOOKS"]
