"""The gateway: one object that routes chat, streaming chat and embeddings to
deployments, with retries, cooldowns, fallbacks and timeouts.

A call resolves its model name to a group (an alias, or a virtual model such as
``router-knn-0.2`` that picks one), builds a plan (the group's deployments in the
order its strategy gives, then its context fallback when the prompt does not fit,
then its fallback groups), and walks it:

- a 5xx, connection error, timeout or 429 moves on to the next deployment; a 429
  cools that deployment for its ``Retry-After``; ``cooldown_failures`` failures in a
  row open its circuit for ``cooldown_seconds`` (doubling while it keeps failing);
- a refused request (4xx) goes back to the caller, except "context length
  exceeded", which moves to deployments with a bigger window;
- when every candidate failed, the plan is walked again after a backoff, up to
  ``retries`` times, waiting for a rate limit's Retry-After when that is what
  stands between us and an answer (and it fits the deadline);
- every attempt has its own timeout, the whole call a total one;
- a stream may fall back only until its first token has been handed to the caller.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping as MappingABC
from typing import Any, AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Mapping, Protocol, TypeVar

from myriad.errors import (
    ConfigError,
    ContextWindowExceeded,
    InvalidRequest,
    ModelError,
    NoDeploymentAvailable,
    UnknownModel,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
)
from myriad.models._checks import check_chat_request
from myriad.models._tokens import estimate_message_tokens, estimate_text_tokens
from myriad.models.responses._passthrough import deliver_events, event_commits
from myriad.models.cache import SemanticCache
from myriad.models.knn import KnnRouter
from myriad.models.semantic import SemanticRouter
from myriad.models._streams import CACHE, StreamAccumulator, replay_chunks
from myriad.models.config import Deployment, GatewayConfig, GroupConfig
from myriad.models.pipeline import IDENTITY, Call, Pipeline, UsageHookMiddleware, deployment_pricer
from myriad.models.providers import Provider, create_provider
from myriad.models.providers.interface import speaks_responses_api
from myriad.models.routing import STRATEGIES, DeploymentState, RouteContext
from myriad.models.types import ChatChunk, ChatResult, EmbeddingResult, Usage, UsageRecord

T = TypeVar("T")
SecretResolver = Callable[[str], "str | None"]
UsageHook = Callable[[UsageRecord], "Awaitable[None] | None"]


class VirtualModel(Protocol):
    """A model name that is not deployed but picks one that is (quality routers)."""

    def matches(self, name: str) -> bool: ...

    async def pick(self, name: str, body: Mapping[str, Any], tenant: str | None) -> str: ...

    def names(self) -> list[str]:
        """Names to list in ``/v1/models``."""
        ...


class Gateway:
    """Routes OpenAI-shaped requests to deployments. Build one per process."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        secrets: SecretResolver | Mapping[str, str] | None = None,
        on_usage: UsageHook | None = None,
        clock: Callable[[], float] = time.monotonic,
        seed: int | None = None,
    ) -> None:
        self.config = config
        self.pipeline = Pipeline(deployment_pricer(self._price_of))
        """Every call enters here (see ``myriad.models.pipeline``): metering and telemetry register on it."""
        self.pipeline.use(IdentityMiddleware())
        self._usage_hook: UsageHookMiddleware | None = None
        self.on_usage = on_usage
        self._clock = clock
        self._rng = random.Random(seed)
        self._secrets = _resolver(secrets)
        self._states: dict[str, DeploymentState] = {}
        self._groups: dict[str, list[DeploymentState]] = {}
        self._keys: dict[str, str | None] = {}
        self._providers: dict[str, Provider] = {}
        self.virtual: list[Any] = []
        """Virtual models (quality routers), consulted for names that are not deployed."""
        for d in config.deployments:
            st = DeploymentState(d)
            self._states[d.name] = st
            self._groups.setdefault(d.model, []).append(st)
            self._keys[d.name] = self._resolve_key(d)
        self.semantic: SemanticRouter | None = None
        if config.routes:
            self.semantic = SemanticRouter(self, config.routes, name=config.route_model,
                                           threshold=config.route_threshold, default=config.route_default,
                                           embedding_model=config.route_embedding_model)
            self.virtual.append(self.semantic)
        self.knn: KnnRouter | None = None
        if config.knn is not None:
            self.knn = KnnRouter(self, config.knn)
            self.virtual.append(self.knn)
        self.cache: SemanticCache | None = None
        if any(d.kind == "embedding" for d in config.deployments):
            cache_model = config.cache.embedding_model

            async def embed_for_cache(texts: list[str], tenant: str | None) -> list[list[float]]:
                return (await self.embed(texts, model=cache_model, tenant=tenant)).vectors

            self.cache = SemanticCache(config.cache, embed_for_cache, clock)

    @classmethod
    def simulated(cls, *, on_usage: UsageHook | None = None, **profile: Any) -> "Gateway":
        """A gateway over in-process simulated models (see ``simulated_config``)."""
        from myriad.models.config import simulated_config

        return cls(simulated_config(**profile), on_usage=on_usage)

    @classmethod
    def from_settings(cls, settings: Any, env: Mapping[str, str] | None = None,
                      on_usage: UsageHook | None = None) -> "Gateway":
        """Build from ``Settings.models``: the deployment file it names, or the simulated
        models when it names none. ``env`` resolves ``env:NAME`` key references."""
        path = getattr(settings, "config", "")
        config = GatewayConfig.load(path) if path else None
        if config is None:
            from myriad.models.config import simulated_config

            config = simulated_config()
        return cls(config, secrets=env, on_usage=on_usage)

    def for_agent(self, ref: Any, agent: str | None = None, default_model: str | None = None) -> Any:
        """The facade an agent holds as ``self.models``: ``ref`` is an agent ref (with
        ``.tenant`` and ``.path``) or a tenant name (then ``agent`` names the agent)."""
        from myriad.models.client import ModelsClient

        if hasattr(ref, "tenant"):
            return ModelsClient(self, ref.tenant, agent or getattr(ref, "path", None), default_model)
        return ModelsClient(self, ref, agent, default_model)

    @property
    def on_usage(self) -> UsageHook | None:
        """A hook called with a ``UsageRecord`` after every answered call (a pipeline middleware)."""
        return self._usage_hook.hook if self._usage_hook is not None else None

    @on_usage.setter
    def on_usage(self, hook: UsageHook | None) -> None:
        if self._usage_hook is not None:
            self.pipeline.remove(self._usage_hook)
            self._usage_hook = None
        if hook is not None:
            self._usage_hook = self.pipeline.use(UsageHookMiddleware(hook))

    def _price_of(self, deployment: str) -> Any:
        st = self._states.get(deployment)
        return st.deployment.price if st is not None else None

    def deployment(self, name: str) -> Deployment | None:
        """Deployment ``name``'s configuration (None if there is none: e.g. ``"cache"``)."""
        st = self._states.get(name)
        return st.deployment if st is not None else None

    # ------------------------------------------------------------------ construction

    def _resolve_key(self, d: Deployment) -> str | None:
        if d.api_key is None:
            return None
        value = self._secrets(d.api_key)
        if value is None:
            raise ConfigError(f"deployment {d.name!r}: secret {d.api_key!r} is not set")
        return value

    def provider(self, name: str) -> Provider:
        """The (lazily built) provider of deployment ``name``."""
        p = self._providers.get(name)
        if p is None:
            p = create_provider(self._states[name].deployment, self._keys[name])
            self._providers[name] = p
        return p

    def state(self, name: str) -> DeploymentState:
        """The router's live view of deployment ``name`` (for tests, admin, metrics)."""
        return self._states[name]

    async def aclose(self) -> None:
        for p in self._providers.values():
            await p.aclose()
        self._providers.clear()

    # ------------------------------------------------------------------ listing

    def model_names(self, kind: str | None = None) -> list[str]:
        """Aliases clients may ask for (plus virtual models when ``kind`` is chat/None)."""
        names = [a for a, sts in self._groups.items() if kind is None or sts[0].deployment.kind == kind]
        if kind in (None, "chat"):
            for v in self.virtual:
                names += v.names()
        return names

    def has_model(self, name: str) -> bool:
        return name in self._groups

    def default_model(self, kind: str = "chat") -> str:
        r = self.config.router
        named = r.default_model if kind == "chat" else r.default_embedding_model
        if named:
            return named
        for alias, sts in self._groups.items():
            if sts[0].deployment.kind == kind:
                return alias
        raise UnknownModel(f"no {kind} model is deployed")

    # ------------------------------------------------------------------ chat

    async def chat(self, body: Mapping[str, Any], *, tenant: str | None = None, agent: str | None = None,
                   kind: str = "chat", passthrough: Mapping[str, Any] | None = None) -> ChatResult:
        """A chat completion for an OpenAI-shaped ``body`` (``stream`` is ignored).

        ``kind="responses"``: a Responses API call translated to chat (by
        ``myriad.models.responses``), metered and traced as such; ``passthrough`` is
        then the call as a Responses body, sent as it is to a deployment whose
        provider ``speaks_responses`` (``.raw`` is then the upstream's response object)."""
        req, asked, cache_text = self._prepare(body)
        call = Call(kind, asked, req, tenant=tenant, agent=agent)
        if passthrough is not None:
            cache_text = None
        return await self.pipeline.unary(call, lambda c: self._chat(c, cache_text, passthrough))

    async def _chat(self, call: Call, cache_text: str | None,
                    passthrough: Mapping[str, Any] | None = None) -> ChatResult:
        req, asked, tenant = call.body, call.model, call.tenant
        assert isinstance(req, dict)
        probe = None
        if cache_text is not None and self.cache is not None:
            hit, probe = await self.cache.lookup(tenant, asked, req, cache_text)
            if hit is not None:
                call.cached, call.deployment, call.usage = True, CACHE, Usage()
                return ChatResult(raw=hit.raw, model=asked, deployment=CACHE, attempts=0, cached=True)
        alias = await self._route(asked, req, tenant)
        prompt_tokens = estimate_message_tokens(req["messages"])

        async def send(state: DeploymentState, provider: Provider) -> dict[str, Any]:
            if passthrough is not None and speaks_responses_api(provider):
                return await provider.responses(dict(passthrough, model=state.deployment.upstream_model))
            return await provider.chat(dict(req, model=state.deployment.upstream_model))

        raw, state, attempts = await self._call(alias, prompt_tokens, send, stream=False,
                                                caps=required_capabilities(req))
        raw["model"] = asked
        result = ChatResult(raw=raw, model=asked, deployment=state.deployment.name, attempts=attempts)
        call.deployment, call.attempts = state.deployment.name, attempts
        call.usage = result.usage
        call.response_id = raw.get("id")
        call.finish_reasons = tuple(c["finish_reason"] for c in raw.get("choices") or () if c.get("finish_reason"))
        if probe is not None and self.cache is not None:
            self.cache.store(probe, raw)
        return result

    async def chat_stream(self, body: Mapping[str, Any], *, tenant: str | None = None,
                          agent: str | None = None) -> AsyncIterator[ChatChunk]:
        """Stream a chat completion as OpenAI chunks. Falls back between deployments
        only until the first content chunk has been yielded; after that an upstream
        failure raises ``UpstreamError`` to the caller."""
        batches = self.chat_stream_batches(body, tenant=tenant, agent=agent)
        try:
            async for deployment, batch in batches:
                for raw in batch:
                    yield ChatChunk(raw, deployment)
        finally:
            await batches.aclose()  # a consumer that stops early ends the call (and its span) now

    async def chat_stream_batches(self, body: Mapping[str, Any], *, tenant: str | None = None,
                                  agent: str | None = None, kind: str = "chat",
                                  passthrough: Mapping[str, Any] | None = None
                                  ) -> AsyncGenerator[tuple[str, list[dict[str, Any]]], None]:
        """Like :meth:`chat_stream`, as ``(deployment, [raw chunk, ...])``: the chunks
        that arrived from upstream together, so a relay can forward them in one write.
        ``kind`` and ``passthrough`` as for :meth:`chat`: a deployment that takes the
        Responses body as it is streams the upstream's Responses events instead."""
        req, asked, cache_text = self._prepare(body)
        want_usage = bool((req.get("stream_options") or {}).get("include_usage"))
        call = Call(kind, asked, req, tenant=tenant, agent=agent, stream=True, want_usage=want_usage)
        if passthrough is not None:
            cache_text = None
        relay = self.pipeline.stream(call, lambda c: self._stream_cached(c, cache_text, passthrough))
        try:
            async for item in relay:
                yield item
        finally:
            await relay.aclose()

    async def _stream_cached(self, call: Call, cache_text: str | None, passthrough: Mapping[str, Any] | None = None
                             ) -> AsyncGenerator[tuple[str, list[dict[str, Any]]], None]:
        req, asked, tenant = call.body, call.model, call.tenant
        assert isinstance(req, dict)
        if cache_text is None or self.cache is None:
            inner = self._stream(call, passthrough)
            try:
                async for item in inner:
                    yield item
            finally:
                await inner.aclose()
            return
        hit, probe = await self.cache.lookup(tenant, asked, req, cache_text)
        if hit is not None:
            call.cached, call.deployment, call.usage = True, CACHE, Usage()
            call.first_chunk_s = time.perf_counter() - call.started
            yield CACHE, list(replay_chunks(hit.raw, call.want_usage))
            return
        acc = StreamAccumulator()
        inner = self._stream(call)
        try:
            async for deployment, batch in inner:
                for raw in batch:
                    acc.add(raw)
                yield deployment, batch
        finally:
            await inner.aclose()
        completed = acc.completion(asked)
        if completed is not None:
            self.cache.store(probe, completed)

    async def _stream(self, call: Call, passthrough: Mapping[str, Any] | None = None
                      ) -> AsyncGenerator[tuple[str, list[dict[str, Any]]], None]:
        req, asked, tenant = call.body, call.model, call.tenant
        assert isinstance(req, dict)
        alias = await self._route(asked, req, tenant)
        req["stream"] = True
        req["stream_options"] = {**(req.get("stream_options") or {}), "include_usage": True}
        prompt_tokens = estimate_message_tokens(req["messages"])
        cfg = self.config.router
        started = self._clock()
        deadline = started + cfg.total_timeout
        need = _Need(prompt_tokens, required_capabilities(req))
        last: ModelError | None = None
        attempts = 0
        for pass_no in range(cfg.retries + 1):
            for state in self._candidates(alias, need, stream=True):
                d = state.deployment
                now = self._clock()
                if now >= deadline:
                    break
                attempts += 1
                call.attempts = attempts
                attempt_timeout = min(d.timeout or cfg.attempt_timeout, deadline - now)
                state.started(now, prompt_tokens)
                provider = self.provider(d.name)
                committing: Callable[[Mapping[str, Any]], bool]
                deliver: Callable[[list[dict[str, Any]], str, Call], list[dict[str, Any]]]
                if passthrough is not None and speaks_responses_api(provider):
                    agen = provider.responses_stream(dict(passthrough, model=d.upstream_model, stream=True))
                    committing, deliver = event_commits, deliver_events
                else:
                    agen = provider.stream(dict(req, model=d.upstream_model))
                    committing, deliver = _committing, _deliver
                head: list[dict[str, Any]] = []
                try:
                    async with asyncio.timeout(attempt_timeout):
                        async for batch in agen:
                            head += batch
                            if any(map(committing, batch)):
                                break
                except (ModelError, TimeoutError, asyncio.TimeoutError) as e:
                    err = _as_model_error(e, d, attempt_timeout)
                    await _close(agen)
                    state.failed(self._clock(), err, cfg)
                    last = err
                    if isinstance(err, ContextWindowExceeded):
                        need.overflowed.add(d.model)
                    elif isinstance(err, UpstreamRejected):
                        raise err
                    continue
                except BaseException:
                    await _close(agen)
                    state.released()
                    raise
                # committed: from here on no fallback
                ttft = self._clock() - now
                call.deployment = d.name
                call.response_id = head[0].get("id") if head else None
                try:
                    out = deliver(head, asked, call)
                    call.first_chunk_s = time.perf_counter() - call.started
                    if out:
                        yield d.name, out
                    idle = d.timeout or cfg.attempt_timeout
                    while True:
                        # the timer covers only the wait for upstream, never our yield:
                        # a slow consumer must not be cancelled by our idle timeout
                        async with asyncio.timeout(idle):
                            try:
                                batch = await agen.__anext__()
                            except StopAsyncIteration:
                                break
                        out = deliver(batch, asked, call)
                        if out:
                            yield d.name, out
                except (ModelError, TimeoutError, asyncio.TimeoutError) as e:
                    err = _as_model_error(e, d, d.timeout or cfg.attempt_timeout)
                    state.failed(self._clock(), err, cfg)
                    raise UpstreamError(f"the stream from {d.name} broke after it started: {err.message}",
                                        details={"deployment": d.name}) from None
                except BaseException:
                    state.released()
                    raise
                finally:
                    await _close(agen)
                state.succeeded(self._clock() - now, ttft=ttft,
                                extra_tokens=call.usage.completion_tokens if call.usage else 0)
                return
            if not await self._wait_before_retry(alias, need, pass_no, deadline, last):
                break
        raise self._exhausted(alias, last, attempts, need)

    async def record_outcome(self, prompt: str | list[str], *, weak_ok: bool | list[bool],
                             tenant: str | None = None) -> int:
        """Teach the strong/weak router: was the weak model good enough for ``prompt``?
        Returns how many outcomes the tenant has recorded."""
        if self.knn is None:
            raise InvalidRequest("no strong/weak router is configured (add a [knn] table)")
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        oks = [weak_ok] * len(prompts) if isinstance(weak_ok, bool) else list(weak_ok)
        return await self.knn.record(prompts, oks, tenant)

    # ------------------------------------------------------------------ embeddings

    async def embed(self, texts: list[str], *, model: str | None = None, tenant: str | None = None,
                    agent: str | None = None, dimensions: int | None = None) -> EmbeddingResult:
        """Embed ``texts`` with an embedding deployment (default: the first one)."""
        if isinstance(texts, str) or not isinstance(texts, list) or not texts or not all(
                isinstance(t, str) for t in texts):
            raise InvalidRequest("input must be a string or a non-empty list of strings")
        alias = model or self.default_model("embedding")
        body: dict[str, Any] = {"input": texts}
        if dimensions:
            body["dimensions"] = dimensions
        call = Call("embeddings", alias, body, tenant=tenant, agent=agent)
        return await self.pipeline.unary(call, self._embed)

    async def _embed(self, call: Call) -> EmbeddingResult:
        alias = call.model
        assert call.body is not None
        texts: list[str] = call.body["input"]
        dimensions: int | None = call.body.get("dimensions")
        sts = self._groups.get(alias)
        if sts is None:
            raise UnknownModel(f"model {alias!r} is not deployed; embedding models: "
                               f"{', '.join(self.model_names('embedding')) or 'none'}")
        if sts[0].deployment.kind != "embedding":
            raise InvalidRequest(f"model {alias!r} is a chat model, not an embedding model")
        tokens = sum(estimate_text_tokens(t) for t in texts)

        async def send(state: DeploymentState, provider: Provider) -> tuple[list[list[float]], Usage]:
            return await provider.embed(state.deployment.upstream_model, texts, dimensions)

        (vectors, usage), state, attempts = await self._call(alias, tokens, send, stream=False)
        if not usage.prompt_tokens:
            usage = Usage(prompt_tokens=tokens, total_tokens=tokens)
        call.deployment, call.attempts, call.usage, call.response_model = state.deployment.name, attempts, usage, alias
        return EmbeddingResult(vectors, alias, state.deployment.name, usage)

    # ------------------------------------------------------------------ the walk

    def _prepare(self, body: Mapping[str, Any]) -> tuple[dict[str, Any], str, str | None]:
        """Validate; returns the request to send, the model asked for, and the prompt
        to consult the semantic cache with (None: no caching)."""
        if not isinstance(body, MappingABC):
            raise InvalidRequest("the request body must be a JSON object")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise InvalidRequest("'messages' must be a non-empty array")
        for i, m in enumerate(messages):
            if not isinstance(m, MappingABC) or not isinstance(m.get("role"), str):
                raise InvalidRequest(f"messages[{i}] must be an object with a 'role'")
        check_chat_request(body)
        asked = body.get("model") or self.default_model()
        if not isinstance(asked, str):
            raise InvalidRequest("'model' must be a string")
        req = dict(body)
        req.pop("stream", None)
        opted = req.pop("cache", None)
        if opted is not None and not isinstance(opted, bool):
            raise InvalidRequest("'cache' must be true or false")
        if self.cache is None:
            if opted:
                raise InvalidRequest("the semantic cache needs an embedding model, and none is deployed")
            return req, asked, None
        if opted is None and asked in self._groups:
            opted = self._group(asked).cache
        return req, asked, self.cache.prompt_of(req, opted)

    async def _route(self, asked: str, req: dict[str, Any], tenant: str | None) -> str:
        """The deployed alias serving ``asked`` (virtual models choose one)."""
        alias = asked
        if alias not in self._groups:
            v = next((v for v in self.virtual if v.matches(asked)), None)
            if v is None:
                raise UnknownModel(f"model {asked!r} is not deployed; available: {', '.join(self.model_names())}")
            alias = await v.pick(asked, req, tenant)
        if self._groups[alias][0].deployment.kind != "chat":
            raise InvalidRequest(f"model {asked!r} is an embedding model, not a chat model")
        return alias

    async def _call(self, alias: str, prompt_tokens: int,
                    fn: Callable[[DeploymentState, Provider], Awaitable[T]], *, stream: bool,
                    caps: frozenset[str] = frozenset()) -> tuple[T, DeploymentState, int]:
        cfg = self.config.router
        deadline = self._clock() + cfg.total_timeout
        floor = _Need(prompt_tokens, caps)
        last: ModelError | None = None
        attempts = 0
        for pass_no in range(cfg.retries + 1):
            for state in self._candidates(alias, floor, stream=stream):
                d = state.deployment
                now = self._clock()
                if now >= deadline:
                    break
                attempts += 1
                timeout = min(d.timeout or cfg.attempt_timeout, deadline - now)
                state.started(now, prompt_tokens)
                try:
                    async with asyncio.timeout(timeout):
                        result = await fn(state, self.provider(d.name))
                except (ModelError, TimeoutError, asyncio.TimeoutError) as e:
                    err = _as_model_error(e, d, timeout)
                    state.failed(self._clock(), err, cfg)
                    last = err
                    if isinstance(err, ContextWindowExceeded):
                        floor.overflowed.add(d.model)
                    elif isinstance(err, UpstreamRejected):
                        raise err
                    continue
                except BaseException:
                    state.released()
                    raise
                extra = 0
                if isinstance(result, dict):
                    extra = int((result.get("usage") or {}).get("completion_tokens") or 0)
                state.succeeded(self._clock() - now, extra_tokens=extra)
                return result, state, attempts
            if not await self._wait_before_retry(alias, floor, pass_no, deadline, last):
                break
        raise self._exhausted(alias, last, attempts, floor)

    def _chain(self, alias: str, need: "_Need") -> list[str]:
        """Groups to try: the alias (or its context fallbacks while nothing in it fits
        the prompt), then its fallbacks, each treated the same way."""
        out: list[str] = []
        for start in (alias, *self._group(alias).fallbacks):
            g, seen = start, set()
            while g not in seen:
                seen.add(g)
                if g not in need.overflowed and any(
                        s.deployment.context_window >= need.tokens for s in self._groups[g]):
                    break
                nxt = self._group(g).context_fallback
                if nxt is None:
                    break
                g = nxt
            if g not in out:
                out.append(g)
        return out

    def _candidates(self, alias: str, floor: "_Need", *, stream: bool) -> Iterator[DeploymentState]:
        """Deployments to try this pass, in order; re-planned after a context overflow."""
        tried: set[str] = set()
        while True:
            now = self._clock()
            nxt = None
            for g in self._chain(alias, floor):
                if g in floor.overflowed:
                    continue
                ready = [s for s in self._groups[g] if s.deployment.name not in tried and s.available(now)
                         and floor.admits(s.deployment) and s.fits_limits(now, floor.tokens)]
                if ready:
                    strategy = STRATEGIES[self._group(g).strategy or self.config.router.default_strategy]
                    nxt = strategy.order(ready, RouteContext(floor.tokens, stream, now, self._rng))[0]
                    break
            if nxt is None:
                return
            tried.add(nxt.deployment.name)
            yield nxt

    async def _wait_before_retry(self, alias: str, floor: "_Need", pass_no: int, deadline: float,
                                 last: ModelError | None) -> bool:
        """Sleep before the next pass; False when another pass cannot help."""
        cfg = self.config.router
        if pass_no >= cfg.retries:
            return False
        now = self._clock()
        wait = min(cfg.max_backoff, cfg.backoff * (2 ** pass_no))
        states = [s for g in self._chain(alias, floor) if g not in floor.overflowed for s in self._groups[g]
                  if floor.admits(s.deployment)]
        if not states:
            return False
        if not any(s.available(now + wait) for s in states):
            limited = [s.cooldown_until for s in states if s.cooldown_reason == "rate_limited"]
            if not limited:
                return False  # every circuit is open: fail fast
            until = min(limited) - now
            if until > cfg.max_retry_after:
                return False
            wait = max(wait, until)
        if now + wait >= deadline:
            return False
        await asyncio.sleep(wait)
        return True

    def _exhausted(self, alias: str, last: ModelError | None, attempts: int, need: "_Need | None" = None
                   ) -> ModelError | InvalidRequest:
        if last is None:
            now = self._clock()
            states = [s for g in self._chain(alias, _Need(0)) for s in self._groups[g]]
            if need is not None and need.tokens and not any(
                    s.deployment.context_window >= need.tokens for g in self._chain(alias, need)
                    for s in self._groups[g]):
                window = max(s.deployment.context_window for g in self._chain(alias, need) for s in self._groups[g])
                return ContextWindowExceeded(
                    f"This model's maximum context length is {window} tokens, but the messages take about "
                    f"{need.tokens} tokens (no deployment of {alias!r} or its fallbacks has a bigger window). "
                    "Shorten the messages.", details={"model": alias, "param": "input" if self._groups[alias][
                        0].deployment.kind == "embedding" else "messages"})
            if need is not None and need.caps and not any(
                    not s.deployment.capabilities or need.caps <= s.deployment.capabilities for s in states):
                return InvalidRequest(f"no deployment of {alias!r} (or its fallbacks) supports "
                                      f"{', '.join(sorted(need.caps))}", details={"model": alias})
            soonest = min((s.cooldown_until for s in states), default=now) - now
            return NoDeploymentAvailable(
                f"no deployment of {alias!r} is available (cooling down for another {max(0.0, soonest):.1f}s)",
                details={"model": alias, "retry_after": round(max(0.0, soonest), 3)})
        last.details.setdefault("attempts", attempts)
        return last

    def _group(self, alias: str) -> GroupConfig:
        return self.config.groups.get(alias) or _NO_GROUP


