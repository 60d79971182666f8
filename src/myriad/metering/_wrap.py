"""Metering by wrapping: a model provider or a sandbox becomes metered by being wrapped.

Nothing in the gateway or the sandbox room needs a metering flag. The composition
root wraps the object it hands out::

    provider = MeteredProvider(provider, meter, model="gpt-x", deployment="openai-east")
    gateway = MeteredGateway(gateway, meter)          # _gateway.py
    sandboxes.add_hook(SandboxMetering(meter))       # _sandbox.py: a hook, not a wrapper

Who is charged comes from the call's context: ``with charging(subject): ...`` (the
agent host sets it around a turn, the HTTP gateway around a request). Each wrapped
call reserves its worst case at admission (``BudgetExceeded`` / ``RateLimited`` are
raised *before* the upstream is touched), commits what the upstream reported, and
releases the rest.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator, Mapping, TypeVar

from myriad.errors import ConfigError
from myriad.metering._events import Resources, Subject, Usage
from myriad.metering._meter import Meter

T = TypeVar("T")

_SUBJECT: contextvars.ContextVar[Subject | None] = contextvars.ContextVar("myriad_metering_subject", default=None)


@contextlib.contextmanager
def charging(subject: Subject) -> Iterator[Subject]:
    """Charge metered calls made inside this block (and tasks it starts) to ``subject``."""
    token = _SUBJECT.set(subject)
    try:
        yield subject
    finally:
        _SUBJECT.reset(token)


def current_subject() -> Subject | None:
    """The subject set by the innermost ``charging`` block, if any."""
    return _SUBJECT.get()


def _require_subject(subject_of: Callable[[], Subject | None]) -> Subject:
    s = subject_of()
    if s is None:
        raise ConfigError(
            "a metered call was made outside any metering subject; wrap it in myriad.metering.charging(subject)"
        )
    return s


# -- estimates -------------------------------------------------------------------


def prompt_tokens_bound(body: Mapping[str, Any], *, bytes_per_token: float = 1.0) -> int:
    """An upper bound on prompt tokens: byte-level BPE never spends more than one token per byte.

    Counts the UTF-8 bytes of the JSON of ``messages`` and ``tools`` (JSON only adds
    bytes), divided by ``bytes_per_token`` (1.0 is a true bound; 4.0 is the usual
    average and may under-reserve).
    """
    payload = {k: body.get(k) for k in ("messages", "tools", "input", "prompt") if body.get(k) is not None}
    n = len(json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode())
    return int(n / bytes_per_token) + 8


def estimate_chat(
    body: Mapping[str, Any],
    *,
    model: str | None = None,
    deployment: str | None = None,
    default_max_output: int = 4096,
    bytes_per_token: float = 1.0,
) -> Usage:
    """The most an OpenAI-shaped chat request can use: the prompt bound plus ``max_tokens`` (x ``n``)."""
    out = body.get("max_completion_tokens") or body.get("max_tokens") or default_max_output
    n = body.get("n") or 1
    return Usage.tokens_of(
        model or str(body.get("model")),
        input=prompt_tokens_bound(body, bytes_per_token=bytes_per_token),
        output=int(out) * int(n),
        deployment=deployment,
    )


def usage_of_openai(usage: Any, model: str, deployment: str | None = None) -> Usage:
    """``Usage`` from an OpenAI ``usage`` dict or any object with ``prompt_tokens`` etc."""
    return Usage.from_openai(usage or {}, model, deployment)


# -- generic ---------------------------------------------------------------------


def metered(
    meter: Meter,
    *,
    operation: str,
    estimate: Callable[..., Usage | None],
    actual: Callable[..., Usage],
    subject_of: Callable[[], Subject | None] = current_subject,
) -> Callable[[Callable[..., Awaitable[T]]], Callable[..., Awaitable[T]]]:
    """Decorate an async function: reserve ``estimate(*args, **kw)``, call, commit ``actual(result, *args, **kw)``."""

    def wrap(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        async def wrapper(*args: Any, **kwargs: Any) -> T:
            subject = _require_subject(subject_of)
            async with meter.reserve(subject, estimate(*args, **kwargs), operation=operation) as r:
                result = await fn(*args, **kwargs)
                r.commit(actual(result, *args, **kwargs))
                return result

        wrapper.__name__ = getattr(fn, "__name__", "metered")
        wrapper.__doc__ = fn.__doc__
        return wrapper

    return wrap


# -- model providers ---------------------------------------------------------------


class MeteredProvider:
    """A model provider (``chat``, ``stream``, ``embed``; OpenAI-shaped dicts) that meters each call.

    One upstream attempt is one reservation, so a fallback chain is charged for
    exactly the attempts that produced tokens. ``stream`` asks the upstream for a
    final usage chunk (``stream_options.include_usage``) and commits what it says;
    if the stream breaks first, the estimate of what was streamed so far is
    committed and marked ``estimated``.
    """

    def __init__(
        self,
        inner: Any,
        meter: Meter,
        *,
        model: str,
        deployment: str | None = None,
        default_max_output: int = 4096,
        bytes_per_token: float = 1.0,
        subject_of: Callable[[], Subject | None] = current_subject,
    ) -> None:
        self.inner = inner
        self.meter = meter
        self.model = model
        self.deployment = deployment
        self.default_max_output = default_max_output
        self.bytes_per_token = bytes_per_token
        self.subject_of = subject_of

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _estimate(self, body: Mapping[str, Any]) -> Usage:
        return estimate_chat(body, model=self.model, deployment=self.deployment,
                             default_max_output=self.default_max_output, bytes_per_token=self.bytes_per_token)

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        subject = _require_subject(self.subject_of)
        async with self.meter.reserve(subject, self._estimate(body), operation="model.chat") as r:
            response: dict[str, Any] = await self.inner.chat(body)
            r.commit(usage_of_openai(response.get("usage"), self.model, self.deployment),
                     attributes={"upstream_id": response.get("id"), "deployment": self.deployment})
            return response

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        subject = _require_subject(self.subject_of)
        body = dict(body)
        opts = dict(body.get("stream_options") or {})
        opts.setdefault("include_usage", True)
        body["stream_options"] = opts
        estimate = self._estimate(body)
        async with self.meter.reserve(subject, estimate, operation="model.stream") as r:
            streamed_chars = 0
            usage: Any = None
            upstream_id = None
            try:
                async for chunk in self.inner.stream(body):
                    upstream_id = upstream_id or chunk.get("id")
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    for choice in chunk.get("choices") or ():
                        delta = choice.get("delta") or {}
                        streamed_chars += len(delta.get("content") or "") + len(json.dumps(delta.get("tool_calls") or ""))
                    yield chunk
            finally:
                if usage is not None:
                    r.commit(usage_of_openai(usage, self.model, self.deployment),
                             attributes={"upstream_id": upstream_id, "deployment": self.deployment})
                elif streamed_chars:
                    # no usage report: charge the whole prompt bound and what we saw stream
                    prompt = int(estimate.micro()[Resources.INPUT_TOKENS] // 10**6)
                    r.commit(Usage.tokens_of(self.model, input=prompt, output=streamed_chars, deployment=self.deployment),
                             attributes={"upstream_id": upstream_id, "estimated": True})

    async def embed(self, model: str, texts: list[str], dimensions: int | None = None) -> Any:
        subject = _require_subject(self.subject_of)
        bound = sum(len(t.encode()) for t in texts) + 8 * len(texts)
        est = Usage({Resources.MODEL_REQUESTS: 1, Resources.EMBEDDING_TOKENS: bound}, model=self.model, deployment=self.deployment)
        async with self.meter.reserve(subject, est, operation="model.embed") as r:
            vectors, usage = await self.inner.embed(model, texts, dimensions)
            tokens = int(getattr(usage, "prompt_tokens", None) or (usage.get("prompt_tokens") if isinstance(usage, Mapping) else 0) or 0)
            r.commit(Usage({Resources.MODEL_REQUESTS: 1, Resources.EMBEDDING_TOKENS: tokens}, model=self.model,
                           deployment=self.deployment))
            return vectors, usage


__all__ = [
    "MeteredProvider",
    "charging",
    "current_subject",
    "estimate_chat",
    "metered",
    "prompt_tokens_bound",
    "usage_of_openai",
]
