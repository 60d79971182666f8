"""The MCP servers a tenant registers with Myriad, so gateway callers can offer their
tools to a model by label (``tools: [{"type": "mcp", "server_label": "docs"}]``).

A registration is a label, a URL and optionally an access token for that server; the
token is sealed like a vault credential (AES-GCM, bound to tenant and label) and only
the gateway's MCP path opens it, to put it in the ``Authorization`` header of its own
requests to that server. Listing shows whether a token is set, never the token.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from myriad.errors import InvalidRequest, NotFound
from myriad.identity._box import SecretBox
from myriad.identity._db import IdentityDB

_SCHEMA = """
CREATE TABLE IF NOT EXISTS mcp_servers (
    tenant TEXT NOT NULL,
    label TEXT NOT NULL,
    url TEXT NOT NULL,
    sealed BLOB,
    updated REAL NOT NULL,
    PRIMARY KEY (tenant, label)
);
"""
LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")


@dataclass(frozen=True)
class McpServerInfo:
    tenant: str
    label: str
    url: str
    has_token: bool
    updated: float

    def to_json(self) -> dict[str, Any]:
        return {"server_label": self.label, "server_url": self.url, "has_token": self.has_token,
                "updated": self.updated}


def check_url(url: Any, param: str = "server_url") -> str:
    if not isinstance(url, str) or len(url) > 2000:
        raise InvalidRequest(f"{param} must be an http(s) URL", details={"param": param})
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        raise InvalidRequest(f"{param} must be an absolute http(s) URL without credentials", details={"param": param})
    return url


def check_label(label: Any) -> str:
    if not isinstance(label, str) or not LABEL_RE.match(label):
        raise InvalidRequest("server_label must be 1-40 letters, digits, '_' or '-'", details={"param": "server_label"})
    return label


class McpServerRegistry:
    """Registered MCP servers per tenant, in the identity database."""

    def __init__(self, db: IdentityDB, box: SecretBox) -> None:
        self._db, self._box = db, box
        db.schema(_SCHEMA)

    def put(self, tenant: str, label: str, url: str, token: str | None = None) -> McpServerInfo:
        check_label(label)
        check_url(url)
        if token is not None and (not isinstance(token, str) or not token or len(token) > 16384 or "\n" in token):
            raise InvalidRequest("token must be a non-empty single-line string", details={"param": "token"})
        sealed = self._box.seal(token.encode(), f"mcp:{tenant}:{label}") if token else None
        now = time.time()
        self._db.execute(
            "INSERT INTO mcp_servers (tenant, label, url, sealed, updated) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (tenant, label) DO UPDATE SET url = excluded.url, sealed = excluded.sealed, "
            "updated = excluded.updated", (tenant, label, url, sealed, now))
        return McpServerInfo(tenant, label, url, sealed is not None, now)

    def list(self, tenant: str) -> list[McpServerInfo]:
        rows = self._db.execute("SELECT label, url, sealed, updated FROM mcp_servers WHERE tenant = ? ORDER BY label",
                                (tenant,))
        return [McpServerInfo(tenant, r[0], r[1], r[2] is not None, r[3]) for r in rows]

    def get(self, tenant: str, label: str) -> McpServerInfo:
        for s in self.list(tenant):
            if s.label == label:
                return s
        raise NotFound(f"no MCP server is registered as {label!r} for this tenant "
                       "(PUT /v1/mcp/servers/{label}, or give server_url)", details={"param": "server_label"})

    def headers(self, tenant: str, label: str) -> dict[str, str]:
        """The request headers for the registered server (the gateway's MCP path only)."""
        row = self._db.execute("SELECT sealed FROM mcp_servers WHERE tenant = ? AND label = ?", (tenant, label)).fetchone()
        if row is None or row[0] is None:
            return {}
        return {"authorization": "Bearer " + self._box.open(bytes(row[0]), f"mcp:{tenant}:{label}").decode()}

    def delete(self, tenant: str, label: str) -> None:
        if self._db.execute("DELETE FROM mcp_servers WHERE tenant = ? AND label = ?", (tenant, label)).rowcount == 0:
            raise NotFound(f"no MCP server is registered as {label!r}", details={"param": "server_label"})


__all__ = ["McpServerInfo", "McpServerRegistry", "check_label", "check_url"]
