"""Hostile token shapes get a 401, never another exception (no 500 at a door)."""

import json
import random

import pytest

from myriad.errors import AuthenticationError
from myriad.identity import jose


def _seg(value) -> str:
    return jose.b64url(json.dumps(value).encode()) if not isinstance(value, bytes) else jose.b64url(value)


HEADERS = [{"alg": "EdDSA"}, {"alg": "EdDSA", "kid": 5}, {"alg": "EdDSA", "kid": None}, {"alg": "RS256", "kid": "x"},
           {"alg": "EdDSA", "crit": ["b64"]}, [], "str", {"alg": ["EdDSA"]}, {}, b"\xff\xfe"]
CLAIMS = [{}, [], {"iss": 5}, {"iss": "http://127.0.0.1:8787", "exp": "soon"}, {"iss": "https://idp.test", "exp": 1e300},
          {"iss": "http://127.0.0.1:8787", "typ": "delegated", "exp": 4e9, "tenant": ["acme"], "sub": {}},
          {"iss": "https://idp.test", "sub": "a" * 10000, "exp": 4e9, "tenant": "acme"}, b"\x00"]


async def test_hostile_tokens_are_401(identity, idp):
    rng = random.Random(7)
    for h in HEADERS:
        for c in CLAIMS:
            for sig in ("", "AAAA", jose.b64url(rng.randbytes(64)), "!!"):
                token = f"{_seg(h)}.{_seg(c)}.{sig}"
                with pytest.raises(AuthenticationError):
                    await identity.authenticate(token)
    good = idp.token("alice")
    for i in range(200):  # bit flips anywhere in a valid token
        chars = list(good)
        j = rng.randrange(len(chars))
        chars[j] = rng.choice("AZaz09-_.")
        mutated = "".join(chars)
        if mutated == good:
            continue
        try:
            await identity.authenticate(mutated)
        except AuthenticationError:
            continue
        # A flip that leaves the signed bytes intact (e.g. base64 padding bits) may still verify.
        assert jose.parse(mutated).claims == jose.parse(good).claims


async def test_hostile_exchange_forms_are_4xx(identity):
    from myriad.errors import MyriadError
    from myriad.identity import GRANT_TOKEN_EXCHANGE

    user = identity.tokens.user_token("acme", "alice", scopes="egress", resources=["urn:myriad:egress"])
    actor = identity.for_agent("acme", "a/b").token()
    base = {"grant_type": GRANT_TOKEN_EXCHANGE, "subject_token": user, "actor_token": actor, "resource": "urn:myriad:egress"}
    odd = [5, None, [], [1, 2], {"a": 1}, "", "x" * 5000, True, 1.5, ["urn:myriad:egress", 3]]
    for field in ("grant_type", "subject_token", "actor_token", "resource", "scope", "requested_lifetime",
                  "subject_token_type", "actor_token_type", "audience"):
        for value in odd:
            try:
                await identity.exchange({**base, field: value})
            except MyriadError as e:
                assert 400 <= e.status < 500, (field, value, e)
