"""A small, strict JWS/JWT and JWK implementation on ``cryptography``.

Only what Myriad needs: compact JWS with ``EdDSA`` (Ed25519, what Myriad signs
with), ``ES256`` and ``RS256`` (what identity providers commonly sign users' tokens
with). Algorithms are a registry keyed by the JOSE ``alg`` name; ``none`` and HMAC
are deliberately absent, and a key only verifies the algorithm its JWK type allows,
so algorithm confusion has nowhere to go.

Every failure is an ``AuthenticationError`` whose message names the problem but
never echoes the token.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any, Mapping, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from myriad import safe_json
from myriad.errors import AuthenticationError, InvalidRequest

MAX_TOKEN_BYTES = 16 * 1024


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    if not isinstance(text, str):
        raise ValueError("not a string")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Algorithm(Protocol):
    """One JWS algorithm: which JWK key type it uses, how it signs and verifies."""

    kty: str

    def sign(self, key: Any, data: bytes) -> bytes: ...

    def verify(self, key: Any, data: bytes, signature: bytes) -> bool: ...


class _EdDSA:
    kty = "OKP"

    def sign(self, key: Any, data: bytes) -> bytes:
        return key.sign(data)  # type: ignore[no-any-return]

    def verify(self, key: Any, data: bytes, signature: bytes) -> bool:
        if not isinstance(key, ed25519.Ed25519PublicKey):
            return False
        try:
            key.verify(signature, data)
            return True
        except InvalidSignature:
            return False


class _ES256:
    kty = "EC"

    def sign(self, key: Any, data: bytes) -> bytes:
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def verify(self, key: Any, data: bytes, signature: bytes) -> bool:
        if not isinstance(key, ec.EllipticCurvePublicKey) or len(signature) != 64:
            return False
        der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
        try:
            key.verify(der, data, ec.ECDSA(hashes.SHA256()))
            return True
        except InvalidSignature:
            return False


class _RS256:
    kty = "RSA"

    def sign(self, key: Any, data: bytes) -> bytes:
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[no-any-return]

    def verify(self, key: Any, data: bytes, signature: bytes) -> bool:
        if not isinstance(key, rsa.RSAPublicKey) or key.key_size < 2048:
            return False
        try:
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
            return True
        except InvalidSignature:
            return False


ALGORITHMS: dict[str, Algorithm] = {"EdDSA": _EdDSA(), "Ed25519": _EdDSA(), "ES256": _ES256(), "RS256": _RS256()}
"""``Ed25519`` is RFC 9864's name for what ``EdDSA`` meant with an Ed25519 key."""


# -- JWK ---------------------------------------------------------------------------

