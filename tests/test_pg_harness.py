"""The PostgreSQL test harness itself: a real server, a fresh database per test."""

import psycopg


def test_fresh_database_per_test(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (1)")
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (1,)
        assert conn.execute("SHOW server_version").fetchone()[0].split(".")[0].isdigit()


def test_databases_are_isolated(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT to_regclass('t')").fetchone() == (None,)
