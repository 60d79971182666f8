"""The SQLite ledger's tables.

- ``events``: the append-only ledger (one row per usage event; ``id`` UNIQUE is the idempotency key).
- ``rollups`` (tenant, hour, user, agent, resource, model, deployment, price version) and
  ``rollups_tenant`` (the same without user/agent): sums maintained in the event's transaction.
- ``price_versions``, ``budgets``, ``budget_usage`` (spent/reserved per budget period),
  ``limits``, ``limit_state`` (GCRA time / leases in use), ``reservations`` (open holds only),
  ``notices`` (soft-limit and overrun notices).

Money is integer nanos, quantities integer micro-units; "no user/agent/model" is ``''``
in rollup keys so that upserts match. ``managed_by`` says who set a budget or limit
(``operator`` via CLI/config, ``tenant`` via its API key): a tenant cannot lift an
operator's cap.
"""

from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS events(
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  tenant TEXT NOT NULL, user TEXT, agent TEXT,
  time_us INTEGER NOT NULL, recorded_us INTEGER NOT NULL,
  source TEXT NOT NULL, type TEXT NOT NULL,
  model TEXT, deployment TEXT,
  price_version INTEGER, cost_nanos INTEGER NOT NULL,
  body TEXT NOT NULL, lines TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_tenant_time ON events(tenant, time_us);
CREATE TABLE IF NOT EXISTS rollups(
  tenant TEXT NOT NULL, hour INTEGER NOT NULL,
  user TEXT NOT NULL, agent TEXT NOT NULL, resource TEXT NOT NULL,
  model TEXT NOT NULL, deployment TEXT NOT NULL, price_version INTEGER NOT NULL,
  quantity_micro INTEGER NOT NULL, cost_nanos INTEGER NOT NULL, lines INTEGER NOT NULL,
  PRIMARY KEY(tenant, hour, user, agent, resource, model, deployment, price_version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollups_tenant(
  tenant TEXT NOT NULL, hour INTEGER NOT NULL, resource TEXT NOT NULL,
  model TEXT NOT NULL, deployment TEXT NOT NULL, price_version INTEGER NOT NULL,
  quantity_micro INTEGER NOT NULL, cost_nanos INTEGER NOT NULL, lines INTEGER NOT NULL,
  PRIMARY KEY(tenant, hour, resource, model, deployment, price_version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS price_versions(
  version INTEGER PRIMARY KEY, effective_us INTEGER NOT NULL, created_us INTEGER NOT NULL,
  currency TEXT NOT NULL, body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS budgets(
  id TEXT PRIMARY KEY, tenant TEXT NOT NULL, user TEXT, agent TEXT,
  period TEXT NOT NULL, hard_nanos INTEGER, soft_nanos INTEGER, created_us INTEGER NOT NULL,
  managed_by TEXT NOT NULL DEFAULT 'operator'
);
CREATE INDEX IF NOT EXISTS budgets_tenant ON budgets(tenant);
CREATE TABLE IF NOT EXISTS budget_usage(
  budget_id TEXT NOT NULL, period_start INTEGER NOT NULL,
  spent_nanos INTEGER NOT NULL DEFAULT 0, reserved_nanos INTEGER NOT NULL DEFAULT 0,
  flags INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY(budget_id, period_start)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS limits(
  id TEXT PRIMARY KEY, tenant TEXT NOT NULL, user TEXT, agent TEXT,
  operation TEXT NOT NULL, kind TEXT NOT NULL, limit_value INTEGER NOT NULL,
  managed_by TEXT NOT NULL DEFAULT 'operator'
);
CREATE INDEX IF NOT EXISTS limits_tenant ON limits(tenant);
CREATE TABLE IF NOT EXISTS limit_state(
  limit_id TEXT PRIMARY KEY, tat_us INTEGER NOT NULL DEFAULT 0, in_use INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reservations(
  id TEXT PRIMARY KEY, tenant TEXT NOT NULL, user TEXT, agent TEXT, operation TEXT NOT NULL,
  created_us INTEGER NOT NULL, expires_us INTEGER NOT NULL,
  amount_nanos INTEGER NOT NULL, tokens INTEGER NOT NULL,
  holds TEXT NOT NULL, rates TEXT NOT NULL, leases TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS notices(
  seq INTEGER PRIMARY KEY AUTOINCREMENT, time_us INTEGER NOT NULL, tenant TEXT NOT NULL,
  type TEXT NOT NULL, body TEXT NOT NULL
);
"""


def migrate(db: Any) -> None:
    """Bring a ledger made by an earlier version up to this schema (inside the open transaction)."""
    for table in ("budgets", "limits"):
        cols = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if "managed_by" not in cols:  # schema 3 -> 4: who may change a budget or limit
            db.execute(f"ALTER TABLE {table} ADD COLUMN managed_by TEXT NOT NULL DEFAULT 'operator'")


__all__ = ["SCHEMA", "migrate"]
