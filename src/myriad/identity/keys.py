"""Tenants and API keys.

A key looks like ``myr_<id>_<secret>``: ``id`` (12 hex chars) finds the row, the
secret is never stored, only its SHA-256 (keys are 160 random bits, so a fast hash
is the right tool; a password hash would only add latency). Comparison is
constant-time. Keys can expire and be revoked.

``verify`` remembers the keys it accepted (no SELECT and no SHA-256 per request),
and a revocation still applies to the very next request: this store's own
``revoke_key`` / ``rotate_key`` drop the key from the cache, and a change made by
any other connection or process (``myriad keys revoke`` from a shell) changes the
file's ``PRAGMA data_version`` (and a write on this connection its
``total_changes``), which every cache hit checks (a read of SQLite's shared memory,
no I/O) and which empties the cache. Expiry is checked on every hit.

On PostgreSQL (``database`` set) the signal is a notification: a trigger on
``api_keys`` notifies every process at commit (``LISTEN`` on one connection per
process, see ``_db.py``), so a revocation anywhere reaches every machine's cache within
the notification's delivery (milliseconds). While that connection is down nothing is
cached and every ``verify`` reads the key's row; ``cached`` lets a server answer a hit
on its event loop and send only misses (a query that may wait for a database that is
down) to a thread.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from myriad.errors import AuthenticationError, Conflict, InvalidName, InvalidRequest, NotFound
from myriad.identity._db import Duplicate, IdentityDB, open_identity_db
from myriad.identity.capabilities import parse_scopes
from myriad.identity.principal import Principal

_CACHE_MAX = 10_000
"""Accepted keys remembered by ``verify`` (the cache empties when full)."""
_TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_KEY_RE = re.compile(r"^myr_([0-9a-f]{12})_([A-Za-z0-9_-]{20,64})$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (name TEXT PRIMARY KEY, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL REFERENCES tenants(name),
    hash BLOB NOT NULL,
    label TEXT NOT NULL DEFAULT '',
    scopes TEXT NOT NULL DEFAULT '*',
    created REAL NOT NULL,
    expires REAL,
    revoked REAL
);
"""


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A key as listed (never the secret)."""

    id: str
    tenant: str
    label: str
    scopes: str
    created: float
    expires: float | None
    revoked: float | None


def validate_tenant(name: str) -> str:
    if not isinstance(name, str) or not _TENANT_RE.match(name):
        raise InvalidName(
            f"invalid tenant name {name!r}: use 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit"
        )
    return name


class KeyStore:
    """Tenants and their API keys: in ``identity.db`` under the data directory, or in
    PostgreSQL when ``database`` is a ``postgresql://`` URL (shared by every process)."""

    def __init__(self, data_dir: Path, database: str | None = None, *, pool_size: int = 4,
                 connect_timeout: float = 5.0) -> None:
        self._data_dir = Path(data_dir)
        self.database = database or None
        self._options = {"pool_size": pool_size, "connect_timeout": connect_timeout} if self.database else {}
        self._db: IdentityDB | None = None
        self._verified: dict[str, tuple[Principal, float | None]] = {}
        self._data_version: object = None

    def open(self) -> None:
        if self._db is not None:  # first start opens it before the server does
            return
        db = open_identity_db(self._data_dir, self.database, **self._options)
        db.schema(_SCHEMA)
        self._db = db

    def close(self) -> None:
        self._verified.clear()
        if self._db is not None:
            self._db.close()
            self._db = None

    def _forget(self, key_id: str) -> None:
        for presented, (p, _) in list(self._verified.items()):  # a copy: verify may run in threads
            if p.key_id == key_id:
                self._verified.pop(presented, None)

    @property
    def db(self) -> IdentityDB:
        if self._db is None:
            self.open()
        assert self._db is not None
        return self._db

    # tenants
    def create_tenant(self, name: str) -> str:
        validate_tenant(name)
        try:
            self.db.execute("INSERT INTO tenants VALUES (?, ?)", (name, time.time()))
        except Duplicate:
            raise Conflict(f"tenant {name!r} already exists") from None
        return name

    def tenant_exists(self, name: str) -> bool:
        return self.db.execute("SELECT 1 FROM tenants WHERE name=?", (name,)).fetchone() is not None

    def list_tenants(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT name FROM tenants ORDER BY name")]

    # keys
    def create_key(
        self, tenant: str, *, label: str = "", ttl: float | None = None, scopes: str = "*"
    ) -> tuple[KeyInfo, str]:
        """Create a key; returns its info and the plaintext (shown once, never stored)."""
        if not self.tenant_exists(tenant):
            raise NotFound(f"tenant {tenant!r} does not exist: create it with `myriad tenants create {tenant}`")
        scopes = " ".join(sorted(parse_scopes(scopes))) or "*"
        if ttl is not None and ttl <= 0:
            raise InvalidRequest("ttl must be a positive number of seconds")
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(20)
        plaintext = f"myr_{key_id}_{secret}"
        now = time.time()
        expires = now + ttl if ttl else None
        self.db.execute(
            "INSERT INTO api_keys (id, tenant, hash, label, scopes, created, expires) VALUES (?,?,?,?,?,?,?)",
            (key_id, tenant, _hash(secret), label, scopes, now, expires),
        )
        return KeyInfo(key_id, tenant, label, scopes, now, expires, None), plaintext

    def revoke_key(self, key_id: str, tenant: str | None = None) -> None:
        q, args = "UPDATE api_keys SET revoked=? WHERE id=? AND revoked IS NULL", [time.time(), key_id]
        if tenant is not None:
            q += " AND tenant=?"
            args.append(tenant)
        self._forget(key_id)
        if self.db.execute(q, args).rowcount == 0:
            raise NotFound(f"no active key {key_id!r}")

    def get_key(self, key_id: str, tenant: str | None = None) -> KeyInfo:
        """One key's info; ``NotFound`` if it does not exist (or belongs to another tenant)."""
        row = self.db.execute(
            "SELECT id, tenant, label, scopes, created, expires, revoked FROM api_keys WHERE id=?", (key_id,)
        ).fetchone()
        if row is None or (tenant is not None and row[1] != tenant):
            raise NotFound(f"no key {key_id!r}")
        return KeyInfo(*row)

    def rotate_key(self, key_id: str, tenant: str | None = None, *, grace: float = 0.0,
                   ttl: float | None = None) -> tuple[KeyInfo, str]:
        """Replace a key by a new one with the same tenant, label and scopes.

        The old key stops working after ``grace`` seconds (at once when 0), so
        deployments can roll over without downtime. Returns the new key's info and
        plaintext."""
        if grace < 0:
            raise InvalidRequest("grace must be >= 0 seconds")
        old = self.get_key(key_id, tenant)
        now = time.time()
        if old.revoked is not None or (old.expires is not None and old.expires <= now):
            raise Conflict(f"key {key_id!r} is no longer active and cannot be rotated")
        if ttl is None and old.expires is not None:
            ttl = max(old.expires - old.created, 1.0)
        info, plaintext = self.create_key(old.tenant, label=old.label, ttl=ttl, scopes=old.scopes)
        self._forget(key_id)
        if grace > 0:
            until = now + grace if old.expires is None else min(old.expires, now + grace)
            self.db.execute("UPDATE api_keys SET expires=? WHERE id=?", (until, key_id))
        else:
            self.db.execute("UPDATE api_keys SET revoked=? WHERE id=?", (now, key_id))
        return info, plaintext

    def list_keys(self, tenant: str | None = None) -> list[KeyInfo]:
        q = "SELECT id, tenant, label, scopes, created, expires, revoked FROM api_keys"
        rows = self.db.execute(q + " WHERE tenant=? ORDER BY created", (tenant,)) if tenant else self.db.execute(q + " ORDER BY created")
        return [KeyInfo(*r) for r in rows]

    def cached(self, presented: str | None) -> Principal | None:
        """The principal of a key ``verify`` accepted and nobody changed since; None if
        ``verify`` must look (no query on either engine)."""
        hit = self._verified.get(presented) if presented else None
        if hit is None:
            return None
        version = self.db.change_token()
        if version != self._data_version:  # anyone wrote a key: forget everything we know
            self._verified.clear()
            self._data_version = version
            return None
        principal, expires = hit
        if expires is None or expires >= time.time():
            return principal
        self._verified.pop(presented, None)  # type: ignore[arg-type]
        return None

    def verify(self, presented: str | None) -> Principal:
        """The principal a presented key stands for; ``AuthenticationError`` otherwise."""
        if not presented:
            raise AuthenticationError("missing API key: send 'Authorization: Bearer <key>' (or ?token=<key> on a WebSocket)")
        hit = self.cached(presented)
        if hit is not None:
            return hit
        m = _KEY_RE.match(presented)
        if not m:
            raise AuthenticationError("malformed API key")
        key_id, secret = m.groups()
        if not self._verified:
            self._data_version = self.db.change_token()
        row = self.db.execute(
            "SELECT tenant, hash, scopes, expires, revoked FROM api_keys WHERE id=?", (key_id,)
        ).fetchone()
        # Compare even when the row is missing, so timing does not tell ids apart.
        stored = row[1] if row else b"\0" * 32
        ok = hmac.compare_digest(stored, _hash(secret))
        if not row or not ok:
            raise AuthenticationError("invalid API key")
        tenant, _, scopes, expires, revoked = row
        if revoked is not None:
            raise AuthenticationError("API key has been revoked")
        if expires is not None and expires < time.time():
            raise AuthenticationError("API key has expired")
        principal = Principal(tenant=tenant, key_id=key_id, scopes=frozenset(scopes.split()))
        if self._data_version is None:  # no cheap way to see other processes' writes: never cache
            return principal
        if len(self._verified) >= _CACHE_MAX:
            self._verified.clear()
        self._verified[presented] = (principal, expires)
        return principal


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


__all__ = ["KeyStore", "Principal", "KeyInfo", "validate_tenant"]
