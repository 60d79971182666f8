"""Usage events: who used what, how much, and when (CloudEvents-shaped).

A ``UsageEvent`` is one measured act (a model call, a sandbox run, a turn) with one
or more quantities, each of a named *resource* (``model.output_tokens``,
``sandbox.isolate.cpu_ms``). Its ``id`` is the idempotency key: the ledger counts an
id once however many times it is replayed.

Quantities are ``Decimal`` and are kept exactly to 6 decimal places (micro-units);
money is kept exactly to 9 decimal places (nanos). Both are stored as integers so
that sums in the database stay exact.
"""

from __future__ import annotations

import functools
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any, Mapping
from urllib.parse import quote, unquote

from myriad.errors import InvalidRequest

QUANTITY_SCALE = 10**6
"""Quantities are stored as integer micro-units."""
COST_SCALE = 10**9
"""Money is stored as integer nanos of the currency unit."""

SPECVERSION = "1.0"
EVENT_TYPE_PREFIX = "dev.myriad.usage."

_RESOURCE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")


class Resources:
    """The resource names Myriad's own rooms emit (any ``a.b_c`` name is allowed).

    Token accounting follows one rule so that prices never double-count:
    ``INPUT_TOKENS`` are *uncached* prompt tokens, ``CACHED_TOKENS`` the cached
    part of the prompt, ``OUTPUT_TOKENS`` all completion tokens (reasoning
    included); ``REASONING_TOKENS`` is informational (a subset of output).
    """

    MODEL_REQUESTS = "model.requests"
    INPUT_TOKENS = "model.input_tokens"
    CACHED_TOKENS = "model.cached_tokens"
    OUTPUT_TOKENS = "model.output_tokens"
    REASONING_TOKENS = "model.reasoning_tokens"
    EMBEDDING_TOKENS = "model.embedding_tokens"
    AGENT_TURNS = "agent.turns"
    AGENT_STORAGE_BYTES = "agent.storage_bytes"
    AGENT_WS_MESSAGES = "agent.ws_messages"
    EGRESS_REQUESTS = "egress.requests"
    EGRESS_BYTES = "egress.bytes"

    @staticmethod
    def sandbox(tier: str, what: str) -> str:
        """``sandbox.<tier>.<what>``: what is ``runs``, ``cpu_ms``, ``wall_ms`` or ``memory_gb_s``."""
        return f"sandbox.{tier}.{what}"


TOKEN_RESOURCES = frozenset({Resources.INPUT_TOKENS, Resources.CACHED_TOKENS, Resources.OUTPUT_TOKENS, Resources.EMBEDDING_TOKENS})
"""Resources that count against tokens-per-minute limits."""


def to_micro(value: Decimal | int | float | str, what: str = "quantity") -> int:
    """A non-negative quantity as integer micro-units (rounded half-even past 6 places)."""
    if type(value) is int and value >= 0:  # the common case, kept cheap
        return value * QUANTITY_SCALE
    d = _decimal(value, what)
    if d < 0:
        raise InvalidRequest(f"{what} must not be negative, got {value!r}")
    return int((d * QUANTITY_SCALE).to_integral_value(rounding=ROUND_HALF_EVEN))


def from_micro(micro: int) -> Decimal:
    """Integer micro-units back to a ``Decimal`` quantity."""
    d = Decimal(micro) / QUANTITY_SCALE
    return d.quantize(Decimal(1)) if micro % QUANTITY_SCALE == 0 else d.normalize()


def to_nanos(value: Decimal | int | str, what: str = "amount") -> int:
    """Money as integer nanos (rounded half-even past 9 places)."""
    return int((_decimal(value, what) * COST_SCALE).to_integral_value(rounding=ROUND_HALF_EVEN))


def from_nanos(nanos: int) -> Decimal:
    """Integer nanos back to an exact ``Decimal`` amount with 9 places."""
    return (Decimal(nanos) / COST_SCALE).quantize(Decimal("0.000000001"))


