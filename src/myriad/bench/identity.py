"""Identity: what authenticating, delegating and signing cost per request.

Measures, in one process on one core, the per-call latency of:

  api key          KeyStore.verify (SQLite lookup + SHA-256 + constant-time compare)
  delegated token  Identity.authenticate of a Myriad delegated JWT (parse + Ed25519 verify + claims)
  user JWT         Identity.authenticate of an IdP-signed JWT (JWKS cached; ES256 and EdDSA)
  exchange         RFC 8693 token exchange (verify 2 tokens, mint 1, audit row)
  outbound         OutboundAuthorizer.prepare (scopes, vault lookup + AES-GCM open, RFC 9421 sign, audit row)

Baselines in the same run: a bare SHA-256 + compare_digest, and a bare Ed25519 verify
and sign with ``cryptography``, so the table shows what Myriad adds on top of the
primitive it cannot avoid.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

DESCRIPTION = __doc__ or ""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=3000, help="calls per measurement (default 3000)")
    parser.add_argument("--dir", help="data directory (default: a temp dir)")


def _time(fn: Callable[[], Any], n: int) -> list[float]:
    for _ in range(min(200, n)):
        fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    from myriad.bench.report import print_table, summary_ms
    from myriad.identity import Identity, KeyStore, jose
    from myriad.identity.users import JWKSCache, UserVerifier
    from myriad.settings import IdentitySettings

    data = Path(args.dir or tempfile.mkdtemp(prefix="myriad-bench-identity-"))
    keys = KeyStore(data)
    keys.open()
    if not keys.tenant_exists("bench"):
        keys.create_tenant("bench")
    _, api_key = keys.create_key("bench")
    identity = Identity(IdentitySettings(), keys, data)
    loop = asyncio.new_event_loop()
    run_ = loop.run_until_complete

    user = identity.tokens.user_token("bench", "alice", scopes="*", resources=["urn:myriad:egress", "urn:myriad:agents"])
    agent = identity.for_agent("bench", "bench-agent/alice")
    delegated = run_(agent.act_for(user, scope="egress:api.example.com vault:svc", resources=["urn:myriad:egress"]))
    principal = run_(identity.authenticate(delegated))
    identity.vault.put("bench", "alice", "svc", "s3cret-token-value-xyz", domains=["api.example.com"])

    # An outside IdP's keys, pre-seeded in the cache (the network fetch is not what we time).
    idp_keys = {"es": ec.generate_private_key(ec.SECP256R1()), "ed": ed25519.Ed25519PrivateKey.generate()}
    cache = JWKSCache("http://unused.invalid/jwks")
    cache._keys = {kid: {**jose.public_jwk(k), "kid": kid} for kid, k in idp_keys.items()}
    cache._fetched = time.monotonic() + 10**9
    identity.__dict__["users"] = UserVerifier("https://idp.bench", cache, default_tenant="bench")
    now = int(time.time())
    claims = {"iss": "https://idp.bench", "sub": "alice", "exp": now + 3600, "iat": now}
    user_es = jose.encode(claims, idp_keys["es"], alg="ES256", kid="es")
    user_ed = jose.encode(claims, idp_keys["ed"], alg="EdDSA", kid="ed")

    secret = b"x" * 27
    digest = hashlib.sha256(secret).digest()
    raw_key = ed25519.Ed25519PrivateKey.generate()
    raw_pub = raw_key.public_key()
    msg = b'"@authority": api.example.com\n"@signature-params": ("@authority");created=1'
    sig = raw_key.sign(msg)
    form = {"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "subject_token": user,
            "actor_token": agent.token(), "scope": "egress:api.example.com", "resource": ["urn:myriad:egress"]}

    n = args.n
    rows_spec: list[tuple[str, Callable[[], Any]]] = [
        ("baseline: sha256 + compare_digest", lambda: hmac.compare_digest(hashlib.sha256(secret).digest(), digest)),
        ("baseline: ed25519 verify", lambda: raw_pub.verify(sig, msg)),
        ("baseline: ed25519 sign", lambda: raw_key.sign(msg)),
        ("api key (KeyStore.verify)", lambda: keys.verify(api_key)),
        ("delegated token (authenticate)", lambda: run_(identity.authenticate(delegated))),
        ("user JWT EdDSA (JWKS cached)", lambda: run_(identity.authenticate(user_ed))),
        ("user JWT ES256 (JWKS cached)", lambda: run_(identity.authenticate(user_es))),
        ("token exchange (RFC 8693)", lambda: run_(identity.exchange(form))),
        ("outbound prepare (inject + sign)", lambda: identity.outbound.prepare(
            principal, "GET", "https://api.example.com/v1/x", {"accept": "application/json"})),
    ]
    results: dict[str, Any] = {}
    rows = []
    for name, fn in rows_spec:
        s = summary_ms(_time(fn, n))
        results[name] = s
        rows.append([name, s["p50_ms"] * 1000, s["p99_ms"] * 1000, s["n"]])
    print_table(f"identity: per-call latency ({n} calls each, one core, data in {data})",
                ["operation", "p50 µs", "p99 µs", "n"], rows)
    loop.close()
    keys.close()
    base_verify = results["baseline: ed25519 verify"]["p50_ms"]
    return {"bench": "identity", "n": n, "results": results,
            "delegated_over_ed25519_verify": round(results["delegated token (authenticate)"]["p50_ms"] / base_verify, 2)}


__all__ = ["DESCRIPTION", "add_arguments", "run"]