_NO_GROUP = GroupConfig()


class _Need:
    """What a request needs of a deployment: room for its prompt, the capabilities
    it uses, and not a group whose upstream already said the prompt is too long."""

    __slots__ = ("tokens", "caps", "overflowed")

    def __init__(self, tokens: int, caps: frozenset[str] = frozenset()) -> None:
        self.tokens = tokens
        self.caps = caps
        self.overflowed: set[str] = set()

    def admits(self, d: Deployment) -> bool:
        # a deployment that declares no capabilities is taken at its word for nothing
        # and tried anyway; one that declares some must include every one needed
        return d.context_window >= self.tokens and (not self.caps or not d.capabilities
                                                    or self.caps <= d.capabilities)


def required_capabilities(req: Mapping[str, Any]) -> frozenset[str]:
    """``tools`` when tools are offered, ``vision`` for image parts, ``json`` for a
    JSON response_format."""
    caps = set()
    if req.get("tools"):
        caps.add("tools")
    fmt = req.get("response_format")
    if isinstance(fmt, MappingABC) and fmt.get("type") in ("json_object", "json_schema"):
        caps.add("json")
    for m in req["messages"]:
        content = m.get("content")
        if isinstance(content, list) and any(isinstance(p, MappingABC) and p.get("type") == "image_url"
                                             for p in content):
            caps.add("vision")
            break
    return frozenset(caps)


