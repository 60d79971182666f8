"""RFC 9421 signatures checked by an independent verifier: the ``http-message-signatures``
package (PyPI), given only the public key from our directory."""

import base64
from dataclasses import dataclass

import pytest
from http_message_signatures import HTTPMessageVerifier, InvalidSignature, MappingKeyResolver, algorithms

from myriad.errors import AuthenticationError
from myriad.identity import NonceCache, verify_request
from myriad.identity.jose import load_public_jwk


@dataclass
class Req:
    method: str
    url: str
    headers: dict


def independent_verify(identity, method, url, headers, agent_component='"signature-agent";key="sig1"'):
    directory, _ = identity.signer.directory("myriad.test")
    keys = {k["kid"]: load_public_jwk(k) for k in directory["keys"]}
    verifier = HTTPMessageVerifier(signature_algorithm=algorithms.ED25519,
                                   key_resolver=MappingKeyResolver(public_keys=keys, private_keys={}))
    return verifier.verify(Req(method, url, headers), expect_tag="web-bot-auth",
                           require_components=("@authority", agent_component))


def test_signed_request_verifies_independently_and_tampering_fails(identity):
    url = "https://api.example.com:8443/v1/repos?x=1"
    headers = identity.signer.sign("POST", url, {"content-type": "application/json"})
    assert headers["signature-agent"] == 'sig1="http://127.0.0.1:8787"'
    assert '"signature-agent";key="sig1"' in headers["signature-input"]
    assert 'tag="web-bot-auth"' in headers["signature-input"] and 'alg="ed25519"' in headers["signature-input"]
    [result] = independent_verify(identity, "POST", url, headers)
    assert result.parameters["tag"] == "web-bot-auth"
    assert result.parameters["keyid"] == identity.signer.ring.current().kid
    # Only the sig1 member is covered: another member may be added by someone else (RFC 9421 2.1.2).
    both = {**headers, "signature-agent": 'sig0="https://other.example", sig1="http://127.0.0.1:8787"'}
    assert independent_verify(identity, "POST", url, both)
    keys = {k["kid"]: k for k in identity.signer.ring.published()}
    verify_request("POST", url, both, keys)
    for method, u, h in [
        ("GET", url, headers),  # method changed
        ("POST", "https://evil.example.com:8443/v1/repos", headers),  # authority changed
        ("POST", url, {**headers, "signature-agent": 'sig1="https://evil.example"'}),
    ]:
        with pytest.raises(InvalidSignature):
            independent_verify(identity, method, u, h)


def test_legacy_bare_string_agent_also_verifies_independently(identity):
    identity.signer.legacy_agent = True
    url = "https://api.example.com/x"
    headers = identity.signer.sign("GET", url, {})
    assert headers["signature-agent"] == '"http://127.0.0.1:8787"'
    [result] = independent_verify(identity, "GET", url, headers, agent_component="signature-agent")
    assert result.parameters["tag"] == "web-bot-auth"


def test_our_verifier_refuses_replays_expiry_and_unknown_keys(identity, clock):
    url = "http://127.0.0.1:9/x"
    headers = identity.signer.sign("GET", url, {})
    keys = {k["kid"]: k for k in identity.signer.ring.published()}
    nonces = NonceCache()
    verify_request("GET", url, headers, keys, nonces=nonces, now=clock.now)
    with pytest.raises(AuthenticationError, match="replay"):
        verify_request("GET", url, headers, keys, nonces=nonces, now=clock.now)
    with pytest.raises(AuthenticationError, match="expired"):
        verify_request("GET", url, headers, keys, now=clock.now + 120)
    with pytest.raises(AuthenticationError, match="directory"):
        verify_request("GET", url, headers, {}, now=clock.now)
    sig = headers["signature"]
    bad = sig[:6] + ("A" if sig[6] != "A" else "B") + sig[7:]
    with pytest.raises(AuthenticationError, match="does not verify"):
        verify_request("GET", url, {**headers, "signature": bad}, keys, now=clock.now)


def test_directory_lists_rotated_keys_and_is_signed(identity):
    old = identity.signer.ring.current()
    identity.signer.ring.rotate()
    body, headers = identity.signer.directory("myriad.test")
    kids = [k["kid"] for k in body["keys"]]
    assert old.kid in kids and len(kids) == 2 and all(set(k) <= {"kty", "crv", "x", "kid", "alg", "use"} for k in body["keys"])
    assert headers["content-type"] == "application/http-message-signatures-directory+json"
    # Check each binding signature from the RFC 9421 base by hand: "@authority";req + params.
    inputs = dict(p.split("=", 1) for p in headers["signature-input"].split(", "))
    sigs = dict(p.split("=", 1) for p in headers["signature"].split(", "))
    for label, params in inputs.items():
        assert 'tag="http-message-signatures-directory"' in params
        kid = params.split('keyid="')[1].split('"')[0]
        base = f'"@authority";req: myriad.test\n"@signature-params": {params}'.encode()
        jwk = next(k for k in body["keys"] if k["kid"] == kid)
        load_public_jwk(jwk).verify(base64.b64decode(sigs[label].strip(":")), base)
