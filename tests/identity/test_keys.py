import time

import pytest

from myriad.errors import AuthenticationError, Conflict, InvalidRequest, NotFound


def test_scoped_key_and_rotation_with_grace(keystore):
    info, key = keystore.create_key("acme", scopes="models:gpt-4o agents", label="ci")
    p = keystore.verify(key)
    assert p.tenant == "acme" and p.scopes == {"agents", "models:gpt-4o"} and p.kind == "key"
    new, new_key = keystore.rotate_key(info.id, grace=30)
    assert new.scopes == info.scopes and new.label == "ci" and new_key != key
    assert keystore.verify(key).key_id == info.id  # still inside the grace period
    assert keystore.verify(new_key).key_id == new.id
    keystore.db.execute("UPDATE api_keys SET expires=? WHERE id=?", (time.time() - 1, info.id))
    with pytest.raises(AuthenticationError, match="expired"):
        keystore.verify(key)
    with pytest.raises(Conflict):
        keystore.rotate_key(info.id)


def test_rotation_without_grace_revokes_at_once_and_is_tenant_bound(keystore):
    info, key = keystore.create_key("acme")
    with pytest.raises(NotFound):
        keystore.rotate_key(info.id, "other")
    _, new_key = keystore.rotate_key(info.id, "acme")
    with pytest.raises(AuthenticationError, match="revoked"):
        keystore.verify(key)
    assert keystore.verify(new_key).tenant == "acme"


def test_bad_inputs(keystore):
    with pytest.raises(InvalidRequest):
        keystore.create_key("acme", scopes="not a:valid!scope")
    with pytest.raises(InvalidRequest):
        keystore.create_key("acme", ttl=-5)
    info, key = keystore.create_key("acme")
    for wrong in (key[:-1] + ("A" if key[-1] != "A" else "B"), "myr_000000000000_" + "a" * 27, "nope"):
        with pytest.raises(AuthenticationError):
            keystore.verify(wrong)
