"""Capabilities as scopes: what a principal may do, and on whose behalf.

A scope is ``family`` or ``family:argument``; a set of them is space-separated as in
OAuth. Families Myriad checks::

    agents[:class]        talk to agents (of one class)         agents door, RPC
    models[:name]         call models (glob: models:gpt-4o*)    model gateway, Agent.models
    usage                 read usage and budgets                /v1/usage
    admin                 manage the tenant's keys              /v1/admin
    tools[:name]          run a tool                            tool layer
    sandbox[:tier]        open a sandbox of a tier              sandbox open
    egress[:host]         reach a host (*.example.com)          egress proxy / tool layer
    budget:<usd>          spend at most this much               narrowing only
    vault[:provider]      use stored credentials of a provider  credential injection
    mcp[:agent:tool]      call an agent's MCP tool              /mcp/{agent}/{name}

``*`` holds everything; ``family`` alone holds every argument of that family. How an
argument covers another is a per-family ``Matcher`` registered by name (globs by
default, host patterns for ``egress``, numbers for ``budget``). Scopes only ever
narrow: ``Scopes.narrow`` refuses to grant what the holder does not have.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Iterable, Protocol

from myriad.errors import InvalidRequest, PermissionDenied

_SCOPE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}(:[A-Za-z0-9_.*:/@+-]{1,200})?$|^\*$")


class Matcher(Protocol):
    """Does a held argument cover a wanted one (both of the same family)?"""

    def __call__(self, held: str, wanted: str) -> bool: ...


def _glob(held: str, wanted: str) -> bool:
    return held == wanted or held == "*" or ("*" in held and fnmatch.fnmatchcase(wanted, held) and "*" not in wanted)


def _host(held: str, wanted: str) -> bool:
    held, wanted = held.lower().rstrip("."), wanted.lower().rstrip(".")
    if held in ("*", wanted):
        return True
    if held.startswith("*."):
        suffix = held[1:]  # ".example.com"
        return wanted.endswith(suffix) and len(wanted) > len(suffix)
    return False


def _number(held: str, wanted: str) -> bool:
    try:
        return float(wanted) <= float(held)
    except ValueError:
        return False


MATCHERS: dict[str, Matcher] = {"egress": _host, "budget": _number}
"""Per-family matchers; families not listed use globs."""


def parse_scopes(text: str | Iterable[str] | None) -> frozenset[str]:
    """Validate a space-separated scope string (or an iterable of scopes)."""
    if text is None:
        return frozenset()
    items = text.split() if isinstance(text, str) else list(text)
    for item in items:
        if not isinstance(item, str) or not _SCOPE_RE.match(item):
            raise InvalidRequest(f"invalid scope {str(item)[:60]!r}: use 'family' or 'family:argument' "
                                 "(e.g. agents, models:gpt-4o-mini, egress:api.example.com)",
                                 details={"param": "scope"})
    return frozenset(items)


@dataclass(frozen=True, slots=True)
class Scopes:
    """An immutable set of scopes with coverage checks."""

    items: frozenset[str]

    @classmethod
    def of(cls, text: str | Iterable[str] | None) -> "Scopes":
        return cls(parse_scopes(text))

    def covers(self, wanted: str) -> bool:
        """Whether one wanted scope is held."""
        if "*" in self.items or wanted in self.items:
            return True
        family, _, arg = wanted.partition(":")
        if family in self.items:
            return True
        match = MATCHERS.get(family, _glob)
        for held in self.items:
            hf, sep, ha = held.partition(":")
            if sep and hf == family and arg and match(ha, arg):
                return True
        return False

    def has_family(self, family: str) -> bool:
        """Whether any scope of ``family`` is held (the door check; handlers check the argument)."""
        return "*" in self.items or any(s == family or s.startswith(family + ":") for s in self.items)

    def require(self, *wanted: str) -> None:
        """Raise ``PermissionDenied`` (403) naming the first scope that is not held."""
        for scope in wanted:
            if not self.covers(scope):
                raise PermissionDenied(f"this credential lacks the scope {scope!r}",
                                       details={"missing_scope": scope})

    def narrow(self, requested: Iterable[str] | None) -> "Scopes":
        """The requested subset; ``None`` keeps everything. Refuses anything not held."""
        if requested is None:
            return self
        wanted = parse_scopes(requested)
        missing = sorted(s for s in wanted if not self.covers(s))
        if missing:
            raise PermissionDenied(f"cannot grant scope(s) not held by the subject: {' '.join(missing)}",
                                   details={"missing_scope": missing[0]})
        return Scopes(wanted)

    def budget(self) -> float | None:
        """The tightest ``budget:<usd>`` ceiling held (``None``: no ceiling)."""
        values = []
        for s in self.items:
            if s.startswith("budget:"):
                try:
                    values.append(float(s[7:]))
                except ValueError:
                    continue
        return min(values) if values else None

    def __str__(self) -> str:
        return " ".join(sorted(self.items))


def sandbox_scopes(tier: str, allow_hosts: Iterable[str] = ()) -> list[str]:
    """The scopes opening a sandbox of ``tier`` with egress to ``allow_hosts`` needs
    (``sandbox:<tier>`` and one ``egress:<host>`` per allowed host pattern)."""
    return [f"sandbox:{tier}", *(f"egress:{h}" for h in allow_hosts)]


def require(scopes: "Scopes | frozenset[str] | Iterable[str]", *wanted: str) -> None:
    """``PermissionDenied`` (403, naming the scope) unless ``scopes`` covers every ``wanted``."""
    (scopes if isinstance(scopes, Scopes) else Scopes(frozenset(scopes))).require(*wanted)


__all__ = ["MATCHERS", "Matcher", "Scopes", "parse_scopes", "require", "sandbox_scopes"]
