"""The credential vault: users' secrets and OAuth tokens for outside services.

A credential belongs to ``(tenant, user, provider)``, is sealed with AES-256-GCM
(bound to its row by associated data) and carries the host patterns it may be sent
to and how it is sent (header name and prefix). Nothing here hands a secret to a
caller: only the outbound path (``myriad.identity.outbound``, used by the egress
proxy and the tool layer) opens one, to put it in a request to a matching host.
Listing shows metadata and a fingerprint, never the value.

``Redactor`` remembers every secret the process has opened and scrubs them from
text (log records, error messages, span attributes).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from myriad.errors import InvalidRequest, NotFound
from myriad.identity._box import SecretBox
from myriad.identity._db import IdentityDB
from myriad.identity.capabilities import MATCHERS

_SCHEMA = """
CREATE TABLE IF NOT EXISTS credentials (
    tenant TEXT NOT NULL,
    user TEXT NOT NULL,
    provider TEXT NOT NULL,
    sealed BLOB NOT NULL,
    domains TEXT NOT NULL,
    header TEXT NOT NULL,
    prefix TEXT NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (tenant, user, provider)
);
"""
_PROVIDER_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_HEADER_RE = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_DOMAIN_RE = re.compile(r"^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")
REDACTED = "[REDACTED]"


@dataclass(frozen=True)
class CredentialInfo:
    """A credential as listed: never the secret, only a short fingerprint."""

    tenant: str
    user: str
    provider: str
    domains: list[str]
    header: str
    fingerprint: str
    updated: float

    def to_json(self) -> dict[str, Any]:
        return {"provider": self.provider, "user": self.user, "domains": self.domains, "header": self.header,
                "fingerprint": self.fingerprint, "updated": self.updated}


@dataclass(frozen=True)
class Injection:
    """A header to add to one outbound request (what the vault lends, never returns)."""

    provider: str
    header: str
    value: str


class Redactor:
    """Scrubs known secrets from text. Thread-safe; secrets shorter than 8 characters are ignored."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, secret: str) -> None:
        if len(secret) >= 8 and secret not in self._secrets:
            with self._lock:
                self._secrets.add(secret)
                self._pattern = re.compile("|".join(re.escape(s) for s in sorted(self._secrets, key=len, reverse=True)))

    def redact(self, text: str) -> str:
        pattern = self._pattern
        return pattern.sub(REDACTED, text) if pattern is not None and text else text

    def logging_filter(self) -> logging.Filter:
        """A filter that rewrites records' messages with secrets scrubbed."""
        redactor = self

        class _Filter(logging.Filter):
            def filter(self, record: logging.LogRecord) -> bool:
                message = record.getMessage()
                clean = redactor.redact(message)
                if clean != message:
                    record.msg, record.args = clean, None
                return True

        return _Filter()


class CredentialVault:
    """Sealed credentials in the identity database."""

    def __init__(self, db: IdentityDB, box: SecretBox, redactor: Redactor | None = None) -> None:
        self._db, self._box = db, box
        self.redactor = redactor or Redactor()
        db.schema(_SCHEMA)

    def put(self, tenant: str, user: str, provider: str, secret: str, *, domains: list[str],
            header: str = "authorization", prefix: str = "Bearer ") -> CredentialInfo:
        """Store (or replace) a credential. ``domains`` are host patterns (``api.example.com``,
        ``*.example.com``) it may be sent to; it goes in ``header`` as ``prefix + secret``."""
        if not isinstance(provider, str) or not _PROVIDER_RE.match(provider):
            raise InvalidRequest("provider must be 1-63 lowercase letters, digits, '.', '-' or '_'", details={"param": "provider"})
        if not isinstance(user, str) or not 0 < len(user) <= 255:
            raise InvalidRequest("user must be a non-empty string", details={"param": "user"})
        if not isinstance(secret, str) or not secret or len(secret) > 16384 or "\n" in secret or "\r" in secret:
            raise InvalidRequest("secret must be a non-empty single-line string (at most 16 KiB)", details={"param": "secret"})
        if not isinstance(domains, list) or not domains or not all(isinstance(d, str) and _DOMAIN_RE.match(d.lower()) for d in domains):
            raise InvalidRequest("domains must be a non-empty list of host names or *.suffix patterns (no bare '*')",
                                 details={"param": "domains"})
        if not isinstance(header, str) or not _HEADER_RE.match(header) or not isinstance(prefix, str) or len(prefix) > 32:
            raise InvalidRequest("header must be a header name and prefix a short string", details={"param": "header"})
        domains = sorted({d.lower() for d in domains})
        now = time.time()
        self._db.execute(
            "INSERT INTO credentials VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (tenant, \"user\", provider) DO UPDATE SET"
            " sealed=excluded.sealed, domains=excluded.domains, header=excluded.header, prefix=excluded.prefix,"
            " updated=excluded.updated",
            (tenant, user, provider, self._box.seal((prefix + secret).encode(), _aad(tenant, user, provider)),
             json.dumps(domains), header.lower(), "", now))
        return CredentialInfo(tenant, user, provider, domains, header.lower(), _fingerprint(prefix + secret), now)

    def credentials(self, tenant: str, user: str | None = None) -> list[CredentialInfo]:
        q = 'SELECT tenant, "user", provider, sealed, domains, header, updated FROM credentials WHERE tenant=?'
        args: list[Any] = [tenant]
        if user is not None:
            q += ' AND "user"=?'
            args.append(user)
        out = []
        for t, u, p, sealed, domains, header, updated in self._db.execute(q + ' ORDER BY "user", provider', args):
            value = self._box.open(sealed, _aad(t, u, p)).decode()
            out.append(CredentialInfo(t, u, p, json.loads(domains), header, _fingerprint(value), updated))
        return out

    def delete(self, tenant: str, user: str, provider: str) -> None:
        cur = self._db.execute('DELETE FROM credentials WHERE tenant=? AND "user"=? AND provider=?', (tenant, user, provider))
        if cur.rowcount == 0:
            raise NotFound(f"no credential {provider!r} for this user")

    def injections_for(self, tenant: str, user: str, host: str) -> list[Injection]:
        """The headers to add to a request from (tenant, user) to ``host``. For the
        outbound path only; callers decide (by scope) whether to use them."""
        out = []
        rows = self._db.execute('SELECT provider, sealed, domains, header FROM credentials WHERE tenant=? AND "user"=?',
                                (tenant, user))
        for provider, sealed, domains, header in rows:
            if any(MATCHERS["egress"](d, host) for d in json.loads(domains)):
                value = self._box.open(sealed, _aad(tenant, user, provider)).decode()
                self.redactor.add(value)
                self.redactor.add(value.split(" ", 1)[-1])
                out.append(Injection(provider, header, value))
        return out


def _aad(tenant: str, user: str, provider: str) -> str:
    return f"credential|{tenant}|{user}|{provider}"


def _fingerprint(value: str) -> str:
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:12]


__all__ = ["CredentialInfo", "CredentialVault", "Injection", "REDACTED", "Redactor"]
