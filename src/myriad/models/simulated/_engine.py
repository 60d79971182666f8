"""What the simulated model says and how fast: shared by the HTTP upstream and the
in-process provider, so both give byte-for-byte the same answers.

Everything here is deterministic: the reply is a function of the model name and the
last user message, embedding vectors are a function of the text. Timing comes from
a :class:`Profile` (time to first token, token rate, total latency) that a server
sets as its default and a request may override, through headers or through options
appended to the model name: ``sim-small@ttft=0.2,tps=50,tokens=40``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import struct
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Mapping, Sequence

from myriad.models._tokens import content_text, estimate_message_tokens, estimate_text_tokens, last_user_text
from myriad.models.simulated._schema import example_value, structured_text

FINGERPRINT = "fp_simulated"
"""``system_fingerprint`` of every simulated reply: nobody mistakes it for a real model."""

_VOCAB = (
    "the of and to in is that it for on with as this be at by from or an are was "
    "agent model request simply token stream reply value state tool call plan step "
    "result check answer data user time next first good small fast clear note"
).split()


@dataclass(frozen=True)
class Profile:
    """How a simulated model behaves. All times in seconds."""

    ttft: float = 0.0
    """Delay before the first token (streams) or part of the total (non-streamed)."""
    tps: float = 0.0
    """Tokens per second after the first; 0 means all tokens at once."""
    latency: float | None = None
    """Total time of a non-streamed reply; default ``ttft + tokens / tps``."""
    tokens: int = 16
    """Reply length in tokens (words), before ``max_tokens`` caps it."""
    context_window: int = 128_000
    """Prompts estimated above this get OpenAI's ``context_length_exceeded`` 400."""
    chunk_interval: float = 0.02
    """Tokens due within this many seconds go out in one write (keeps the server cheap)."""
    embedding_dims: int = 384

    def total_latency(self, n_tokens: int) -> float:
        """Seconds a non-streamed reply of ``n_tokens`` takes."""
        if self.latency is not None:
            return self.latency
        stream_time = (n_tokens - 1) / self.tps if self.tps > 0 and n_tokens > 1 else 0.0
        return self.ttft + stream_time

    def with_options(self, options: Mapping[str, str]) -> "Profile":
        """A copy with ``options`` (string values, as from a header or model name) applied."""
        changes: dict[str, Any] = {}
        for key, raw in options.items():
            name = _OPTION_ALIASES.get(key, key)
            kind = _OPTION_TYPES.get(name)
            if kind is None:
                raise ValueError(f"unknown simulated-model option {key!r}")
            try:
                changes[name] = kind(raw)
            except ValueError:
                raise ValueError(f"simulated-model option {key} must be a number, got {raw!r}") from None
        return replace(self, **changes) if changes else self


_OPTION_TYPES: dict[str, Any] = {
    "ttft": float,
    "tps": float,
    "latency": float,
    "tokens": int,
    "context_window": int,
    "chunk_interval": float,
    "embedding_dims": int,
}
_OPTION_ALIASES = {"ctx": "context_window", "dims": "embedding_dims", "reply_tokens": "tokens"}


