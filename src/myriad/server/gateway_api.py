"""The OpenAI-compatible doors of the model gateway: ``/v1/chat/completions`` (with
SSE streaming and tool calls passed through), ``/v1/embeddings``, ``/v1/models``, and ``/v1/router/outcomes`` (feedback for the
strong/weak router).

Authenticated with tenant API keys (``Authorization: Bearer``), so the official
``openai`` client works with ``base_url=http://host:port/v1, api_key=<tenant key>``.
Errors use OpenAI's shape (``{"error": {"message", "type", "param", "code"}}``) and
status codes, with ``Retry-After`` on 429 and 503 when the wait is known.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Callable

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from myriad.errors import InvalidRequest, MyriadError, UnknownModel, UpstreamRateLimited
from myriad.models._tokenizers import decode_token_arrays, is_token_input, tokenizer_of
from myriad.models.mcp_tools import mcp_specs
from myriad.server import mcp_api
from myriad.server.auth import require_principal
from myriad.server.params import json_object

MAX_BODY = 16 * 1024 * 1024
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "insufficient_quota",
          403: "permission_error", 404: "invalid_request_error", 413: "invalid_request_error",
          405: "invalid_request_error", 429: "rate_limit_error"}
_DONE = b"data: [DONE]\n\n"
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no")]


def openai_error(e: MyriadError) -> Response:
    """A ``MyriadError`` as OpenAI's error body, with its status."""
    return Response(orjson.dumps(openai_body(e)), status_code=e.status, media_type="application/json",
                    headers=_retry_headers(e))


def openai_body(e: MyriadError) -> dict[str, Any]:
    # OpenAI's four fields, then the error's own details (a budget's numbers, its
    # reset time): clients that know only OpenAI's shape ignore the extras.
    extra = {k: v for k, v in e.details.items() if k not in ("message", "type", "param", "code")}
    return {"error": {"message": e.message, "type": _TYPES.get(e.status, "api_error"),
                      "param": e.details.get("param"), "code": e.code, **extra}}


def _retry_headers(e: MyriadError) -> dict[str, str] | None:
    wait = e.retry_after if isinstance(e, UpstreamRateLimited) else e.details.get("retry_after")
    if e.status in (429, 503) and isinstance(wait, (int, float)):
        return {"retry-after": str(max(1, round(wait))), "retry-after-ms": str(int(wait * 1000))}
    if e.status == 401:
        return {"www-authenticate": "Bearer"}
    return None


async def _json_body(request: Request) -> dict[str, Any]:
    return await json_object(request, MAX_BODY, required=True)


def _require_model(principal: Any, model: Any) -> None:
    """The capability check at the gateway door: ``models:<name>`` (403 names the scope)."""
    principal.require(f"models:{model}" if isinstance(model, str) and model else "models")


def _gateway(request: Request) -> Any:
    models = request.app.state.services.models
    if models is None:
        raise InvalidRequest("no model gateway is configured on this server")
    return models


async def chat_completions(request: Request) -> Any:
    try:
        principal = await require_principal(request)
        gateway = _gateway(request)
        body = await _json_body(request)
        _require_model(principal, body.get("model"))
        if body.get("n") not in (None, 1):
            raise InvalidRequest("only n=1 is supported", details={"param": "n"})
        flag = request.headers.get("x-myriad-cache")
        if flag is not None and "cache" not in body:
            body["cache"] = flag.lower() in ("1", "true", "on", "yes")
        specs = mcp_specs(body)
        if specs and not body.get("stream"):  # MCP tools: Myriad runs the tool loop (mcp_api)
            result, calls = await mcp_api.chat_with_mcp_tools(request, principal, gateway, body, specs)
            raw = {**result.raw, "mcp_calls": calls}  # Myriad's extension: what the tools did
            return Response(orjson.dumps(raw), media_type="application/json",
                            headers={"x-myriad-deployment": result.deployment})
        if not body.get("stream"):
            result = await gateway.chat(body, tenant=principal.tenant)
            headers = {"x-myriad-deployment": result.deployment}
            if result.cached:
                headers["x-myriad-cache"] = "hit"
            return Response(orjson.dumps(result.raw), media_type="application/json", headers=headers)
        if specs:
            stream = await mcp_api.stream_with_mcp_tools(request, principal, gateway, body, specs)
        else:
            stream = gateway.chat_stream_batches(body, tenant=principal.tenant)
        try:
            first = await stream.__anext__()
        except StopAsyncIteration:
            first = None
    except MyriadError as e:
        return openai_error(e)
    return SSEResponse(first, stream)


def _sse_bytes(batch: list[dict[str, Any]]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in batch)


