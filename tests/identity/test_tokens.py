"""Workload identities, rotation of Myriad's signing keys, and RFC 8693 exchange."""

import pytest

from myriad.errors import AuthenticationError, InvalidRequest, PermissionDenied
from myriad.identity import GRANT_TOKEN_EXCHANGE, jose

EGRESS = ["urn:myriad:egress"]


def user_token(identity, scopes="agents models egress:*.example.com vault:github", user="alice", tenant="acme",
               resources=("urn:myriad:egress", "urn:myriad:models")):
    return identity.tokens.user_token(tenant, user, scopes=scopes, resources=list(resources))


def test_workload_token_names_the_agent_and_is_not_a_door_credential(identity):
    agent = identity.for_agent("acme", "assistant/alice")
    assert agent.spiffe_id == "spiffe://myriad.local/tenant/acme/agent/assistant/alice"
    sub = identity.for_agent("acme", "assistant/a b/sub/helper/x")
    assert sub.spiffe_id.endswith("/agent/assistant/a%20b/sub/helper/x")
    token = agent.token()
    claims = identity.tokens.agent_identity(jose.parse(token))
    assert claims["sub"] == agent.spiffe_id and claims["exp"] - claims["iat"] <= 300
    with pytest.raises(AuthenticationError, match="cannot be used here"):
        identity.tokens.principal(jose.parse(token))


async def test_rotated_keys_verify_until_their_tokens_expire(identity, clock):
    agent = identity.for_agent("acme", "assistant/alice")
    old = agent.token()
    old_kid = jose.parse(old).kid
    identity.tokens.ring.rotate()
    new = agent.token()
    assert jose.parse(new).kid != old_kid
    published = {k["kid"] for k in identity.jwks()["keys"]}
    assert {old_kid, jose.parse(new).kid} <= published
    identity.tokens.agent_identity(jose.parse(old))  # still verifiable after rotation
    clock.now += 60 * 60  # past the old key's publish window (max token ttl + margin)
    assert old_kid not in {k["kid"] for k in identity.jwks()["keys"]}
    with pytest.raises(AuthenticationError, match="unknown or retired key"):
        identity.tokens.agent_identity(jose.parse(old))
    # The scheduled rotation happens on its own after key_rotation seconds.
    clock.now += identity.settings.key_rotation + 1
    assert jose.parse(agent.token()).kid != jose.parse(new).kid


async def test_exchange_builds_a_nested_act_chain_and_only_narrows(identity):
    alice = user_token(identity)
    agent = identity.for_agent("acme", "assistant/alice")
    helper = identity.for_agent("acme", "assistant/alice/sub/helper/h1")
    d1 = await agent.act_for(alice, scope="egress:api.example.com vault:github models", resources=EGRESS + ["urn:myriad:models"])
    claims = jose.parse(d1).claims
    assert claims["sub"] == "alice" and claims["act"] == {"sub": agent.spiffe_id}
    d2 = await helper.act_for(d1, scope="egress:api.example.com", resources=EGRESS)
    claims2 = jose.parse(d2).claims
    assert claims2["act"] == {"sub": helper.spiffe_id, "act": {"sub": agent.spiffe_id}}
    p = await identity.authenticate(d2)
    assert p.user == "alice" and p.scopes == {"egress:api.example.com"} and p.audience == ("urn:myriad:egress",)
    assert p.chain == ["user:alice", agent.spiffe_id, helper.spiffe_id]
    assert claims2["exp"] <= claims["exp"]
    with pytest.raises(PermissionDenied, match="vault:github"):
        await helper.act_for(d2, scope="vault:github", resources=EGRESS)  # dropped at the last hop
    with pytest.raises(PermissionDenied, match="audience"):
        await helper.act_for(d2, resources=["urn:myriad:models"])  # widening the audience
    with pytest.raises(PermissionDenied, match="egress:\\*"):
        await agent.act_for(alice, scope="egress:*", resources=EGRESS)
    log = identity.audit.entries("acme", action="token.exchange")
    assert log[-1].chain == ["user:alice", agent.spiffe_id] and log[0].outcome == "denied"


