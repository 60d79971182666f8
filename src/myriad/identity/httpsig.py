"""HTTP Message Signatures (RFC 9421) with Ed25519, in the Web Bot Auth profile.

Outbound agent requests carry (the Web Bot Auth working-group draft's dictionary form)::

    Signature-Agent: sig1="https://myriad.example"
    Signature-Input: sig1=("@authority" "@method" "@path" "signature-agent";key="sig1");created=..;
                     expires=..;keyid="<JWK thumbprint>";alg="ed25519";nonce="..";tag="web-bot-auth"
    Signature: sig1=:<base64 Ed25519 signature>:

``legacy_agent=True`` emits the older bare-string form (``Signature-Agent: "https://..."``
covered as ``"signature-agent"``) that some verifiers still document.

and the keys are published as a JWKS at ``/.well-known/http-message-signatures-directory``
(``application/http-message-signatures-directory+json``), whose response is itself
signed with ``tag="http-message-signatures-directory"``. ``verify_request`` is the
receiving side (used by tests and by anyone embedding Myriad as a receiver); it
refuses expired signatures and replayed nonces.
"""

from __future__ import annotations

import base64
import re
import secrets
import time
from collections import OrderedDict
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature

from myriad.errors import AuthenticationError
from myriad.identity.jose import load_public_jwk
from myriad.identity.keyring import KeyRing

TAG = "web-bot-auth"
DIRECTORY_TAG = "http-message-signatures-directory"
DIRECTORY_PATH = "/.well-known/http-message-signatures-directory"
DIRECTORY_MEDIA_TYPE = "application/http-message-signatures-directory+json"
COMPONENTS = ('"@authority"', '"@method"', '"@path"', '"signature-agent";key="sig1"')
LEGACY_COMPONENTS = ('"@authority"', '"@method"', '"@path"', '"signature-agent"')
_ITEM_RE = re.compile(r'"([^"]+)"((?:;[a-z][a-z0-9_-]*(?:=(?:"[^"]*"|[^\s;"()]+))?)*)')
_DICT_MEMBER_RE = re.compile(r'\s*([a-z*][a-z0-9_.*-]*)\s*=\s*("(?:[^"\\]|\\.)*")\s*(?:;[^,]*)?')
_DEFAULT_PORTS = {"http": 80, "https": 443}