def money_str(nanos: int) -> str:
    """An amount as a string with 9 decimal places (exact)."""
    return format(from_nanos(nanos), "f")


def quantity_str(micro: int) -> str:
    """A quantity as a plain decimal string (no exponent)."""
    return format(from_micro(micro), "f")


def _decimal(value: Any, what: str) -> Decimal:
    if isinstance(value, bool):
        raise InvalidRequest(f"{what} must be a number, got {value!r}")
    try:
        d = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise InvalidRequest(f"{what} must be a number, got {value!r}") from None
    if not d.is_finite():
        raise InvalidRequest(f"{what} must be finite, got {value!r}")
    return d


@functools.lru_cache(maxsize=4096)
def _valid_resource(name: str) -> bool:
    return bool(_RESOURCE.match(name)) and len(name) <= 100


def check_resource(name: str) -> str:
    """Validate a resource name (lowercase dotted words)."""
    if not isinstance(name, str) or not _valid_resource(name):
        raise InvalidRequest(f"resource name {name!r} is not valid: use lowercase dotted words like 'model.output_tokens'")
    return name


@dataclass(frozen=True)
class Subject:
    """Who is charged: a tenant, optionally one of its users, optionally one agent.

    ``agent`` is the agent's unique path (``agent.ref.path``). The string form,
    used as the CloudEvents ``subject``, is ``tenant/<t>[/user/<u>][/agent/<a>]``
    with each part percent-encoded.
    """

    tenant: str
    user: str | None = None
    agent: str | None = None

    def __post_init__(self) -> None:
        for name in ("tenant", "user", "agent"):
            v = getattr(self, name)
            if v is None and name != "tenant":
                continue
            if not isinstance(v, str) or not v or len(v) > 512:
                raise InvalidRequest(f"subject {name} must be a non-empty string, got {v!r}")

    def __str__(self) -> str:
        s = f"tenant/{quote(self.tenant, safe='')}"
        if self.user is not None:
            s += f"/user/{quote(self.user, safe='')}"
        if self.agent is not None:
            s += f"/agent/{quote(self.agent, safe='')}"
        return s

    @classmethod
    def parse(cls, text: str) -> "Subject":
        """Inverse of ``str(subject)``."""
        parts = text.split("/") if isinstance(text, str) else []
        if len(parts) % 2 or not parts or parts[0] != "tenant":
            raise InvalidRequest(f"subject {text!r} is not of the form tenant/<t>[/user/<u>][/agent/<a>]")
        fields: dict[str, str] = {}
        for key, value in zip(parts[::2], parts[1::2]):
            if key not in ("tenant", "user", "agent") or key in fields:
                raise InvalidRequest(f"subject {text!r} has an unexpected part {key!r}")
            fields[key] = unquote(value)
        return cls(**fields)