class SSEResponse:
    """Relays a gateway stream of ``(deployment, batch)`` as server-sent events, one write
    per upstream batch (chat chunks here; the Responses API's typed events with its own
    ``encode`` and no ``[DONE]``).

    Raw ASGI rather than Starlette's StreamingResponse: this is the gateway's hottest
    path and needs neither a task group nor a write per chunk. Headers are already
    sent when later chunks fail, so a failure after the first chunk is reported the
    way OpenAI does: an ``error`` event, then the end. A client that goes away stops
    the relay at the next batch (and so the upstream call)."""

    def __init__(self, first: Any, stream: AsyncIterator[Any], *,
                 encode: Callable[[list[Any]], bytes] = _sse_bytes, done: bytes = _DONE,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.first = first
        self.stream = stream
        self.encode = encode
        self.done = done
        self.headers = _SSE_HEADERS + (headers or [])

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.ensure_future(watch())
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        try:
            if self.first is not None:
                await send({"type": "http.response.body", "body": self.encode(self.first[1]), "more_body": True})
            async for _deployment, batch in self.stream:
                if gone.is_set():
                    return
                await send({"type": "http.response.body", "body": self.encode(batch), "more_body": True})
            tail = self.done
        except MyriadError as e:
            tail = b"data: " + orjson.dumps(openai_body(e)) + b"\n\n"
        finally:
            watcher.cancel()
            await self.stream.aclose()  # type: ignore[attr-defined]
        await send({"type": "http.response.body", "body": tail, "more_body": False})


async def embeddings(request: Request) -> Response:
    try:
        principal = await require_principal(request)
        gateway = _gateway(request)
        body = await _json_body(request)
        inp = body.get("input")
        model = body.get("model")
        if model is not None and not isinstance(model, str):
            raise InvalidRequest("'model' must be a string", details={"param": "model"})
        if isinstance(inp, list) and is_token_input(inp):
            name = model or gateway.default_model("embedding")
            inp = await decode_token_arrays(inp, tokenizer_of(gateway.config.deployments, name))
        texts = [inp] if isinstance(inp, str) else inp
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise InvalidRequest("'input' must be a string, a non-empty array of strings, or token arrays "
                                 "(arrays of integers)", details={"param": "input"})
        fmt = body.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            raise InvalidRequest("'encoding_format' must be 'float' or 'base64'", details={"param": "encoding_format"})
        dims = body.get("dimensions")
        if dims is not None and (not isinstance(dims, int) or isinstance(dims, bool) or dims <= 0):
            raise InvalidRequest("'dimensions' must be a positive integer", details={"param": "dimensions"})
        _require_model(principal, model)
        result = await gateway.embed(texts, model=model or None, tenant=principal.tenant, dimensions=dims)
        return Response(orjson.dumps(result.to_openai(fmt)), media_type="application/json")
    except MyriadError as e:
        return openai_error(e)


async def list_models(request: Request) -> Response:
    try:
        principal = await require_principal(request)
        gateway = _gateway(request)
    except MyriadError as e:
        return openai_error(e)
    data = [{"id": name, "object": "model", "created": 0, "owned_by": "myriad"} for name in gateway.model_names()
            if principal.capabilities.covers(f"models:{name}")]
    return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")


async def retrieve_model(request: Request) -> Response:
    """``GET /v1/models/{id}``: one model, if this key may use it."""
    try:
        principal = await require_principal(request)
        gateway = _gateway(request)
        name = request.path_params["model"]
        if name not in gateway.model_names() or not principal.capabilities.covers(f"models:{name}"):
            raise UnknownModel(f"The model '{name}' does not exist or you do not have access to it.",
                               details={"param": "model"})
    except MyriadError as e:
        return openai_error(e)
    return Response(orjson.dumps({"id": name, "object": "model", "created": 0, "owned_by": "myriad"}),
                    media_type="application/json")


async def completions(request: Request) -> Response:
    """``POST /v1/completions``: the legacy text-completions API is not served."""
    return openai_error(InvalidRequest(
        "The legacy completions API (/v1/completions, 'prompt') is not served by Myriad; use /v1/chat/completions "
        "with 'messages' or /v1/responses with 'input'.", details={"param": "prompt"}))


async def router_outcomes(request: Request) -> Response:
    """``POST /v1/router/outcomes``: teach the strong/weak router from this tenant's
    traffic. Body: ``{"prompt": str, "weak_ok": bool}``, or ``{"prompt", "preferred":
    "strong" | "weak" | "tie"}``, or ``{"outcomes": [...those...]}``."""
    try:
        principal = await require_principal(request)
        principal.require("models")  # any key could train the tenant's router (an isolate-only key too)
        gateway = _gateway(request)
        body = await _json_body(request)
        items = body.get("outcomes", [body])
        if not isinstance(items, list) or not items:
            raise InvalidRequest("'outcomes' must be a non-empty array", details={"param": "outcomes"})
        prompts, oks = [], []
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("prompt"), str) or not item["prompt"]:
                raise InvalidRequest(f"outcome {i}: 'prompt' must be a non-empty string", details={"param": "prompt"})
            if isinstance(item.get("weak_ok"), bool):
                oks.append(item["weak_ok"])
            elif item.get("preferred") in ("strong", "weak", "tie"):
                oks.append(item["preferred"] != "strong")
            else:
                raise InvalidRequest(f"outcome {i}: give 'weak_ok' (true/false) or 'preferred' "
                                     "('strong', 'weak' or 'tie')", details={"param": "weak_ok"})
            prompts.append(item["prompt"])
        total = await gateway.record_outcome(prompts, weak_ok=oks, tenant=principal.tenant)
    except MyriadError as e:
        return openai_error(e)
    return Response(orjson.dumps({"recorded": len(prompts), "total": total}), media_type="application/json")


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", retrieve_model, methods=["GET"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/router/outcomes", router_outcomes, methods=["POST"]),
    ]


__all__ = ["routes", "openai_error", "openai_body"]
