"""Our JOSE against an independent implementation (joserfc), both directions."""

import warnings

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey

from myriad.errors import AuthenticationError
from myriad.identity import jose


@pytest.mark.parametrize("alg,make", [
    ("EdDSA", lambda: OKPKey.generate_key("Ed25519")),
    ("ES256", lambda: ECKey.generate_key("P-256")),
    ("RS256", lambda: RSAKey.generate_key(2048)),
])
def test_tokens_signed_by_joserfc_verify_here_and_tampering_fails(alg, make):
    key = make()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        token = jwt.encode({"alg": alg}, {"sub": "alice", "exp": 4_000_000_000}, key, algorithms=[alg])
    parsed = jose.parse(token)
    jose.verify_signature(parsed, key.as_dict(private=False))
    assert parsed.claims["sub"] == "alice"
    head, body, sig = token.split(".")
    forged = jose.b64url(b'{"sub":"mallory","exp":4000000000}')
    with pytest.raises(AuthenticationError, match="does not verify"):
        jose.verify_signature(jose.parse(f"{head}.{forged}.{sig}"), key.as_dict(private=False))
    other = make()
    with pytest.raises(AuthenticationError, match="does not verify"):
        jose.verify_signature(parsed, other.as_dict(private=False))


def test_our_tokens_verify_with_joserfc_and_kid_is_the_thumbprint():
    private = ed25519.Ed25519PrivateKey.generate()
    jwk = jose.public_jwk(private)
    token = jose.encode({"sub": "agent", "n": 1}, private, kid=jose.jwk_thumbprint(jwk))
    imported = OKPKey.import_key(jwk)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        claims = jwt.decode(token, imported, algorithms=["EdDSA"]).claims
    assert claims == {"sub": "agent", "n": 1}
    assert jose.jwk_thumbprint(jwk) == imported.thumbprint()


def test_alg_none_hmac_and_key_type_confusion_are_refused():
    none = jose.b64url(b'{"alg":"none"}') + "." + jose.b64url(b'{"sub":"x"}') + "."
    with pytest.raises(AuthenticationError, match="not accepted"):
        jose.parse(none)
    hs = jose.b64url(b'{"alg":"HS256"}') + "." + jose.b64url(b'{"sub":"x"}') + ".c2ln"
    with pytest.raises(AuthenticationError, match="not accepted"):
        jose.parse(hs)
    ec = ECKey.generate_key("P-256")
    ed = ed25519.Ed25519PrivateKey.generate()
    token = jose.parse(jose.encode({"sub": "x"}, ed))  # EdDSA token, offered an EC key
    with pytest.raises(AuthenticationError):
        jose.verify_signature(token, ec.as_dict(private=False))
    for junk in ["", "a.b", "a.b.c.d", "!!.??.**", "x" * 20000]:
        with pytest.raises(AuthenticationError):
            jose.parse(junk)


def test_times():
    jose.check_times({"exp": 1000}, now=1000)
    with pytest.raises(AuthenticationError, match="expired"):
        jose.check_times({"exp": 1000}, now=1100, leeway=30)
    with pytest.raises(AuthenticationError, match="not valid yet"):
        jose.check_times({"exp": 5000, "nbf": 2000}, now=1000)
    with pytest.raises(AuthenticationError, match="exp"):
        jose.check_times({}, now=1000)