def authority(url: str) -> str:
    """RFC 9421 ``@authority``: lowercase host, port only when not the scheme's default."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    return host if port is None or port == _DEFAULT_PORTS.get(parts.scheme) else f"{host}:{port}"


def _component(item: str, method: str, url: str, headers: Mapping[str, str]) -> str:
    """The value of one covered component (``item`` as written in Signature-Input)."""
    m = _ITEM_RE.fullmatch(item)
    if not m:
        raise AuthenticationError(f"unsupported covered component {item[:40]!r}")
    name, params = m.group(1), dict(_PARAM_RE.findall(m.group(2)))
    if name.startswith("@") and m.group(2):
        raise AuthenticationError(f"unsupported covered component {item[:40]!r}")
    if name == "@authority" and not params:
        return authority(url)
    if name == "@method" and not params:
        return method.upper()
    if name == "@path" and not params:
        return urlsplit(url).path or "/"
    if name.startswith("@") or set(params) - {"key"}:
        raise AuthenticationError(f"unsupported covered component {item[:40]!r}")
    value = headers.get(name)
    if value is None:
        raise AuthenticationError(f"signed component {name!r} is missing from the message")
    if "key" in params:  # a member of a Dictionary field, re-serialized (RFC 9421 section 2.1.2)
        wanted = params["key"].strip('"')
        for member in _split_members(value):
            mm = _DICT_MEMBER_RE.fullmatch(member)
            if mm and mm.group(1) == wanted:
                return mm.group(2)
        raise AuthenticationError(f"signed component {name!r} has no member {wanted!r}")
    return value.strip()


def _split_members(value: str) -> list[str]:
    out, depth, start, quoted = [], 0, 0, False
    for i, ch in enumerate(value):
        if ch == '"' and (i == 0 or value[i - 1] != "\\"):
            quoted = not quoted
        elif ch == "," and not quoted and depth == 0:
            out.append(value[start:i])
            start = i + 1
    out.append(value[start:])
    return [m.strip() for m in out if m.strip()]


def _params(components: Iterable[str], params: Mapping[str, Any]) -> str:
    out = "(" + " ".join(components) + ")"
    for k, v in params.items():
        out += f";{k}={v}" if isinstance(v, int) else f';{k}="{v}"'
    return out


def signature_base(method: str, url: str, headers: Mapping[str, str], components: Iterable[str],
                   params_text: str) -> bytes:
    lines = [f"{c}: {_component(c, method, url, headers)}" for c in components]
    lines.append(f'"@signature-params": {params_text}')
    return "\n".join(lines).encode()


class RequestSigner:
    """Signs outbound requests with the ``httpsig`` key ring."""

    def __init__(self, ring: KeyRing, signature_agent: str, *, validity: float = 60.0,
                 clock: Callable[[], float] = time.time, legacy_agent: bool = False) -> None:
        self.ring, self.signature_agent, self.validity, self._clock = ring, signature_agent, validity, clock
        self.legacy_agent = legacy_agent

    def sign(self, method: str, url: str, headers: dict[str, str]) -> dict[str, str]:
        """Add ``Signature-Agent``, ``Signature-Input`` and ``Signature`` to ``headers``
        (lowercase names) and return them."""
        key = self.ring.current()
        if self.legacy_agent:
            headers["signature-agent"], components = f'"{self.signature_agent}"', LEGACY_COMPONENTS
        else:
            headers["signature-agent"], components = f'sig1="{self.signature_agent}"', COMPONENTS
        created = int(self._clock())
        params_text = _params(components, {"created": created, "expires": created + int(self.validity),
                                           "keyid": key.kid, "alg": "ed25519",
                                           "nonce": secrets.token_urlsafe(48), "tag": TAG})
        base = signature_base(method, url, headers, components, params_text)
        signature = base64.b64encode(key.private.sign(base)).decode()
        headers["signature-input"] = f"sig1={params_text}"
        headers["signature"] = f"sig1=:{signature}:"
        return headers

    def directory(self, request_authority: str) -> tuple[dict[str, Any], dict[str, str]]:
        """The key directory body and its signature headers (one signature per published key)."""
        keys = self.ring.published()
        body = {"keys": [{k: v for k, v in jwk.items() if k in ("kty", "crv", "x", "kid", "alg", "use")} for jwk in keys]}
        created = int(self._clock())
        inputs, sigs = [], []
        for i, jwk in enumerate(keys):
            key = self.ring._load(jwk["kid"])  # noqa: SLF001 - the ring's own keys
            params_text = _params(['"@authority";req'], {"created": created, "expires": created + 300,
                                                               "keyid": jwk["kid"], "alg": "ed25519",
                                                               "tag": DIRECTORY_TAG})
            base = f'"@authority";req: {request_authority}\n"@signature-params": {params_text}'.encode()
            inputs.append(f"binding{i}={params_text}")
            sigs.append(f"binding{i}=:{base64.b64encode(key.private.sign(base)).decode()}:")
        return body, {"signature-input": ", ".join(inputs), "signature": ", ".join(sigs),
                      "content-type": DIRECTORY_MEDIA_TYPE, "cache-control": "max-age=300"}


_INPUT_RE = re.compile(r'^([a-z][a-z0-9_-]*)=\(([^)]*)\)((?:;[a-z]+=(?:"[^"]*"|\d+))*)$')
_PARAM_RE = re.compile(r';([a-z]+)=("[^"]*"|\d+)')


class NonceCache:
    """Remembers nonces until their signatures expire, to refuse replays."""

    def __init__(self, limit: int = 100_000) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()
        self.limit = limit

    def check_and_add(self, nonce: str, expires: float, now: float) -> bool:
        while self._seen and (next(iter(self._seen.values())) < now or len(self._seen) > self.limit):
            self._seen.popitem(last=False)
        if nonce in self._seen:
            return False
        self._seen[nonce] = expires
        return True


def verify_request(method: str, url: str, headers: Mapping[str, str], keys: Mapping[str, Mapping[str, Any]], *,
                   nonces: NonceCache | None = None, now: float | None = None, tag: str = TAG) -> dict[str, Any]:
    """Verify a Web Bot Auth signature; ``keys`` maps ``keyid`` to a JWK. Returns the
    signature parameters; ``AuthenticationError`` names what failed."""
    now = time.time() if now is None else now
    lower = {k.lower(): v for k, v in headers.items()}
    raw_input, raw_sig = lower.get("signature-input"), lower.get("signature")
    if not raw_input or not raw_sig:
        raise AuthenticationError("request is not signed")
    m = _INPUT_RE.match(raw_input.strip())
    if not m:
        raise AuthenticationError("Signature-Input is malformed or has more than one signature")
    label, comps, params_part = m.groups()
    components = [c.group(0) for c in _ITEM_RE.finditer(comps)]
    params = {k: (v.strip('"') if v.startswith('"') else int(v)) for k, v in _PARAM_RE.findall(params_part)}
    if params.get("tag") != tag:
        raise AuthenticationError(f"signature tag is not {tag!r}")
    names = {_ITEM_RE.fullmatch(c).group(1) for c in components}  # type: ignore[union-attr]
    if "@authority" not in names or ("signature-agent" in lower and "signature-agent" not in names):
        raise AuthenticationError("signature does not cover @authority and signature-agent")
    created, expires = params.get("created"), params.get("expires")
    if not isinstance(created, int) or not isinstance(expires, int) or created > now + 5 or expires < now:
        raise AuthenticationError("signature is expired or not yet valid")
    jwk = keys.get(str(params.get("keyid")))
    if jwk is None:
        raise AuthenticationError("signature key is not in the signer's directory")
    sm = re.match(rf"^{re.escape(label)}=:([A-Za-z0-9+/=]+):$", raw_sig.strip())
    if not sm:
        raise AuthenticationError("Signature header does not match Signature-Input")
    base = signature_base(method, url, lower, components, f"({comps}){params_part}")
    try:
        load_public_jwk(jwk).verify(base64.b64decode(sm.group(1)), base)
    except (InvalidSignature, ValueError):
        raise AuthenticationError("signature does not verify") from None
    if nonces is not None:
        nonce = params.get("nonce")
        if not isinstance(nonce, str) or not nonces.check_and_add(nonce, expires, now):
            raise AuthenticationError("signature nonce was already used (replay)")
    return params


__all__ = ["COMPONENTS", "LEGACY_COMPONENTS", "DIRECTORY_MEDIA_TYPE", "DIRECTORY_PATH", "NonceCache", "RequestSigner", "TAG",
           "authority", "verify_request"]