@lru_cache(maxsize=1024)
def parse_model_name(name: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """Split ``base@k=v,k=v`` into the base name and its options."""
    base, sep, rest = name.partition("@")
    if not sep:
        return name, ()
    opts = []
    for item in rest.split(","):
        if not item:
            continue
        k, eq, v = item.partition("=")
        if not eq:
            raise ValueError(f"model option {item!r} in {name!r} is not key=value")
        opts.append((k.strip(), v.strip()))
    return base, tuple(opts)


# ---------------------------------------------------------------- faults


@dataclass
class Fault:
    """A misbehaviour to inject: ``error`` (status), ``stall`` (no bytes for
    ``seconds``), ``rate_limit`` (429 with Retry-After), ``stall_after_first``
    (a stream sends its first token, then stalls)."""

    kind: str
    status: int = 500
    seconds: float = 3600.0
    retry_after: float = 1.0
    count: int = 1
    """How many requests it applies to; negative = until cleared."""
    model: str | None = None
    """Only requests for this (base) model name; None = any."""

    @classmethod
    def parse(cls, spec: str) -> "Fault":
        """``error``, ``error:503``, ``stall``, ``stall:2.5``, ``rate_limit:0.5``,
        ``stall_after_first:3`` (the header form, for one request)."""
        kind, _, arg = spec.strip().partition(":")
        kind = kind.strip().lower()
        try:
            if kind == "error":
                return cls("error", status=int(arg) if arg else 500)
            if kind in ("stall", "stall_after_first"):
                return cls(kind, seconds=float(arg) if arg else 3600.0)
            if kind == "rate_limit":
                return cls("rate_limit", status=429, retry_after=float(arg) if arg else 1.0)
        except ValueError:
            raise ValueError(f"bad fault argument in {spec!r}") from None
        raise ValueError(f"unknown fault {spec!r}: use error[:status], stall[:s], rate_limit[:s], stall_after_first[:s]")


@dataclass
class FaultQueue:
    """Faults scheduled on a server; each request takes at most one."""

    faults: list[Fault] = field(default_factory=list)

    def add(self, fault: Fault) -> None:
        self.faults.append(fault)

    def clear(self) -> None:
        self.faults.clear()

    def take(self, model: str) -> Fault | None:
        if not self.faults:
            return None
        for i, f in enumerate(self.faults):
            if f.model is None or f.model == model:
                if f.count > 0:
                    f.count -= 1
                    if f.count == 0:
                        del self.faults[i]
                return f
        return None


# ---------------------------------------------------------------- replies


@dataclass(frozen=True)
class Reply:
    """A deterministic answer: either text tokens or one tool call."""

    tokens: tuple[str, ...] = ()
    tool_call: dict[str, Any] | None = None
    finish_reason: str = "stop"
    prompt_tokens: int = 0

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    @property
    def completion_tokens(self) -> int:
        if self.tool_call is not None:
            return estimate_text_tokens(self.tool_call["function"]["arguments"]) + 3
        return len(self.tokens)


@lru_cache(maxsize=4096)
def _reply_tokens(model: str, prompt: str, n: int) -> tuple[str, ...]:
    words = prompt.split()
    head = f"[simulated {model}] "
    echo = " ".join(words[:8])
    lead = f"{head}You said: {echo}." if echo else f"{head}Hello."
    toks = [w + " " for w in lead.split()]
    seed = hashlib.blake2b(f"{model}\0{prompt}".encode(), digest_size=32).digest()
    i = 0
    while len(toks) < n:
        if i >= len(seed):
            seed = hashlib.blake2b(seed, digest_size=32).digest()
            i = 0
        toks.append(_VOCAB[seed[i] % len(_VOCAB)] + " ")
        i += 1
    toks = toks[:n]
    if toks:
        toks[-1] = toks[-1].rstrip() + ("" if toks[-1].rstrip().endswith(".") else ".")
    return tuple(toks)


def make_reply(model: str, body: Mapping[str, Any], profile: Profile, fixed_text: str | None = None) -> Reply:
    """The simulated answer to an OpenAI chat ``body`` (already validated)."""
    messages = body["messages"]
    prompt_tokens = estimate_message_tokens(messages)
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    call = _maybe_tool_call(body)
    if call is not None:
        return Reply(tool_call=call, finish_reason="tool_calls", prompt_tokens=prompt_tokens)
    last = messages[-1]
    prompt = last_user_text(messages)
    if last.get("role") == "tool":
        prompt = "tool result " + content_text(last.get("content"))
    fmt = body.get("response_format")
    if fixed_text is None and fmt is not None:
        fixed_text = structured_text(fmt, "".join(_reply_tokens(model, prompt, profile.tokens)))
    if fixed_text is not None:
        toks = tuple(re.findall(r"\S+\s*", fixed_text)) or (fixed_text,)
    else:
        toks = _reply_tokens(model, prompt, profile.tokens)
    finish = "stop"
    if isinstance(limit, int) and 0 < limit < len(toks):
        toks = toks[:limit]
        finish = "length"
    return Reply(tokens=toks, finish_reason=finish, prompt_tokens=prompt_tokens)


def _maybe_tool_call(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """Call a tool when asked to: ``tool_choice`` required/named (always, as OpenAI's
    models must), or the last user message names a tool. With ``auto``, a tool result
    as the last message gets a text answer."""
    tools = body.get("tools")
    if not tools or not isinstance(tools, list):
        return None
    messages = body["messages"]
    choice = body.get("tool_choice", "auto")
    if messages[-1].get("role") == "tool" and not (choice == "required" or isinstance(choice, Mapping)):
        return None
    fns = [t.get("function") or {} for t in tools if isinstance(t, Mapping)]
    chosen: Mapping[str, Any] | None = None
    if choice == "none":
        return None
    if isinstance(choice, Mapping):
        want = (choice.get("function") or {}).get("name")
        chosen = next((f for f in fns if f.get("name") == want), None)
    elif choice == "required":
        chosen = fns[0] if fns else None
    else:
        text = last_user_text(messages).lower()
        chosen = next((f for f in fns if f.get("name") and str(f["name"]).lower() in text), None)
    if chosen is None:
        return None
    name = str(chosen.get("name"))
    args = _example_args(chosen.get("parameters") or {})
    digest = hashlib.blake2b(f"{name}{last_user_text(messages)}".encode(), digest_size=6).hexdigest()
    return {"id": f"call_sim_{digest}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


def _example_args(schema: Mapping[str, Any]) -> dict[str, Any]:
    args = example_value(dict(schema, type="object") if isinstance(schema, Mapping) else {})
    return args if isinstance(args, dict) else {}


# ---------------------------------------------------------------- embeddings

_WORD = re.compile(r"[a-z0-9]+")


@lru_cache(maxsize=8192)
def embed_text(text: str, dims: int = 384) -> tuple[float, ...]:
    """A deterministic unit vector for ``text`` by feature hashing of its words and
    word pairs: texts sharing words are close, so cache and router tests behave
    sensibly without a neural model."""
    vec = [0.0] * dims
    words = _WORD.findall(text.lower())
    feats = words + [a + "_" + b for a, b in zip(words, words[1:])]
    if not feats:
        feats = ["<empty>"]
    for f in feats:
        h = int.from_bytes(hashlib.blake2b(f.encode(), digest_size=8).digest(), "little")
        vec[h % dims] += 1.0 if (h >> 63) & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return tuple(v / norm for v in vec)


def encode_embedding(vec: Sequence[float], encoding_format: str) -> Any:
    """A vector as the OpenAI API returns it: a float list or base64 float32."""
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode("ascii")
    return list(vec)


__all__ = [
    "FINGERPRINT",
    "Profile",
    "Fault",
    "FaultQueue",
    "Reply",
    "make_reply",
    "parse_model_name",
    "embed_text",
    "encode_embedding",
    "last_user_text",
]