def public_jwk(key: Any, kid: str | None = None) -> dict[str, Any]:
    """The public JWK of a (private or public) Ed25519, P-256 or RSA key."""
    if hasattr(key, "public_key"):
        key = key.public_key()
    if isinstance(key, ed25519.Ed25519PublicKey):
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        jwk: dict[str, Any] = {"kty": "OKP", "crv": "Ed25519", "x": b64url(key.public_bytes(Encoding.Raw, PublicFormat.Raw))}
    elif isinstance(key, ec.EllipticCurvePublicKey):
        n = key.public_numbers()
        jwk = {"kty": "EC", "crv": "P-256", "x": b64url(n.x.to_bytes(32, "big")), "y": b64url(n.y.to_bytes(32, "big"))}
    elif isinstance(key, rsa.RSAPublicKey):
        rn = key.public_numbers()
        jwk = {"kty": "RSA", "n": b64url(_int_bytes(rn.n)), "e": b64url(_int_bytes(rn.e))}
    else:
        raise TypeError(f"unsupported key type {type(key).__name__}")
    if kid is not None:
        jwk["kid"] = kid
    return jwk


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint, base64url (the Web Bot Auth ``keyid``)."""
    required = {"OKP": ("crv", "kty", "x"), "EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n")}[jwk["kty"]]
    canonical = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode()).digest())


def load_public_jwk(jwk: Mapping[str, Any]) -> Any:
    """A ``cryptography`` public key from a JWK; ``ValueError`` if unsupported or malformed."""
    kty = jwk.get("kty")
    try:
        if kty == "OKP" and jwk.get("crv") == "Ed25519":
            return ed25519.Ed25519PublicKey.from_public_bytes(b64url_decode(jwk["x"]))
        if kty == "EC" and jwk.get("crv") == "P-256":
            x, y = (int.from_bytes(b64url_decode(jwk[c]), "big") for c in ("x", "y"))
            return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
        if kty == "RSA":
            n, e = (int.from_bytes(b64url_decode(jwk[c]), "big") for c in ("n", "e"))
            return rsa.RSAPublicNumbers(e, n).public_key()
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"malformed {kty} JWK: {exc}") from None
    raise ValueError(f"unsupported JWK type {kty!r}")


def _int_bytes(n: int) -> bytes:
    return n.to_bytes((n.bit_length() + 7) // 8 or 1, "big")


# -- JWS / JWT ---------------------------------------------------------------------

def encode(claims: Mapping[str, Any], key: Any, *, alg: str = "EdDSA", kid: str | None = None,
           typ: str = "JWT") -> str:
    """Sign ``claims`` as a compact JWS."""
    header: dict[str, Any] = {"alg": alg, "typ": typ}
    if kid:
        header["kid"] = kid
    signing_input = (b64url(_json(header)) + "." + b64url(_json(claims))).encode("ascii")
    return signing_input.decode("ascii") + "." + b64url(ALGORITHMS[alg].sign(key, signing_input))


@dataclass(frozen=True)
class Unverified:
    """A parsed but not yet verified token."""

    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes

    @property
    def kid(self) -> str | None:
        kid = self.header.get("kid")
        return kid if isinstance(kid, str) else None


def parse(token: str) -> Unverified:
    """Split and decode a compact JWS; ``AuthenticationError`` if it is not one."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_BYTES:
        raise AuthenticationError("malformed token")
    parts = token.split(".")
    if len(parts) != 3:
        raise AuthenticationError("malformed token: not a compact JWS")
    try:
        header = safe_json.loads(b64url_decode(parts[0]), "token header")
        claims = safe_json.loads(b64url_decode(parts[1]), "token claims")
        signature = b64url_decode(parts[2])
    except (ValueError, UnicodeDecodeError, InvalidRequest):
        raise AuthenticationError("malformed token: bad base64url or JSON") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise AuthenticationError("malformed token: header and claims must be JSON objects")
    if not isinstance(header.get("alg"), str) or header["alg"] not in ALGORITHMS:
        raise AuthenticationError(f"token algorithm {str(header.get('alg'))[:20]!r} is not accepted")
    if "crit" in header:
        raise AuthenticationError("token has critical header parameters this server does not understand")
    return Unverified(header, claims, f"{parts[0]}.{parts[1]}".encode("ascii"), signature)


def verify_signature(token: Unverified, jwk: Mapping[str, Any]) -> None:
    """Check the signature with one JWK (whose type must fit the token's ``alg``)."""
    algorithm = ALGORITHMS[token.header["alg"]]
    alg = token.header["alg"]
    if jwk.get("kty") != algorithm.kty or jwk.get("alg", alg) not in (alg, *_SAME.get(alg, ())):
        raise AuthenticationError("token signature does not verify")
    try:
        key = load_public_jwk(jwk)
    except ValueError:
        raise AuthenticationError("token signature does not verify") from None
    if not algorithm.verify(key, token.signing_input, token.signature):
        raise AuthenticationError("token signature does not verify")


_SAME = {"EdDSA": ("Ed25519",), "Ed25519": ("EdDSA",)}


def verify_with_key(token: Unverified, jwk: Mapping[str, Any], key: Any) -> None:
    """``verify_signature`` with the public key already loaded from ``jwk`` (hot path)."""
    alg = token.header["alg"]
    algorithm = ALGORITHMS[alg]
    if jwk.get("kty") != algorithm.kty or jwk.get("alg", alg) not in (alg, *_SAME.get(alg, ())):
        raise AuthenticationError("token signature does not verify")
    if not algorithm.verify(key, token.signing_input, token.signature):
        raise AuthenticationError("token signature does not verify")


def check_times(claims: Mapping[str, Any], *, now: float | None = None, leeway: float = 30.0) -> None:
    """``exp`` is required and must be in the future; ``nbf``/``iat`` must not be."""
    now = time.time() if now is None else now
    exp = claims.get("exp")
    if not isinstance(exp, (int, float)) or isinstance(exp, bool):
        raise AuthenticationError("token has no numeric 'exp' claim")
    if exp + leeway < now:
        raise AuthenticationError("token has expired")
    for name in ("nbf", "iat"):
        value = claims.get(name)
        if value is not None and (not isinstance(value, (int, float)) or value - leeway > now):
            raise AuthenticationError(f"token is not valid yet ('{name}' is in the future)")


def audiences(claims: Mapping[str, Any]) -> list[str]:
    aud = claims.get("aud")
    if isinstance(aud, str):
        return [aud]
    if isinstance(aud, list):
        return [a for a in aud if isinstance(a, str)]
    return []


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


__all__ = [
    "ALGORITHMS", "Algorithm", "Unverified", "audiences", "b64url", "b64url_decode", "check_times", "encode",
    "jwk_thumbprint", "load_public_jwk", "parse", "public_jwk", "verify_signature", "verify_with_key",
]
