"""The simulated OpenAI-compatible upstream: a raw ASGI app, built to be cheap.

Endpoints: ``POST /v1/chat/completions`` (plain and SSE), ``POST /v1/embeddings``,
``GET /v1/models``, ``POST /v1/messages`` (the Anthropic shape, plain and SSE), and a control surface under ``/_simulated/`` for tests:
``POST /_simulated/faults`` (schedule a :class:`Fault`), ``DELETE /_simulated/faults``,
``GET /_simulated/stats``, ``POST /_simulated/reset``.

Per-request knobs (headers): ``x-simulated-ttft``, ``x-simulated-tps``,
``x-simulated-latency``, ``x-simulated-tokens`` (seconds / tokens per second /
tokens), ``x-simulated-fault`` (``error:503``, ``stall:2``, ``rate_limit:0.5``,
``stall_after_first:2``) and ``x-simulated-reply`` (exact reply text). The same
timing knobs work as model-name options: ``sim-small@ttft=0.2,tps=50``.

Raw ASGI rather than Starlette because the density benchmark drives thousands of
streamed requests a second at it from one core: every write is pre-assembled bytes,
and tokens due within ``chunk_interval`` of each other leave in one write.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Awaitable, Callable, Mapping, MutableMapping

import orjson

from myriad.models.simulated._engine import (
    FINGERPRINT,
    Fault,
    FaultQueue,
    Profile,
    Reply,
    embed_text,
    encode_embedding,
    make_reply,
    parse_model_name,
)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

DEFAULT_MODELS = ("sim-small", "sim-large", "sim-embed")


@dataclass
class SimulatedConfig:
    """A simulated server: its default profile, per-model profiles, and auth."""

    profile: Profile = field(default_factory=Profile)
    models: dict[str, Profile] = field(default_factory=dict)
    """Profiles by base model name; unknown names use ``profile`` unless ``strict``."""
    strict: bool = False
    """Reject model names not in ``models`` with a 404 (like a real provider)."""
    api_key: str | None = None
    """When set, requests must carry ``Authorization: Bearer <api_key>``."""

    def to_json(self) -> dict[str, Any]:
        return {
            "profile": asdict(self.profile),
            "models": {k: asdict(v) for k, v in self.models.items()},
            "strict": self.strict,
            "api_key": self.api_key,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "SimulatedConfig":
        return cls(
            profile=Profile(**data.get("profile", {})),
            models={k: Profile(**v) for k, v in (data.get("models") or {}).items()},
            strict=bool(data.get("strict", False)),
            api_key=data.get("api_key"),
        )


_JSON_HEADERS = [(b"content-type", b"application/json")]
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
]
_DONE = b"data: [DONE]\n\n"


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, type_: str, code: str | None = None,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type_, code
        self.headers = headers or []

    def body(self) -> bytes:
        return orjson.dumps({"error": {"message": self.message, "type": self.type, "param": None, "code": self.code}})


class SimulatedUpstream:
    """The ASGI callable. ``faults`` and ``stats`` are plain attributes so an
    in-thread test can also poke them directly."""

    def __init__(self, config: SimulatedConfig | None = None) -> None:
        self.config = config or SimulatedConfig()
        self.faults = FaultQueue()
        self.stats: dict[str, Any] = {"requests": 0, "by_status": {}, "by_model": {}, "in_flight": 0, "responses": 0}
        self._ids = itertools.count(1)

    # ------------------------------------------------------------ plumbing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await _lifespan(receive, send)
            return
        if kind != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        headers = _header_map(scope["headers"])
        self.stats["in_flight"] += 1
        status = 200
        try:
            if self.config.api_key is not None and not path.startswith("/_simulated/"):
                if (headers.get("authorization") != f"Bearer {self.config.api_key}"
                        and headers.get("x-api-key") != self.config.api_key):
                    raise _HTTPError(401, "Incorrect API key provided (simulated upstream).",
                                     "invalid_request_error", "invalid_api_key")
            if path == "/v1/chat/completions" and method == "POST":
                status = await self._chat(await _read_body(receive), headers, receive, send)
            elif path == "/v1/embeddings" and method == "POST":
                status = await self._embeddings(await _read_body(receive), headers, send)
            elif path == "/v1/responses" and method == "POST":
                status = await self._responses(await _read_body(receive), headers, receive, send)
            elif path == "/v1/messages" and method == "POST":
                status = await self._messages(await _read_body(receive), headers, receive, send)
            elif path == "/v1/models" and method == "GET":
                await _respond(send, 200, self._models_body())
            elif path.startswith("/_simulated/"):
                await self._control(path, method, await _read_body(receive), send)
                return
            else:
                raise _HTTPError(404, f"no route {method} {path} on the simulated upstream",
                                 "invalid_request_error", "not_found")
        except _HTTPError as e:
            status = e.status
            await _respond(send, e.status, e.body(), e.headers)
        finally:
            self.stats["in_flight"] -= 1
            if not path.startswith("/_simulated/"):
                self.stats["requests"] += 1
                by = self.stats["by_status"]
                by[status] = by.get(status, 0) + 1

    def _count_model(self, model: str) -> None:
        by = self.stats["by_model"]
        by[model] = by.get(model, 0) + 1

    def _resolve(self, model: str, headers: Mapping[str, str]) -> tuple[str, Profile]:
        try:
            base, opts = parse_model_name(model)
        except ValueError as e:
            raise _HTTPError(400, str(e), "invalid_request_error", "invalid_model") from None
        profile = self.config.models.get(base)
        if profile is None:
            if self.config.strict:
                raise _HTTPError(404, f"The model `{base}` does not exist (simulated upstream).",
                                 "invalid_request_error", "model_not_found")
            profile = self.config.profile
        try:
            if opts:
                profile = profile.with_options(dict(opts))
            hdr = {k[12:]: v for k, v in headers.items() if k.startswith("x-simulated-")
                   and k not in ("x-simulated-fault", "x-simulated-reply")}
            if hdr:
                profile = profile.with_options(hdr)
        except ValueError as e:
            raise _HTTPError(400, str(e), "invalid_request_error", "invalid_value") from None
        return base, profile

    def _fault(self, base: str, headers: Mapping[str, str]) -> Fault | None:
        spec = headers.get("x-simulated-fault")
        if spec:
            try:
                return Fault.parse(spec)
            except ValueError as e:
                raise _HTTPError(400, str(e), "invalid_request_error", "invalid_value") from None
        return self.faults.take(base)

    async def _apply_fault(self, fault: Fault, receive: Receive) -> None:
        if fault.kind == "error":
            raise _HTTPError(fault.status, f"Simulated upstream failure ({fault.status}).",
                             "server_error" if fault.status >= 500 else "invalid_request_error", "simulated_failure")
        if fault.kind == "rate_limit":
            ra = fault.retry_after
            raise _HTTPError(429, "Rate limit reached (simulated upstream).", "requests", "rate_limit_exceeded",
                             headers=[(b"retry-after", _num(ra).encode()),
                                      (b"retry-after-ms", str(int(ra * 1000)).encode())])
        if fault.kind == "stall":
            await _sleep_or_disconnect(fault.seconds, receive)
            raise _HTTPError(504, "Simulated upstream stalled and gave up.", "server_error", "simulated_stall")

    # ------------------------------------------------------------ chat

    async def _chat(self, raw: bytes, headers: Mapping[str, str], receive: Receive, send: Send) -> int:
        body = _parse_json(raw)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _HTTPError(400, "you must provide a model parameter", "invalid_request_error", "missing_model")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise _HTTPError(400, "'messages' must be a non-empty array of objects", "invalid_request_error",
                             "invalid_messages")
        base, profile = self._resolve(model, headers)
        self._count_model(base)
        fault = self._fault(base, headers)
        if fault is not None:
            await self._apply_fault(fault, receive)
        reply = make_reply(base, body, profile, headers.get("x-simulated-reply"))
        if reply.prompt_tokens > profile.context_window:
            raise _HTTPError(
                400,
                f"This model's maximum context length is {profile.context_window} tokens. However, your "
                f"messages resulted in {reply.prompt_tokens} tokens (simulated upstream).",
                "invalid_request_error", "context_length_exceeded")
        cid = f"chatcmpl-sim-{next(self._ids)}"
        created = int(time.time())
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            stall_after_first = fault.seconds if fault is not None and fault.kind == "stall_after_first" else None
            await self._stream(send, receive, cid, created, model, reply, profile, include_usage, stall_after_first)
            return 200
        n = reply.completion_tokens
        delay = profile.total_latency(n)
        if delay > 0:
            await asyncio.sleep(delay)
        message: dict[str, Any] = {"role": "assistant", "content": None if reply.tool_call else reply.text}
        if reply.tool_call:
            message["tool_calls"] = [reply.tool_call]
        out = {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "system_fingerprint": FINGERPRINT,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": reply.finish_reason}],
            "usage": _usage(reply),
        }
        await _respond(send, 200, orjson.dumps(out))
        return 200

    async def _stream(self, send: Send, receive: Receive, cid: str, created: int, model: str, reply: Reply,
                      profile: Profile, include_usage: bool, stall_after_first: float | None) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        # Every chunk shares this prefix; only the delta and finish_reason differ.
        prefix = (b'data: {"id":"' + cid.encode() + b'","object":"chat.completion.chunk","created":'
                  + str(created).encode() + b',"model":' + orjson.dumps(model)
                  + b',"system_fingerprint":"' + FINGERPRINT.encode() + b'","choices":[{"index":0,"delta":')
        mid = b',"logprobs":null,"finish_reason":'
        end = b"}]}\n\n"
        if profile.ttft > 0:
            await asyncio.sleep(profile.ttft)
        if reply.tool_call is not None:
            tc = dict(reply.tool_call, index=0)
            first = prefix + orjson.dumps({"role": "assistant", "content": None, "tool_calls": [tc]}) + mid + b"null" + end
            await send({"type": "http.response.body", "body": first, "more_body": True})
        else:
            toks = reply.tokens
            first = (prefix + b'{"role":"assistant","content":' + orjson.dumps(toks[0] if toks else "")
                     + b"}" + mid + b"null" + end)
            await send({"type": "http.response.body", "body": first, "more_body": True})
            if stall_after_first is not None:
                await _sleep_or_disconnect(stall_after_first, receive)
                return
            rest = toks[1:]
            if rest:
                if profile.tps > 0:
                    per_write = max(1, int(profile.tps * profile.chunk_interval))
                    gap = per_write / profile.tps
                else:
                    per_write, gap = len(rest), 0.0
                loop = asyncio.get_running_loop()
                due = loop.time()
                for i in range(0, len(rest), per_write):
                    if gap:
                        due += gap
                        delay = due - loop.time()
                        if delay > 0:
                            await asyncio.sleep(delay)
                    chunk = b"".join(prefix + b'{"content":' + orjson.dumps(t) + b"}" + mid + b"null" + end
                                     for t in rest[i:i + per_write])
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        tail = prefix + b"{}" + mid + b'"' + reply.finish_reason.encode() + b'"' + end
        if include_usage:
            tail += (b'data: {"id":"' + cid.encode() + b'","object":"chat.completion.chunk","created":'
                     + str(created).encode() + b',"model":' + orjson.dumps(model)
                     + b',"system_fingerprint":"' + FINGERPRINT.encode() + b'","choices":[],"usage":'
                     + orjson.dumps(_usage(reply)) + b"}\n\n")
        await send({"type": "http.response.body", "body": tail + _DONE, "more_body": False})

    async def _messages(self, raw: bytes, headers: Mapping[str, str], receive: Receive, send: Send) -> int:
        """The Anthropic Messages shape (see ``_anthropic``)."""
        from myriad.models.simulated import _anthropic

        req = _parse_json(raw)
        model = req.get("model")
        if not isinstance(model, str) or not model:
            raise _HTTPError(400, "model: Field required", "invalid_request_error")
        if not isinstance(req.get("max_tokens"), int):
            raise _HTTPError(400, "max_tokens: Field required", "invalid_request_error")
        if not isinstance(req.get("messages"), list) or not req["messages"]:
            raise _HTTPError(400, "messages: at least one message is required", "invalid_request_error")
        body = _anthropic.to_openai_body(req)
        base, profile = self._resolve(model, headers)
        self._count_model(base)
        fault = self._fault(base, headers)
        if fault is not None and fault.kind != "stall_after_first":
            await self._apply_fault(fault, receive)
        reply = make_reply(base, body, profile, headers.get("x-simulated-reply"))
        if reply.prompt_tokens > profile.context_window:
            raise _HTTPError(400, f"prompt is too long: {reply.prompt_tokens} tokens > {profile.context_window} "
                             "maximum (simulated upstream)", "invalid_request_error")
        mid = f"msg_sim_{next(self._ids)}"
        if req.get("stream"):
            await _anthropic.stream(send, mid, model, reply, profile)
            return 200
        delay = profile.total_latency(reply.completion_tokens)
        if delay > 0:
            await asyncio.sleep(delay)
        await _respond(send, 200, _anthropic.message(mid, model, reply))
        return 200

    async def _responses(self, raw: bytes, headers: Mapping[str, str], receive: Receive, send: Send) -> int:
        """The OpenAI Responses shape (see ``_responses``); nothing is stored here."""
        from myriad.errors import MyriadError
        from myriad.models.responses import parse_request
        from myriad.models.simulated import _responses

        body = _parse_json(raw)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _HTTPError(400, "Missing required parameter: 'model'.", "invalid_request_error", "missing_required_parameter")
        try:
            req = parse_request(body, previous=lambda _id: None, item=lambda _id: None)
        except MyriadError as e:
            raise _HTTPError(e.status, e.message, "invalid_request_error", e.details.get("param")) from None
        self.stats["responses"] += 1
        base, profile = self._resolve(model, headers)
        self._count_model(base)
        fault = self._fault(base, headers)
        if fault is not None and fault.kind != "stall_after_first":
            await self._apply_fault(fault, receive)
        reply = make_reply(base, req.to_chat(), profile, headers.get("x-simulated-reply"))
        if reply.prompt_tokens > profile.context_window:
            raise _HTTPError(400, f"Your input exceeds the context window of this model ({reply.prompt_tokens} > "
                             f"{profile.context_window} tokens, simulated upstream).", "invalid_request_error",
                             "context_length_exceeded")
        if req.stream:
            stall = fault.seconds if fault is not None and fault.kind == "stall_after_first" else None
            await _responses.stream(send, req, model, reply, profile, stall,
                                    lambda s: _sleep_or_disconnect(s, receive))
            return 200
        delay = profile.total_latency(reply.completion_tokens)
        if delay > 0:
            await asyncio.sleep(delay)
        await _respond(send, 200, orjson.dumps(_responses.response(req, model, reply)))
        return 200

    # ------------------------------------------------------------ embeddings, models

    async def _embeddings(self, raw: bytes, headers: Mapping[str, str], send: Send) -> int:
        body = _parse_json(raw)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _HTTPError(400, "you must provide a model parameter", "invalid_request_error", "missing_model")
        inp = body.get("input")
        if isinstance(inp, str):
            texts = [inp]
        elif isinstance(inp, list) and inp and all(isinstance(t, str) for t in inp):
            texts = inp
        else:
            raise _HTTPError(400, "'input' must be a string or a non-empty array of strings",
                             "invalid_request_error", "invalid_input")
        base, profile = self._resolve(model, headers)
        self._count_model(base)
        fault = self._fault(base, headers)
        if fault is not None and fault.kind != "stall_after_first":
            await self._apply_fault(fault, _never_disconnect)
        dims = body.get("dimensions") or profile.embedding_dims
        if not isinstance(dims, int) or dims <= 0 or dims > 8192:
            raise _HTTPError(400, "'dimensions' must be a positive integer <= 8192", "invalid_request_error",
                             "invalid_value")
        fmt = body.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            raise _HTTPError(400, "'encoding_format' must be 'float' or 'base64'", "invalid_request_error",
                             "invalid_value")
        if profile.latency:
            await asyncio.sleep(profile.latency)
        data = [{"object": "embedding", "index": i, "embedding": encode_embedding(embed_text(t, dims), fmt)}
                for i, t in enumerate(texts)]
        n = sum(max(1, len(t) // 4) for t in texts)
        await _respond(send, 200, orjson.dumps({"object": "list", "data": data, "model": model,
                                                "usage": {"prompt_tokens": n, "total_tokens": n}}))
        return 200

    def _models_body(self) -> bytes:
        names = list(self.config.models) or list(DEFAULT_MODELS)
        return orjson.dumps({"object": "list", "data": [
            {"id": n, "object": "model", "created": 0, "owned_by": "myriad-simulated"} for n in names]})

    async def _control(self, path: str, method: str, raw: bytes, send: Send) -> None:
        if path == "/_simulated/faults" and method == "POST":
            spec = _parse_json(raw)
            try:
                fault = Fault(**spec)
                Fault.parse(fault.kind)  # validates the kind
            except (TypeError, ValueError) as e:
                raise _HTTPError(400, f"bad fault: {e}", "invalid_request_error", "invalid_value") from None
            self.faults.add(fault)
        elif path == "/_simulated/faults" and method == "DELETE":
            self.faults.clear()
        elif path == "/_simulated/reset" and method == "POST":
            self.faults.clear()
            self.stats.update({"requests": 0, "by_status": {}, "by_model": {}, "responses": 0})
        elif not (path == "/_simulated/stats" and method == "GET"):
            raise _HTTPError(404, f"no route {method} {path}", "invalid_request_error", "not_found")
        await _respond(send, 200, orjson.dumps(self.stats, option=orjson.OPT_NON_STR_KEYS))


# ---------------------------------------------------------------- helpers


def _usage(reply: Reply) -> dict[str, int]:
    c = reply.completion_tokens
    return {"prompt_tokens": reply.prompt_tokens, "completion_tokens": c, "total_tokens": reply.prompt_tokens + c}


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _header_map(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    out = {}
    for k, v in raw:
        if k == b"authorization" or k == b"x-api-key" or k.startswith(b"x-simulated-"):
            out[k.decode("latin-1")] = v.decode("latin-1")
    return out


def _parse_json(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _HTTPError(400, "request body is not valid JSON", "invalid_request_error", "invalid_json") from None
    if not isinstance(body, dict):
        raise _HTTPError(400, "request body must be a JSON object", "invalid_request_error", "invalid_json")
    return body


async def _read_body(receive: Receive) -> bytes:
    msg = await receive()
    body: bytes = msg.get("body", b"")
    if not msg.get("more_body"):
        return body
    parts = [body]
    while msg.get("more_body"):
        msg = await receive()
        parts.append(msg.get("body", b""))
    return b"".join(parts)


async def _respond(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = _JSON_HEADERS + extra if extra else _JSON_HEADERS
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _sleep_or_disconnect(seconds: float, receive: Receive) -> None:
    """Sleep, but stop early when the client goes away (a stalled request must not
    pin a task for an hour after its client has given up)."""

    async def wait_disconnect() -> None:
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return

    try:
        await asyncio.wait_for(wait_disconnect(), timeout=seconds)
    except asyncio.TimeoutError:
        pass


async def _never_disconnect() -> MutableMapping[str, Any]:
    await asyncio.Event().wait()
    return {}


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


__all__ = ["SimulatedUpstream", "SimulatedConfig", "DEFAULT_MODELS"]