def _committing(chunk: Mapping[str, Any]) -> bool:
    """Whether handing this chunk to the caller commits us to this deployment."""
    for c in chunk.get("choices") or ():
        delta = c.get("delta") or {}
        if delta.get("content") or delta.get("tool_calls") or c.get("finish_reason"):
            return True
    return bool(chunk.get("usage"))


def _deliver(batch: list[dict[str, Any]], asked: str, call: Call) -> list[dict[str, Any]]:
    """The chunks of ``batch`` the caller should see, relabelled with the model asked
    for. Counts into ``call`` as it goes (the pipeline's only per-chunk work): the
    usage chunk (kept even when the caller did not ask for it), streamed characters,
    finish reasons, and the text when a middleware asked for it."""
    out = []
    want_usage = call.want_usage
    text = call.output_text
    for chunk in batch:
        u = chunk.get("usage")
        if u:
            call.usage = Usage.from_openai(u)
        choices = chunk.get("choices")
        if choices:
            for c in choices:
                delta = c.get("delta")
                if delta:
                    t = delta.get("content")
                    if t:
                        call.stream_chars += len(t)
                        if text is not None:
                            text.append(t)
                    tcs = delta.get("tool_calls")
                    if tcs:
                        call.stream_chars += sum(len(str((tc.get("function") or {}).get("arguments") or ""))
                                                 for tc in tcs)
                if c.get("finish_reason"):
                    call.finish_reasons += (c["finish_reason"],)
            chunk["model"] = asked
            out.append(chunk)
        elif want_usage and u:
            chunk["model"] = asked
            out.append(chunk)
    return out


