"""The semantic cache: answer a prompt with the reply to a near-identical earlier one.

Opt-in: per request (``"cache": true`` in the body; the openai client sends it as
``extra_body={"cache": True}``, or the HTTP header ``x-myriad-cache: on``), per
model alias (``[groups.ALIAS] cache = true``), or everywhere (``[cache] enabled =
true``); a request's ``"cache": false`` always wins. Only single-turn requests are
cached (system/developer messages plus exactly one user message), because a reply
that depends on a conversation is not the reply to its last line.

Entries are partitioned by tenant (never shared across tenants), by the model asked
for, by the system prompt and by every other parameter (tools, temperature,
response_format, ...); within a partition the user message is compared by cosine
similarity of embeddings and must reach ``threshold``. Entries expire after ``ttl``
seconds; a tenant keeps at most ``max_entries`` (oldest leave first).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping

import orjson

from myriad.models._tokens import content_text
from myriad.models._vectors import VectorIndex
from myriad.models.config import CacheConfig

EmbedFn = Callable[[list[str], "str | None"], Awaitable[list[list[float]]]]
_NOT_PARAMS = {"messages", "stream", "stream_options", "cache", "user", "metadata"}


@dataclass
class _Entry:
    expires: float
    raw: dict[str, Any]
    text: str


@dataclass
class CacheHit:
    raw: dict[str, Any]
    similarity: float


@dataclass
class CacheProbe:
    """A miss remembers where and what to store, so the prompt is embedded once."""

    key: tuple[Any, ...]
    text: str
    vector: list[float]


class SemanticCache:
    def __init__(self, config: CacheConfig, embed: EmbedFn, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.embed = embed
        self.clock = clock
        self._parts: dict[tuple[Any, ...], VectorIndex[_Entry]] = {}
        self._per_tenant: dict[str | None, int] = {}
        self.hits = 0
        self.misses = 0

    def prompt_of(self, body: Mapping[str, Any], opted: bool | None) -> str | None:
        """The user text to cache on, or None when this request is not cacheable."""
        if opted is False or not (opted or self.config.enabled):
            return None
        if body.get("n") not in (None, 1):
            return None
        user = None
        for m in body["messages"]:
            role = m.get("role")
            if role == "user":
                if user is not None:
                    return None  # multi-turn
                user = content_text(m.get("content"))
            elif role not in ("system", "developer"):
                return None
        return user or None

    def _key(self, tenant: str | None, model: str, body: Mapping[str, Any]) -> tuple[Any, ...]:
        system = [content_text(m.get("content")) for m in body["messages"] if m.get("role") != "user"]
        params = {k: v for k, v in body.items() if k not in _NOT_PARAMS and k != "model"}
        return (tenant, model, orjson.dumps(system), orjson.dumps(params, option=orjson.OPT_SORT_KEYS))

    async def lookup(self, tenant: str | None, model: str, body: Mapping[str, Any], text: str
                     ) -> tuple[CacheHit | None, CacheProbe]:
        key = self._key(tenant, model, body)
        vec = (await self.embed([text], tenant))[0]
        probe = CacheProbe(key, text, vec)
        part = self._parts.get(key)
        if part is not None and len(part):
            now = self.clock()
            sims = part.similarities(vec)
            order = sims.argsort()[::-1]
            for i in order[:8]:
                if sims[i] < self.config.threshold:
                    break
                entry = part.payloads[int(i)]
                if entry.expires > now:
                    self.hits += 1
                    return CacheHit(copy.deepcopy(entry.raw), float(sims[i])), probe
        self.misses += 1
        return None, probe

    def store(self, probe: CacheProbe, raw: Mapping[str, Any]) -> None:
        choice = (raw.get("choices") or [{}])[0]
        if choice.get("finish_reason") not in ("stop", "tool_calls"):
            return  # a truncated or filtered reply is not worth repeating
        tenant = probe.key[0]
        part = self._parts.setdefault(probe.key, VectorIndex(self.config.max_entries))
        now = self.clock()
        expired = [i for i, e in enumerate(part.payloads) if e.expires <= now]
        if expired:
            part.remove(expired)
            self._per_tenant[tenant] = self._per_tenant.get(tenant, 0) - len(expired)
        if self._per_tenant.get(tenant, 0) >= self.config.max_entries:
            self._evict_oldest(tenant)
        part.add(probe.vector, _Entry(now + self.config.ttl, copy.deepcopy(dict(raw)), probe.text))
        self._per_tenant[tenant] = self._per_tenant.get(tenant, 0) + 1

    def _evict_oldest(self, tenant: str | None) -> None:
        oldest = None
        for key, part in self._parts.items():
            if key[0] == tenant and len(part):
                e = part.payloads[0]
                if oldest is None or e.expires < oldest[1]:
                    oldest = (key, e.expires)
        if oldest is not None:
            self._parts[oldest[0]].remove([0])
            self._per_tenant[tenant] -= 1

    def clear(self, tenant: str | None = None) -> None:
        """Drop one tenant's entries (all tenants' when ``tenant`` is None)."""
        if tenant is None:
            self._parts.clear()
            self._per_tenant.clear()
            return
        for key in [k for k in self._parts if k[0] == tenant]:
            del self._parts[key]
        self._per_tenant.pop(tenant, None)


__all__ = ["SemanticCache", "CacheHit", "CacheProbe"]
