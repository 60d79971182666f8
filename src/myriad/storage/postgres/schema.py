"""The agent runtime's tables in PostgreSQL (component ``runtime``).

Released steps are never edited; a change is a new ``(version, sql)`` at the end.
"""

from __future__ import annotations

from myriad.storage.postgres._migrations import Migrations

_V1 = """
CREATE TABLE agents (
    path text PRIMARY KEY,
    tenant text NOT NULL,
    agent_class text NOT NULL,
    name text NOT NULL,
    state bytea,
    created double precision NOT NULL,
    updated double precision NOT NULL
);
CREATE INDEX agents_tenant_class ON agents (tenant, agent_class);
CREATE INDEX agents_path_prefix ON agents (path text_pattern_ops);

CREATE TABLE schedules (
    id text PRIMARY KEY,
    path text NOT NULL,
    tenant text NOT NULL,
    agent_class text NOT NULL,
    name text NOT NULL,
    method text NOT NULL,
    payload text NOT NULL,
    kind text NOT NULL,
    cron text,
    next_run double precision NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    created double precision NOT NULL,
    key text,
    claimed_by text,
    claim_until double precision
);
CREATE INDEX schedules_due ON schedules (next_run);
CREATE INDEX schedules_path ON schedules (path);
CREATE UNIQUE INDEX schedules_key ON schedules (path, key) WHERE key IS NOT NULL;

-- Per-agent SQL: the pages of each agent's SQLite file (see storage/postgres/_sqlfile.py).
CREATE TABLE agent_sql_files (
    path text PRIMARY KEY,
    page_size integer NOT NULL,
    n_pages integer NOT NULL,
    version bigint NOT NULL,
    updated double precision NOT NULL
);
CREATE TABLE agent_sql_pages (
    path text NOT NULL,
    pgno integer NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (path, pgno)
);
-- a 4 KB page fits a heap page: never compressed or moved out of line (TOAST), which
-- made each page upsert several times dearer
ALTER TABLE agent_sql_pages ALTER COLUMN data SET STORAGE PLAIN;

-- Fenced writes: SELECT myriad_fence(<condition>) aborts the transaction when the
-- condition is not true (storage.interface.Fence; cluster mode's leases).
CREATE FUNCTION myriad_fence(ok boolean) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF ok IS NOT TRUE THEN
        RAISE EXCEPTION 'fenced out' USING ERRCODE = 'MYF01';
    END IF;
END
$$;
"""

RUNTIME_MIGRATIONS = Migrations("runtime", ((1, _V1),))
"""Tables of ``PostgresStorage``: agents, schedules, per-agent SQL pages, the fence function."""

__all__ = ["RUNTIME_MIGRATIONS"]