def _as_model_error(e: BaseException, d: Deployment, timeout: float) -> ModelError:
    if isinstance(e, ModelError):
        return e
    return UpstreamTimeout(f"{d.name}: no answer within {timeout:.3g}s", details={"deployment": d.name})


async def _close(agen: Any) -> None:
    try:
        await agen.aclose()
    except Exception:  # closing a broken stream must not hide why it broke
        pass


def _resolver(secrets: SecretResolver | Mapping[str, str] | None) -> SecretResolver:
    """``env:NAME`` looks ``NAME`` up in a mapping; a callable handles any scheme."""
    if callable(secrets):
        return secrets
    table = dict(secrets or {})

    def resolve(ref: str) -> str | None:
        scheme, _, name = ref.partition(":")
        return table.get(name) if scheme == "env" else None

    return resolve


class IdentityMiddleware:
    """First in every pipeline: who the call is for. Fills ``call.user`` from the
    ``charging`` subject of the same tenant (the agent host sets it around a turn),
    else from W3C baggage (``myriad.user`` / ``enduser.id``); and ``call.agent``
    from the subject when the caller named none."""

    name = "identity"
    order = IDENTITY

    def __init__(self) -> None:
        from myriad.metering import current_subject
        from myriad.telemetry import current_user

        self._subject = current_subject
        self._baggage_user = current_user

    async def enter(self, call: Call) -> None:
        s = self._subject()
        if s is not None and (call.tenant is None or s.tenant == call.tenant):
            call.user = call.user or s.user
            if call.tenant is not None:
                call.agent = call.agent or s.agent
        if call.user is None:
            call.user = self._baggage_user()

    async def exit(self, call: Call) -> None:
        return None


__all__ = ["Gateway", "IdentityMiddleware", "VirtualModel", "SecretResolver", "UsageHook"]
