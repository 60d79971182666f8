"""OpenAI-compatible HTTP: OpenAI itself, vLLM, Ollama, llama.cpp server, most hosted APIs."""

from __future__ import annotations

import base64
import struct
from typing import Any, AsyncIterator

import orjson

from myriad.errors import UpstreamError
from myriad.models.config import Deployment
from myriad.models.providers._http import HTTPClient
from myriad.models.types import Usage

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class OpenAIProvider:
    """Speaks ``/chat/completions`` and ``/embeddings`` under ``base_url``, and
    ``/responses`` for deployments that have it (OpenAI's own API by default; any
    other with ``options = { responses_api = true }``)."""

    def __init__(self, deployment: Deployment, api_key: str | None) -> None:
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = HTTPClient(deployment.base_url or DEFAULT_BASE_URL, headers, deployment.name)
        self.name = deployment.name
        self.speaks_responses = speaks_responses(deployment)
        """Responses API calls are passed through as they are (the gateway asks this)."""

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self.http.post_json("/chat/completions", body)

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[list[dict[str, Any]]]:
        async for events in self.http.post_sse("/chat/completions", body):
            batch: list[dict[str, Any]] = []
            for _event, data in events:
                if data == b"[DONE]":
                    if batch:
                        yield batch
                    return
                try:
                    chunk = orjson.loads(data)
                except orjson.JSONDecodeError:
                    raise UpstreamError(f"{self.name}: upstream sent a malformed stream chunk") from None
                if "error" in chunk:
                    err = chunk["error"]
                    msg = err.get("message") if isinstance(err, dict) else err
                    raise UpstreamError(f"{self.name}: upstream failed mid-stream: {msg}")
                batch.append(chunk)
            if batch:
                yield batch

    # -- the Responses API, for deployments that speak it (see ``speaks_responses``) --------

    async def responses(self, body: dict[str, Any]) -> dict[str, Any]:
        """A non-streamed ``POST /responses``: the upstream's response object."""
        out = await self.http.post_json("/responses", body)
        if out.get("status") == "failed":
            err = out.get("error") or {}
            raise UpstreamError(f"{self.name}: upstream response failed: {err.get('message') or err}")
        return out

    async def responses_stream(self, body: dict[str, Any]) -> AsyncIterator[list[dict[str, Any]]]:
        """A streamed ``POST /responses``: its typed events, in lists of those that
        arrived together. The upstream's ``error`` / ``response.failed`` events raise
        ``UpstreamError`` (so the gateway may still fall back before any output)."""
        async for events in self.http.post_sse("/responses", body):
            batch: list[dict[str, Any]] = []
            for _event, data in events:
                if data == b"[DONE]":
                    continue
                try:
                    event = orjson.loads(data)
                except orjson.JSONDecodeError:
                    raise UpstreamError(f"{self.name}: upstream sent a malformed stream event") from None
                kind = event.get("type")
                if kind in ("error", "response.failed"):
                    err = (event.get("response") or {}).get("error") or event
                    raise UpstreamError(f"{self.name}: upstream failed mid-stream: {err.get('message') or err}")
                batch.append(event)
            if batch:
                yield batch

    async def embed(self, model: str, texts: list[str], dimensions: int | None = None
                    ) -> tuple[list[list[float]], Usage]:
        body: dict[str, Any] = {"model": model, "input": texts, "encoding_format": "base64"}
        if dimensions:
            body["dimensions"] = dimensions
        out = await self.http.post_json("/embeddings", body)
        try:
            rows = sorted(out["data"], key=lambda d: d["index"])
            vecs = [_decode(d["embedding"]) for d in rows]
        except (KeyError, TypeError, ValueError):
            raise UpstreamError(f"{self.name}: upstream embedding response is malformed") from None
        if len(vecs) != len(texts):
            raise UpstreamError(f"{self.name}: asked for {len(texts)} embeddings, got {len(vecs)}")
        return vecs, Usage.from_openai(out.get("usage"))

    async def aclose(self) -> None:
        await self.http.aclose()


def _decode(emb: Any) -> list[float]:
    if isinstance(emb, str):
        raw = base64.b64decode(emb)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return [float(x) for x in emb]


def speaks_responses(deployment: Deployment) -> bool:
    """Whether calls to ``/v1/responses`` are passed through to this deployment as
    they are (else they are translated to Chat Completions): ``options.responses_api``
    when set, otherwise true for OpenAI's own API only."""
    flag = (deployment.options or {}).get("responses_api")
    if flag is not None:
        return bool(flag)
    return deployment.provider == "openai" and (deployment.base_url or DEFAULT_BASE_URL).rstrip("/") == DEFAULT_BASE_URL


__all__ = ["OpenAIProvider", "speaks_responses"]