@dataclass(frozen=True)
class Usage:
    """Quantities of resources used by one act, with the model that did it (if any)."""

    quantities: Mapping[str, Decimal | int | float | str]
    model: str | None = None
    deployment: str | None = None

    def micro(self) -> dict[str, int]:
        """Validated quantities as micro-units, by resource (computed once)."""
        cached = self.__dict__.get("_micro")
        if cached is None:
            if not isinstance(self.quantities, Mapping):
                raise InvalidRequest("usage quantities must be a mapping of resource name to number")
            cached = {check_resource(r): to_micro(q, f"quantity of {r}") for r, q in self.quantities.items()}
            object.__setattr__(self, "_micro", cached)
        return dict(cached)

    def tokens(self) -> int:
        """Tokens counted by tokens-per-minute limits (whole tokens, rounded up)."""
        micro = self.micro()
        total = sum(v for r, v in micro.items() if r in TOKEN_RESOURCES)
        return -(-total // QUANTITY_SCALE)

    @classmethod
    def tokens_of(
        cls,
        model: str,
        *,
        input: int = 0,
        output: int = 0,
        cached: int = 0,
        reasoning: int = 0,
        deployment: str | None = None,
        requests: int = 1,
    ) -> "Usage":
        """A model call. ``input`` is the whole prompt; its ``cached`` part is split out."""
        if cached > input:
            raise InvalidRequest(f"cached tokens ({cached}) exceed prompt tokens ({input})")
        q: dict[str, int] = {Resources.MODEL_REQUESTS: requests, Resources.INPUT_TOKENS: input - cached, Resources.OUTPUT_TOKENS: output}
        if cached:
            q[Resources.CACHED_TOKENS] = cached
        if reasoning:
            q[Resources.REASONING_TOKENS] = reasoning
        return cls(q, model=model, deployment=deployment)

    @classmethod
    def from_openai(cls, usage: Any, model: str, deployment: str | None = None) -> "Usage":
        """From an OpenAI ``usage`` object or dict (chat completions or embeddings)."""
        get = usage.get if isinstance(usage, Mapping) else lambda k, d=None: getattr(usage, k, d)
        prompt = int(get("prompt_tokens", 0) or 0)
        completion = int(get("completion_tokens", 0) or 0)
        pdet = get("prompt_tokens_details", None) or {}
        cdet = get("completion_tokens_details", None) or {}
        pget = pdet.get if isinstance(pdet, Mapping) else lambda k, d=None: getattr(pdet, k, d)
        cget = cdet.get if isinstance(cdet, Mapping) else lambda k, d=None: getattr(cdet, k, d)
        return cls.tokens_of(
            model,
            input=prompt,
            output=completion,
            cached=int(pget("cached_tokens", 0) or get("cached_tokens", 0) or 0),
            reasoning=int(cget("reasoning_tokens", 0) or 0),
            deployment=deployment,
        )

    @classmethod
    def sandbox_run(cls, tier: str, *, cpu_ms: float = 0, wall_ms: float = 0, memory_gb_s: float | Decimal = 0) -> "Usage":
        """A sandbox run on ``tier`` (``isolate`` or ``container``)."""
        return cls(
            {
                Resources.sandbox(tier, "runs"): 1,
                Resources.sandbox(tier, "cpu_ms"): cpu_ms,
                Resources.sandbox(tier, "wall_ms"): wall_ms,
                Resources.sandbox(tier, "memory_gb_s"): memory_gb_s,
            }
        )


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


_ids: list[Any] = []


def new_id(prefix: str) -> str:
    """A unique id without a syscall: 64 random bits drawn once per process (again in a
    forked child), then a counter. Unique across processes and restarts, like a UUID4."""
    if not _ids:
        import itertools
        import os

        _ids[:] = [os.urandom(8).hex(), itertools.count()]
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_ids.clear)
    return f"{prefix}{_ids[0]}{next(_ids[1]):x}"


def to_us(t: datetime) -> int:
    """A timezone-aware datetime as integer microseconds since the epoch."""
    if t.tzinfo is None:
        raise InvalidRequest(f"time {t.isoformat()} has no timezone; use UTC")
    delta = t - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> datetime:
    from datetime import timedelta

    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=us)


def iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def parse_time(text: Any, what: str = "time") -> datetime:
    """An RFC 3339 time (``Z`` or offset); naive times are refused."""
    if isinstance(text, datetime):
        t = text
    else:
        try:
            t = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
        except ValueError:
            raise InvalidRequest(f"{what} {text!r} is not an RFC 3339 time like 2026-01-31T12:00:00Z") from None
    if t.tzinfo is None:
        raise InvalidRequest(f"{what} {text!r} has no timezone; add Z for UTC")
    return t.astimezone(timezone.utc)


