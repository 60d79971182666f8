"""The audit log: who (the whole principal chain) did what, to what, with which outcome.

Rows live in the identity database; ``record`` is one autocommitted INSERT (a few
microseconds on WAL). Details are scrubbed by the vault's redactor before they are
written, so a secret can never land in the log.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Callable

from myriad.identity._db import IdentityDB
from myriad.identity.principal import Principal

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    tenant TEXT NOT NULL,
    chain TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_tenant_at ON audit(tenant, at);
"""


@dataclass(frozen=True)
class AuditEntry:
    at: float
    tenant: str
    chain: list[str]
    action: str
    target: str
    outcome: str
    detail: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "tenant": self.tenant, "chain": self.chain, "action": self.action,
                "target": self.target, "outcome": self.outcome, "detail": self.detail}


class AuditLog:
    """Append-only records of identity-relevant actions."""

    def __init__(self, db: IdentityDB, redact: Callable[[str], str] = lambda s: s) -> None:
        self._db, self._redact = db, redact
        db.schema(_SCHEMA)

    def record(self, principal: Principal | None, action: str, target: str, outcome: str = "allowed",
               *, tenant: str | None = None, **detail: Any) -> None:
        chain = principal.chain if principal is not None else ["anonymous"]
        self._db.execute(
            "INSERT INTO audit (at, tenant, chain, action, target, outcome, detail) VALUES (?,?,?,?,?,?,?)",
            (time.time(), tenant or (principal.tenant if principal else ""), json.dumps(chain), action,
             self._redact(target)[:500], outcome, self._redact(json.dumps(detail, default=str))[:2000]))

    def entries(self, tenant: str, *, limit: int = 100, action: str | None = None) -> list[AuditEntry]:
        q = "SELECT at, tenant, chain, action, target, outcome, detail FROM audit WHERE tenant=?"
        args: list[Any] = [tenant]
        if action:
            q += " AND action=?"
            args.append(action)
        rows = self._db.execute(q + " ORDER BY id DESC LIMIT ?", (*args, limit))
        return [AuditEntry(at, t, json.loads(c), a, tg, o, json.loads(d)) for at, t, c, a, tg, o, d in rows]


__all__ = ["AuditEntry", "AuditLog"]
