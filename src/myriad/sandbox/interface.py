"""The one sandbox API, independent of the tier behind it.

A *tier* (``Tier``) makes sandboxes; a *sandbox* (``Sandbox``) runs code. Every
sandbox can ``run`` a snippet and be closed; what else it can do is declared in
``capabilities`` and offered by the richer protocol of its tier
(``myriad.sandbox.container.ContainerSandbox`` has exec, files, processes, ...).
The policy (``myriad.sandbox.policy.Sandboxes``) picks the lightest tier whose
capabilities cover what the caller says it needs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Awaitable, Callable, Mapping, Protocol, runtime_checkable

from myriad.errors import InvalidRequest

#: Names of capabilities a caller may ask for in ``Sandboxes.open(needs=...)``.
CAPABILITIES: dict[str, str] = {
    "javascript": "run JavaScript snippets",
    "tools": "call host-side Python tools bound into the sandbox (Code Mode)",
    "filesystem": "a private writable workspace that persists across calls",
    "binaries": "run programs from a Linux userland (sh, git, python3, ...)",
    "shell": "run shell commands",
    "processes": "background processes (start, list, logs, kill)",
    "network": "outbound network through the egress proxy (allowlisted domains only)",
    "git": "clone and check out repositories the sandbox may reach",
    "python": "run Python snippets",
    "snapshot": "snapshot, restore and fork the workspace",
    "pause": "pause and resume all processes",
}

OutputCallback = Callable[[str, bytes], Awaitable[None] | None]
"""``on_output(stream, chunk)``: ``stream`` is ``"stdout"`` or ``"stderr"``."""


_MAX_LIMIT = 1e12  # past any real limit; keeps int() and sums exact


@dataclass
class Limits:
    """Resource limits of one sandbox. ``None`` means "the host's default".

    ``timeout`` bounds one run/exec; ``memory_mb`` is a hard limit (the V8 heap
    for isolates, the cgroup for containers); ``cpu`` is in cores; ``pids`` caps
    processes; ``output_bytes`` caps each captured stream; ``idle_timeout`` and
    ``max_lifetime`` bound the life of a container sandbox; ``disk_mb`` is a
    container's disk quota (workspace and /tmp together, see ``disk.py``).
    """

    timeout: float | None = None
    memory_mb: int | None = None
    cpu: float | None = None
    pids: int | None = None
    output_bytes: int | None = None
    idle_timeout: float | None = None
    max_lifetime: float | None = None
    disk_mb: int | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> "Limits":
        """Build limits from client JSON, rejecting unknown keys and bad values."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise InvalidRequest("limits must be an object")
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise InvalidRequest(f"unknown limit(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
        out = cls()
        for name, value in data.items():
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidRequest(f"limit {name} must be a number, got {value!r}")
            if not math.isfinite(value) or value <= 0 or value > _MAX_LIMIT:  # NaN compares false to all
                raise InvalidRequest(f"limit {name} must be positive and finite, at most {_MAX_LIMIT:g}, got {value!r}",
                                     details={"field": f"limits.{name}"})
            setattr(out, name, int(value) if name in ("memory_mb", "pids", "output_bytes", "disk_mb") else float(value))
        return out

    def merged(self, defaults: "Limits") -> "Limits":
        """These limits with every unset field taken from ``defaults``."""
        out = {}
        for k in _LIMIT_FIELDS:  # plain numbers: no asdict() deep copy (this runs per sandbox opened)
            v = getattr(self, k)
            out[k] = v if v is not None else getattr(defaults, k)
        return Limits(**out)

    def capped(self, ceiling: "Limits") -> "Limits":
        """These limits, none above ``ceiling`` (a client may tighten, never loosen)."""
        out = {}
        for k in _LIMIT_FIELDS:
            v, cap = getattr(self, k), getattr(ceiling, k)
            out[k] = v if cap is None or v is None else min(v, cap)
        return Limits(**out)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


_LIMIT_FIELDS = tuple(f.name for f in fields(Limits))


@dataclass
class RunResult:
    """What one run/exec produced.

    For an isolate, ``value`` is the snippet's (awaited) result and ``stdout`` /
    ``stderr`` hold the captured ``console`` output; for a container ``value`` is
    ``None`` and the streams are the process's. ``truncated`` says an output limit
    cut something; ``error`` names what went wrong in the code itself (a thrown
    exception), limits are raised as errors instead.
    """

    value: Any = None
    stdout: str = ""
    stderr: str = ""
    exit_code: int = 0
    duration_ms: float = 0.0
    truncated: bool = False
    error: str | None = None
    logs: list[dict[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.error is None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SandboxInfo:
    """A sandbox as the API shows it."""

    id: str
    tier: str
    owner: str
    status: str
    created_at: float
    last_used_at: float
    limits: dict[str, Any]
    capabilities: list[str]
    network: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class Sandbox(Protocol):
    """One sandbox, whatever its tier."""

    id: str
    owner: str
    tier: str
    capabilities: frozenset[str]

    async def run(self, code: str, *, language: str | None = None, timeout: float | None = None) -> RunResult:
        """Run a snippet (JavaScript on the isolate tier; shell/python/js on containers)."""
        ...

    def info(self) -> SandboxInfo:
        """A description for the API."""
        ...

    @property
    def closed(self) -> bool:
        """True once the sandbox is gone (closed, timed out, expired)."""
        ...

    async def close(self, *, reason: Any = "deleted") -> None:
        """Release everything the sandbox holds; idempotent. ``reason`` (an ``events.CloseReason``)
        is what the ``close`` event says: ``deleted`` by a caller, ``idle``, ``evicted``, ..."""
        ...


class Tier(Protocol):
    """A way to make sandboxes; registered by name in ``myriad.sandbox.policy.TIERS``."""

    name: str
    weight: int
    """Lower is lighter; the policy tries lighter tiers first."""
    capabilities: frozenset[str]

    def check(self) -> None:
        """Raise ``SandboxUnavailable`` naming the missing piece if this machine cannot run the tier."""
        ...

    async def create(self, *, id: str, owner: str, limits: Limits, **options: Any) -> Sandbox:
        """Make one sandbox with ``limits`` already merged with the host defaults."""
        ...

    async def aclose(self) -> None:
        """Shut the tier down (close its sandboxes, stop helpers)."""
        ...


__all__ = ["CAPABILITIES", "Limits", "OutputCallback", "RunResult", "Sandbox", "SandboxInfo", "Tier"]
