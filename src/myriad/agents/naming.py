"""Addresses: kebab-case class names, instance-name validation, agent refs."""

from __future__ import annotations

import re
from dataclasses import dataclass

from myriad.errors import InvalidName, InvalidRequest

NAME_MAX = 128
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.~@+=-]{0,127}$")


def kebab(class_name: str) -> str:
    """The URL form of a class name, exactly as the npm ``agents`` client computes it.

    ``MyAgent`` -> ``my-agent``, ``ChatAgentV2`` -> ``chat-agent-v2``,
    ``HTTPServer`` -> ``h-t-t-p-server``, ``MY_AGENT`` -> ``my-agent``.
    """
    if class_name == class_name.upper() and class_name != class_name.lower():
        return class_name.lower().replace("_", "-")
    out = re.sub(r"[A-Z]", lambda m: "-" + m.group(0).lower(), class_name)
    out = out[1:] if out.startswith("-") else out
    out = out.replace("_", "-")
    return out[:-1] if out.endswith("-") else out


def validate_name(name: str, what: str = "agent instance name") -> str:
    """Return ``name`` if it is a valid instance name, else raise ``InvalidName``."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or name in (".", ".."):
        shown = name if isinstance(name, str) and len(name) <= 80 else f"{str(name)[:80]}..."
        raise InvalidName(
            f"invalid {what} {shown!r}: use 1-{NAME_MAX} characters from letters, digits and "
            "'_ . ~ @ + = -', starting with a letter, digit or '_'"
        )
    return name


@dataclass(frozen=True, slots=True)
class AgentRef:
    """The address of one agent instance.

    ``path`` is unique per host and storage: ``{tenant}/{class}/{name}`` for a top-level
    agent, ``{parent path}/sub/{class}/{name}`` for a sub-agent.
    """

    tenant: str
    agent_class: str  # kebab-case
    name: str
    parent: "AgentRef | None" = None

    @property
    def path(self) -> str:
        base = self.parent.path + "/sub" if self.parent else self.tenant
        return f"{base}/{self.agent_class}/{self.name}"

    def child(self, agent_class: str, name: str) -> "AgentRef":
        return AgentRef(self.tenant, agent_class, validate_name(name), parent=self)

    @classmethod
    def from_path(cls, path: str) -> "AgentRef":
        """Parse ``tenant/class/name(/sub/class/name)*`` back into an ``AgentRef``."""
        parts = path.split("/")
        if len(parts) < 3 or (len(parts) - 3) % 3:
            raise InvalidRequest(f"malformed agent path {path!r}")
        ref = cls(parts[0], parts[1], parts[2])
        for i in range(3, len(parts), 3):
            if parts[i] != "sub":
                raise InvalidRequest(f"malformed agent path {path!r}")
            ref = cls(ref.tenant, parts[i + 1], parts[i + 2], parent=ref)
        return ref


__all__ = ["kebab", "validate_name", "AgentRef", "NAME_MAX"]