_RELATIVE = re.compile(r"^(\d+)([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def parse_when(text: str | None, what: str = "time") -> datetime | None:
    """None, an RFC 3339 time, or ``30m`` / ``24h`` / ``7d`` meaning that long ago."""
    if text is None:
        return None
    m = _RELATIVE.match(text)
    if m:
        from datetime import timedelta

        try:
            return now_utc() - timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
        except (OverflowError, ValueError):  # 99999999999d: before year 1
            raise InvalidRequest(f"{what} {text!r} reaches back too far") from None
    return parse_time(text, what)


@dataclass(frozen=True)
class UsageEvent:
    """One usage record, CloudEvents 1.0 shaped (``to_cloudevent`` / ``from_cloudevent``).

    ``id`` is the idempotency key. ``source`` names the emitter (``/myriad/models``),
    ``type`` is ``dev.myriad.usage.<kind>``. ``attributes`` carries free-form
    context (request id, trace id) into ``data``.
    """

    subject: Subject
    usage: Usage
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    source: str = "/myriad"
    type: str = EVENT_TYPE_PREFIX + "generic"
    time: datetime = field(default_factory=now_utc)
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id or len(self.id) > 256:
            raise InvalidRequest(f"event id must be a non-empty string of at most 256 characters, got {self.id!r}")
        if not isinstance(self.source, str) or not self.source:
            raise InvalidRequest("event source must be a non-empty string")
        if not isinstance(self.type, str) or not self.type:
            raise InvalidRequest("event type must be a non-empty string")
        if not isinstance(self.time, datetime) or self.time.tzinfo is None:
            raise InvalidRequest("event time must be a timezone-aware datetime")

    def to_cloudevent(self, extra_data: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The CloudEvents JSON form (structured mode)."""
        data: dict[str, Any] = {
            "tenant": self.subject.tenant,
            "user": self.subject.user,
            "agent": self.subject.agent,
            "model": self.usage.model,
            "deployment": self.usage.deployment,
            "measurements": {r: quantity_str(v) for r, v in self.usage.micro().items()},
        }
        if self.attributes:
            data["attributes"] = dict(self.attributes)
        if extra_data:
            data.update(extra_data)
        return {
            "specversion": SPECVERSION,
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "subject": str(self.subject),
            "time": iso(self.time),
            "datacontenttype": "application/json",
            "data": data,
        }

    @classmethod
    def from_cloudevent(cls, ce: Mapping[str, Any]) -> "UsageEvent":
        """Parse the CloudEvents JSON form; bad input raises ``InvalidRequest`` naming the field."""
        if not isinstance(ce, Mapping):
            raise InvalidRequest("a usage event must be a JSON object")
        if ce.get("specversion", SPECVERSION) != SPECVERSION:
            raise InvalidRequest(f"unsupported CloudEvents specversion {ce.get('specversion')!r}; use 1.0")
        data = ce.get("data")
        if not isinstance(data, Mapping):
            raise InvalidRequest("usage event 'data' must be an object")
        measurements = data.get("measurements")
        if not isinstance(measurements, Mapping) or not measurements:
            raise InvalidRequest("usage event data.measurements must be a non-empty object of resource: quantity")
        if "subject" in ce:
            subject = Subject.parse(ce["subject"])
        else:
            subject = Subject(data.get("tenant"), data.get("user"), data.get("agent"))  # type: ignore[arg-type]
        for key in ("id", "source", "type"):
            if not isinstance(ce.get(key), str) or not ce.get(key):
                raise InvalidRequest(f"usage event needs a non-empty string {key!r}")
        attrs = data.get("attributes") or {}
        if not isinstance(attrs, Mapping):
            raise InvalidRequest("usage event data.attributes must be an object")
        return cls(
            subject=subject,
            usage=Usage(dict(measurements), model=data.get("model"), deployment=data.get("deployment")),
            id=ce["id"],
            source=ce["source"],
            type=ce["type"],
            time=parse_time(ce["time"], "event time") if ce.get("time") else now_utc(),
            attributes=dict(attrs),
        )


__all__ = [
    "COST_SCALE",
    "QUANTITY_SCALE",
    "Resources",
    "Subject",
    "Usage",
    "UsageEvent",
    "from_micro",
    "from_nanos",
    "money_str",
    "parse_when",
    "quantity_str",
    "to_micro",
    "to_nanos",
]
