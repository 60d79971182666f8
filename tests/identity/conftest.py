"""Fixtures: an identity room over a fresh data directory (with a clock the test
drives), and a stand-in identity provider serving a JWKS on 127.0.0.1 whose tokens
are minted by an independent JOSE library (joserfc)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey

from myriad.identity import Identity, KeyStore
from myriad.settings import IdentitySettings


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["sqlite", "postgresql"])
def identity_database(request: Any) -> str | None:
    """Each identity test runs on both backends: None = ``identity.db`` in the data
    directory; else a fresh database on the session's real PostgreSQL server."""
    if request.param == "sqlite":
        return None
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def keystore(tmp_path: Path, identity_database: str | None) -> Iterator[KeyStore]:
    store = KeyStore(tmp_path, identity_database)
    store.open()
    store.create_tenant("acme")
    store.create_tenant("other")
    yield store
    store.close()


class IdP:
    """An OpenID-style issuer: a JWKS at ``jwks_url``, keys that can rotate, and tokens."""

    issuer = "https://idp.test"

    def __init__(self) -> None:
        self.keys: list[Any] = []
        self.hits = 0
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                idp.hits += 1
                body = json.dumps({"keys": [k.as_dict(private=False) | {"use": "sig"} for k in idp.keys]}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.rotate("EdDSA")

    @property
    def jwks_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"

    def rotate(self, alg: str = "EdDSA", *, drop_old: bool = False) -> Any:
        kid = f"k{len(self.keys) + 1}"
        params = {"kid": kid, "alg": alg}
        make = {"EdDSA": lambda: OKPKey.generate_key("Ed25519", parameters=params),
                "ES256": lambda: ECKey.generate_key("P-256", parameters=params),
                "RS256": lambda: RSAKey.generate_key(2048, parameters=params)}[alg]
        key = make()
        self.keys = ([] if drop_old else self.keys) + [key]
        return key

    def token(self, sub: str = "alice", *, tenant: str | None = "acme", ttl: float = 300, key: Any = None,
              **claims: Any) -> str:
        key = key or self.keys[-1]
        now = int(time.time())
        body = {"iss": self.issuer, "sub": sub, "aud": "myriad", "iat": now, "exp": now + int(ttl), **claims}
        if tenant is not None:
            body["tenant"] = tenant
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return jwt.encode({"alg": key.alg, "kid": key.kid}, body, key, algorithms=[key.alg])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def idp() -> Iterator[IdP]:
    server = IdP()
    yield server
    server.close()


@pytest.fixture
def settings(idp: IdP) -> IdentitySettings:
    return IdentitySettings(user_issuer=idp.issuer, user_jwks_url=idp.jwks_url, user_audience="myriad",
                            user_scopes="agents models egress vault")


@pytest.fixture
def identity(settings: IdentitySettings, keystore: KeyStore, tmp_path: Path, clock: Clock) -> Identity:
    return Identity(settings, keystore, tmp_path, clock=clock)
