"""Agents' owners and spent OAuth grants, on both identity backends: what one store (one
machine) records, another store on the same database (another machine) knows; a claim
is first-come across stores; a code spent through one store is refused through another."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from myriad.identity import Identity, KeyStore, OwnerStore
from myriad.identity.authorization import AuthorizationServer, OAuthError
from myriad.settings import IdentitySettings


def _twin(keystore: KeyStore, tmp_path: Path, identity_database: str | None) -> KeyStore:
    """Another machine's key store on the same database (SQLite: the same file)."""
    return KeyStore(tmp_path if identity_database is None else tmp_path / "machine-2", identity_database)


def _owners(ks: KeyStore, tmp_path: Path, identity_database: str | None) -> OwnerStore:
    return Identity(IdentitySettings(), ks, tmp_path).owners


def test_owners_are_shared_and_claims_first_come(keystore: KeyStore, tmp_path: Path,
                                                 identity_database: str | None) -> None:
    other_ks = _twin(keystore, tmp_path, identity_database)
    one, two = _owners(keystore, tmp_path, identity_database), _owners(other_ks, tmp_path, identity_database)
    assert one.owner("agent", "acme", "acme/c/x") == (False, None)
    assert one.claim("agent", "acme", "acme/c/x", "alice") == "alice"
    assert two.owner("agent", "acme", "acme/c/x") == (True, "alice")  # the other machine knows
    assert two.claim("agent", "acme", "acme/c/x", "bob") == "alice"  # and cannot take it
    assert two.owner("agent", "other", "acme/c/x") == (False, None)  # another tenant's row is another row
    two.record("sandbox", "acme", "box", None)  # the tenant's
    assert one.owner("sandbox", "acme", "box") == (True, None)
    one.record("sandbox", "acme", "box", "carol")
    assert two.owner("sandbox", "acme", "box") == (True, "carol")
    two.forget("sandbox", "acme", "box")
    assert one.owner("sandbox", "acme", "box") == (False, None)

    # many claims of one new instance at once, through both stores: one owner, seen by all
    results: list[Any] = []

    def claim(store: OwnerStore, user: str) -> None:
        results.append(store.claim("agent", "acme", "acme/c/race", user))

    threads = [threading.Thread(target=claim, args=(one if i % 2 else two, f"u{i}")) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and results[0] in {f"u{i}" for i in range(8)}
    other_ks.close()


def test_a_code_spent_through_one_store_is_refused_through_another(keystore: KeyStore, tmp_path: Path,
                                                                   identity_database: str | None) -> None:
    other_ks = _twin(keystore, tmp_path, identity_database)
    one = AuthorizationServer(tokens=Any, secret=b"k" * 32, db=keystore.db)  # type: ignore[arg-type]
    two = AuthorizationServer(tokens=Any, secret=b"k" * 32, db=other_ks.db)  # type: ignore[arg-type]
    claims = {"jti": "code-1", "exp": 4_000_000_000}
    one._spend(claims, "authorization code")
    with pytest.raises(OAuthError, match="already used"):
        two._spend(claims, "authorization code")
    with pytest.raises(OAuthError, match="already used"):
        one._spend(claims, "authorization code")
    two._spend({"jti": "code-2", "exp": 4_000_000_000}, "authorization code")  # another code: fine
    other_ks.close()
