"""The simulated model, in process: no HTTP, the same answers as the simulated upstream.

``options`` of the deployment set the profile (``ttft``, ``tps``, ``latency``,
``tokens``, ``context_window``, ``embedding_dims``); model-name options
(``sim-small@ttft=0.2``) work too. Every reply says ``simulated`` in its text and
``system_fingerprint``.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any, AsyncIterator

from myriad.errors import ConfigError, ContextWindowExceeded, InvalidRequest
from myriad.models.config import Deployment
from myriad.models.simulated._engine import FINGERPRINT, Profile, embed_text, make_reply, parse_model_name
from myriad.models.types import Usage

_ids = itertools.count(1)


class SimulatedProvider:
    def __init__(self, deployment: Deployment, api_key: str | None = None) -> None:
        try:
            self.profile = Profile().with_options({k: str(v) for k, v in deployment.options.items()})
        except ValueError as e:
            raise ConfigError(f"deployment {deployment.name!r}: {e}") from None
        self.name = deployment.name

    def _resolve(self, model: str) -> tuple[str, Profile]:
        try:
            base, opts = parse_model_name(model)
            return base, self.profile.with_options(dict(opts)) if opts else self.profile
        except ValueError as e:
            raise InvalidRequest(str(e)) from None

    def _reply(self, body: dict[str, Any]) -> tuple[str, Profile, Any]:
        base, profile = self._resolve(body["model"])
        reply = make_reply(base, body, profile)
        if reply.prompt_tokens > profile.context_window:
            raise ContextWindowExceeded(
                f"{self.name}: prompt of ~{reply.prompt_tokens} tokens exceeds the context window "
                f"of {profile.context_window} (simulated)")
        return base, profile, reply

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        _base, profile, reply = self._reply(body)
        delay = profile.total_latency(reply.completion_tokens)
        if delay > 0:
            await asyncio.sleep(delay)
        message: dict[str, Any] = {"role": "assistant", "content": None if reply.tool_call else reply.text}
        if reply.tool_call:
            message["tool_calls"] = [reply.tool_call]
        return {
            "id": f"chatcmpl-simp-{next(_ids)}", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"], "system_fingerprint": FINGERPRINT,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": reply.finish_reason}],
            "usage": _usage(reply),
        }

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[list[dict[str, Any]]]:
        _base, profile, reply = self._reply(body)
        cid, created, model = f"chatcmpl-simp-{next(_ids)}", int(time.time()), body["model"]

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                    "system_fingerprint": FINGERPRINT,
                    "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

        if profile.ttft > 0:
            await asyncio.sleep(profile.ttft)
        if reply.tool_call is not None:
            yield [chunk({"role": "assistant", "content": None, "tool_calls": [dict(reply.tool_call, index=0)]})]
            batch: list[dict[str, Any]] = []
        else:
            toks = reply.tokens or ("",)
            batch = [chunk({"role": "assistant", "content": toks[0]})]
            gap = 1 / profile.tps if profile.tps > 0 else 0.0
            for t in toks[1:]:
                if gap:
                    yield batch
                    batch = []
                    await asyncio.sleep(gap)
                batch.append(chunk({"content": t}))
        batch.append(chunk({}, reply.finish_reason))
        if (body.get("stream_options") or {}).get("include_usage"):
            batch.append({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                          "system_fingerprint": FINGERPRINT, "choices": [], "usage": _usage(reply)})
        yield batch

    async def embed(self, model: str, texts: list[str], dimensions: int | None = None
                    ) -> tuple[list[list[float]], Usage]:
        _base, profile = self._resolve(model)
        if profile.latency:
            await asyncio.sleep(profile.latency)
        dims = dimensions or profile.embedding_dims
        n = sum(max(1, len(t) // 4) for t in texts)
        return [list(embed_text(t, dims)) for t in texts], Usage(prompt_tokens=n, total_tokens=n)

    async def aclose(self) -> None:
        return None


def _usage(reply: Any) -> dict[str, int]:
    c = reply.completion_tokens
    return {"prompt_tokens": reply.prompt_tokens, "completion_tokens": c, "total_tokens": reply.prompt_tokens + c}


__all__ = ["SimulatedProvider"]
