"""Rotating Ed25519 signing keys that stay verifiable until their tokens expire.

A ``KeyRing`` holds the keys of one purpose (``"jwt"`` for the tokens Myriad mints,
``"httpsig"`` for signed outbound requests). The newest key signs for
``rotation`` seconds; then a new one takes over on the next use. A retired key
stays *published* (in the JWKS) for ``max_ttl`` more seconds, the longest life of
anything it signed, and then disappears. Private keys are sealed with the identity
secret key; ``kid`` is the key's RFC 7638 thumbprint.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from myriad.identity._box import SecretBox
from myriad.identity._db import IdentityDB
from myriad.identity.jose import jwk_thumbprint, load_public_jwk, public_jwk

CACHE_TTL = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS signing_keys (
    kid TEXT PRIMARY KEY,
    purpose TEXT NOT NULL,
    sealed BLOB NOT NULL,
    jwk TEXT NOT NULL,
    created REAL NOT NULL,
    sign_until REAL NOT NULL,
    publish_until REAL NOT NULL
);
"""


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private: ed25519.Ed25519PrivateKey
    jwk: dict[str, Any]
    sign_until: float
    publish_until: float


class KeyRing:
    """The signing keys of one purpose, in the identity database."""

    def __init__(self, db: IdentityDB, box: SecretBox, *, purpose: str, rotation: float,
                 max_ttl: float, clock: Callable[[], float] = time.time) -> None:
        self._db, self._box, self.purpose = db, box, purpose
        self.rotation, self.max_ttl, self._clock = rotation, max_ttl, clock
        self._lock = threading.Lock()
        self._cache: dict[str, SigningKey] = {}
        self._public_cache: dict[str, tuple[dict[str, Any], Any, float, float]] = {}
        db.schema(_SCHEMA)

    def current(self) -> SigningKey:
        """The key that signs now (created if there is none or the last one retired)."""
        now = self._clock()
        with self._lock:
            row = self._db.execute(
                "SELECT kid FROM signing_keys WHERE purpose=? AND sign_until>? ORDER BY created DESC LIMIT 1",
                (self.purpose, now)).fetchone()
            if row:
                return self._load(row[0])
            return self._create(now)

    def rotate(self) -> SigningKey:
        """Retire the signing key now (it stays published for ``max_ttl``) and start a new one."""
        now = self._clock()
        with self._lock:
            self._db.execute(
                "UPDATE signing_keys SET sign_until=?, publish_until=? WHERE purpose=? AND sign_until>?",
                (now, now + self.max_ttl, self.purpose, now))
            self._cache.clear()
            self._public_cache.clear()
            return self._create(now)

    def published(self) -> list[dict[str, Any]]:
        """Public JWKs of every key whose signatures may still be alive, newest first."""
        self.current()
        rows = self._db.execute(
            "SELECT jwk FROM signing_keys WHERE purpose=? AND publish_until>? ORDER BY created DESC",
            (self.purpose, self._clock()))
        return [json.loads(r[0]) for r in rows]

    def public(self, kid: str) -> dict[str, Any] | None:
        """The published JWK with this ``kid`` (``None`` once retired past its tokens' lives)."""
        found = self.public_key(kid)
        return found[0] if found else None

    def public_key(self, kid: str) -> tuple[dict[str, Any], Any] | None:
        """The published JWK with this ``kid`` and its loaded public key. Cached for at most
        ``CACHE_TTL`` seconds (another process may retire a key early with ``rotate``)."""
        now = self._clock()
        hit = self._public_cache.get(kid)
        if hit is not None and hit[2] > now and hit[3] > now:
            return hit[0], hit[1]
        row = self._db.execute(
            "SELECT jwk, publish_until FROM signing_keys WHERE purpose=? AND kid=? AND publish_until>?",
            (self.purpose, kid, now)).fetchone()
        if row is None:
            self._public_cache.pop(kid, None)
            return None
        jwk = json.loads(row[0])
        entry = (jwk, load_public_jwk(jwk), row[1], now + CACHE_TTL)
        if len(self._public_cache) > 1000:
            self._public_cache.clear()
        self._public_cache[kid] = entry
        return entry[0], entry[1]

    def _create(self, now: float) -> SigningKey:
        private = ed25519.Ed25519PrivateKey.generate()
        jwk = public_jwk(private)
        kid = jwk_thumbprint(jwk)
        jwk.update(kid=kid, alg="EdDSA", use="sig")
        raw = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        sign_until = now + self.rotation
        self._db.execute(
            "INSERT INTO signing_keys VALUES (?,?,?,?,?,?,?)",
            (kid, self.purpose, self._box.seal(raw, f"signing-key|{self.purpose}|{kid}"), json.dumps(jwk),
             now, sign_until, sign_until + self.max_ttl))
        key = SigningKey(kid, private, jwk, sign_until, sign_until + self.max_ttl)
        self._cache[kid] = key
        return key

    def _load(self, kid: str) -> SigningKey:
        key = self._cache.get(kid)
        if key is not None:
            return key
        sealed, jwk, sign_until, publish_until = self._db.execute(
            "SELECT sealed, jwk, sign_until, publish_until FROM signing_keys WHERE kid=?", (kid,)).fetchone()
        raw = self._box.open(sealed, f"signing-key|{self.purpose}|{kid}")
        key = SigningKey(kid, ed25519.Ed25519PrivateKey.from_private_bytes(raw), json.loads(jwk), sign_until, publish_until)
        self._cache[kid] = key
        return key


__all__ = ["KeyRing", "SigningKey"]