async def test_exchange_refusals(identity):
    alice = user_token(identity)
    agent = identity.for_agent("acme", "assistant/alice")
    other_agent = identity.for_agent("other", "assistant/x")
    form = {"grant_type": GRANT_TOKEN_EXCHANGE, "subject_token": alice, "actor_token": other_agent.token(), "resource": EGRESS}
    with pytest.raises(PermissionDenied, match="another tenant"):
        await identity.exchange(form)
    with pytest.raises(InvalidRequest, match="grant_type"):
        await identity.exchange({**form, "grant_type": "password"})
    with pytest.raises(InvalidRequest, match="resource"):
        await identity.exchange({**form, "actor_token": agent.token(), "resource": []})
    with pytest.raises(InvalidRequest, match="resource"):
        await identity.exchange({**form, "actor_token": agent.token(), "resource": ["https://evil.example"]})
    with pytest.raises(AuthenticationError):  # a user token is not an actor
        await identity.exchange({**form, "actor_token": alice})
    forged = alice[:-4] + ("AAAA" if not alice.endswith("AAAA") else "BBBB")
    with pytest.raises(AuthenticationError):
        await identity.exchange({**form, "subject_token": forged, "actor_token": agent.token()})
    # may_act restricts who may act for the subject
    bound = identity.tokens._mint({"sub": "bob", "tenant": "acme", "typ": "delegated", "scope": "egress",
                                   "aud": EGRESS, "may_act": {"sub": "spiffe://myriad.local/tenant/acme/agent/mail/*"}}, 60)
    with pytest.raises(PermissionDenied, match="may_act"):
        await agent.act_for(bound, resources=EGRESS)
    assert await identity.for_agent("acme", "mail/bob").act_for(bound, resources=EGRESS)


async def test_delegated_lifetime_is_bounded_by_subject_and_actor(identity, clock):
    short = identity.tokens.user_token("acme", "alice", scopes="egress", resources=EGRESS, ttl=20)
    agent = identity.for_agent("acme", "assistant/alice")
    d = await agent.act_for(short, resources=EGRESS, lifetime=3600)
    assert jose.parse(d).claims["exp"] <= jose.parse(short).claims["exp"]
    clock.now += 30
    with pytest.raises(AuthenticationError, match="expired"):
        await identity.authenticate(d)


async def test_revocation_cascades_to_tokens_exchanged_from_it(identity):
    alice = user_token(identity)
    agent = identity.for_agent("acme", "assistant/alice")
    helper = identity.for_agent("acme", "assistant/alice/sub/helper/h1")
    d1 = await agent.act_for(alice, resources=EGRESS)
    d2 = await helper.act_for(d1, resources=EGRESS)
    sibling = await agent.act_for(alice, resources=EGRESS)
    identity.revoke(d1)
    for token in (d1, d2):
        with pytest.raises(AuthenticationError, match="revoked"):
            await identity.authenticate(token)
    with pytest.raises(AuthenticationError, match="revoked"):
        await helper.act_for(d1, resources=EGRESS)  # no new tokens from a revoked one
    assert (await identity.authenticate(sibling)).user == "alice"
    identity.revoke(alice)  # the root: every descendant goes
    with pytest.raises(AuthenticationError, match="revoked"):
        await identity.authenticate(sibling)
    # Foreign, malformed or forged tokens are quietly ignored (RFC 7009), and revoke nothing.
    for junk in ("", "a.b.c", "not a token", alice[:-4] + "AAAA"):
        identity.revoke(junk)
    assert [e.action for e in identity.audit.entries("acme", action="token.revoke")] == ["token.revoke"] * 2


async def test_a_tool_adds_its_own_hop(identity):
    agent = identity.for_agent("acme", "assistant/alice")
    tool = agent.tool("search_web")
    assert tool.spiffe_id == agent.spiffe_id + "/tool/search_web"
    d1 = await agent.act_for(user_token(identity), resources=EGRESS)
    d2 = await tool.act_for(d1, scope="egress:api.example.com", resources=EGRESS)
    p = await identity.authenticate(d2)
    assert p.chain == ["user:alice", agent.spiffe_id, tool.spiffe_id] and p.scopes == {"egress:api.example.com"}
    with pytest.raises(AuthenticationError, match="not issued to this agent"):
        await agent.http(d2)  # the tool's token is the tool's, not the agent's
    for bad in ("", "a/b", "x" * 100, "../up"):
        with pytest.raises(InvalidRequest):
            agent.tool(bad)
