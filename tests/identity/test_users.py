"""Users' JWTs from an outside issuer, verified against its JWKS served on 127.0.0.1."""

import pytest

from myriad.errors import AuthenticationError


async def test_user_jwt_becomes_a_user_principal(identity, idp):
    p = await identity.authenticate(idp.token("alice", scope="agents:assistant models"))
    assert (p.tenant, p.user, p.kind) == ("acme", "alice", "user")
    assert p.scopes == {"agents:assistant", "models"}
    p = await identity.authenticate(idp.token("bob"))
    assert p.scopes == {"agents", "models", "egress", "vault"}  # the configured default


async def test_issuer_key_rotation_is_followed(identity, idp):
    identity.users.jwks.min_refetch = 0  # production default is 1 s, against unknown-kid floods
    first = idp.token("alice")
    await identity.authenticate(first)
    hits = idp.hits
    idp.rotate("ES256")
    p = await identity.authenticate(idp.token("alice"))  # unknown kid -> one refetch
    assert p.user == "alice" and idp.hits == hits + 1
    await identity.authenticate(first)  # the old key is still published
    idp.rotate("RS256", drop_old=True)
    await identity.authenticate(idp.token("carol"))
    with pytest.raises(AuthenticationError, match="does not publish"):
        await identity.authenticate(first)  # its key was withdrawn


@pytest.mark.parametrize("case,kwargs,match", [
    ("expired", {"ttl": -120}, "expired"),
    ("wrong audience", {"aud": "someone-else"}, "audience"),
    ("no tenant", {"tenant": None}, "tenant"),
    ("unknown tenant", {"tenant": "ghost"}, "tenant"),
    ("bad scope", {"scope": "Not Valid!"}, "scope"),
])
async def test_bad_user_tokens_are_refused(identity, idp, case, kwargs, match):
    with pytest.raises(AuthenticationError, match=match):
        await identity.authenticate(idp.token("alice", **kwargs))


async def test_foreign_issuer_and_self_signed_tokens_are_refused(identity, idp):
    from joserfc.jwk import OKPKey

    rogue = OKPKey.generate_key("Ed25519", parameters={"kid": idp.keys[-1].kid, "alg": "EdDSA"})
    with pytest.raises(AuthenticationError, match="does not verify"):
        await identity.authenticate(idp.token("alice", key=rogue))  # same kid, wrong key
    with pytest.raises(AuthenticationError, match="issuer is not trusted"):
        await identity.authenticate(idp.token("alice", iss="https://evil.test"))
