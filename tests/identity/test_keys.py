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
    # a raw UPDATE (as another process would make it): on PostgreSQL the cache hears of it by
    # notification, a few ms later (more on a loaded machine), on SQLite at once
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            keystore.verify(key)
        except AuthenticationError:
            break
        time.sleep(0.01)
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


def test_verify_is_cached_and_revocation_still_applies_at_once(tmp_path):
    from myriad.identity import KeyStore

    store = KeyStore(tmp_path)
    store.open()
    store.create_tenant("acme")
    a, key_a = store.create_key("acme")
    b, key_b = store.create_key("acme")
    statements: list[str] = []
    store.db.connection.set_trace_callback(statements.append)
    assert store.verify(key_a).key_id == a.id
    assert any("FROM api_keys" in s for s in statements)
    statements.clear()
    for _ in range(3):
        assert store.verify(key_a).key_id == a.id
    assert statements == ["PRAGMA data_version"] * 3  # no SELECT of the key, no hash
    store.revoke_key(a.id)  # this store: forgotten at once
    with pytest.raises(AuthenticationError, match="revoked"):
        store.verify(key_a)
    assert store.verify(key_b).key_id == b.id
    other = KeyStore(tmp_path)  # another connection (a CLI in another process writes the same way)
    other.open()
    other.revoke_key(b.id)
    with pytest.raises(AuthenticationError, match="revoked"):
        store.verify(key_b)
    with pytest.raises(AuthenticationError, match="invalid"):
        store.verify(key_b[:-2] + "xx")  # a near-miss of a cached key is not a hit
    other.close()
    store.close()


def _refused_within(store, key: str, seconds: float, match: str = "revoked") -> None:
    """SQLite sees another process's write at once; PostgreSQL's notification takes
    milliseconds to arrive: wait for it, but not for long."""
    import time

    deadline = time.monotonic() + seconds
    while True:
        try:
            store.verify(key)
        except AuthenticationError as e:
            assert match in str(e)
            return
        assert time.monotonic() < deadline, "a revoked key was still accepted"
        time.sleep(0.005)


def test_a_revocation_through_another_process_applies_at_once_on_both_backends(tmp_path, identity_database):
    from myriad.identity import KeyStore

    store = KeyStore(tmp_path, identity_database)
    store.create_tenant("acme")
    a, key_a = store.create_key("acme")
    for _ in range(3):
        assert store.verify(key_a).key_id == a.id
    other = KeyStore(tmp_path, identity_database)  # another process's store (own connection or pool)
    assert other.verify(key_a).tenant == "acme"
    other.revoke_key(a.id)
    _refused_within(store, key_a, 0.0 if identity_database is None else 2.0)
    info, key_c = other.rotate_key(other.create_key("acme", label="ci")[0].id)
    assert store.verify(key_c).key_id == info.id and store.get_key(info.id).label == "ci"
    other.close()
    store.close()


def test_cached_key_still_expires(tmp_path, monkeypatch):
    import time as _time

    from myriad.identity import KeyStore

    store = KeyStore(tmp_path)
    store.create_tenant("acme")
    _, key = store.create_key("acme", ttl=60)
    assert store.verify(key).tenant == "acme"
    later = _time.time() + 120
    monkeypatch.setattr("myriad.identity.keys.time.time", lambda: later)
    with pytest.raises(AuthenticationError, match="expired"):
        store.verify(key)
    store.close()


def _count_queries(store) -> list[str]:
    seen: list[str] = []
    execute = store.db.execute

    def counting(sql, params=()):
        seen.append(sql)
        return execute(sql, params)

    store.db.execute = counting
    return seen


def test_postgres_cache_hits_skip_the_database_and_any_change_anywhere_empties_it(tmp_path, pg_url):
    import psycopg

    from myriad.identity import KeyStore

    store = KeyStore(tmp_path, pg_url)
    store.create_tenant("acme")
    a, key_a = store.create_key("acme")
    b, key_b = store.create_key("acme")
    assert store.verify(key_a).key_id == a.id
    queries = _count_queries(store)
    for _ in range(5):
        assert store.cached(key_a).key_id == a.id and store.verify(key_a).key_id == a.id
    assert queries == []  # hits: no SELECT
    assert store.verify(key_b).key_id == b.id and len(queries) == 1
    # a hand-written UPDATE (no Myriad process involved) reaches the cache through the trigger
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE myriad_identity.api_keys SET revoked = 1 WHERE id = %s", (b.id,))
    _refused_within(store, key_b, 2.0)
    assert store.verify(key_a).key_id == a.id  # refetched after the change, then cached again
    queries.clear()
    assert store.verify(key_a).key_id == a.id and queries == []
    store.close()


def test_postgres_cache_is_off_while_its_listen_connection_is_down(tmp_path, pg_url):
    import time

    import psycopg

    from myriad.identity import KeyStore

    store = KeyStore(tmp_path, pg_url)
    store.create_tenant("acme")
    a, key_a = store.create_key("acme")
    assert store.verify(key_a).key_id == a.id
    assert store.cached(key_a) is not None
    with psycopg.connect(pg_url, autocommit=True) as conn:  # the listener's connection dies
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE query LIKE 'LISTEN myriad_identity_changes%' AND pid <> pg_backend_pid()")
    deadline = time.monotonic() + 3
    while store.cached(key_a) is not None:  # the next hit after the loss is a miss
        assert time.monotonic() < deadline, "the cache outlived its notification channel"
        time.sleep(0.01)
    queries = _count_queries(store)
    assert store.verify(key_a).key_id == a.id and len(queries) == 1
    store.close()
