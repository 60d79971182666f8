"""PostgreSQL for the runtime's durable state, and the shared connection and migration
helpers every PostgreSQL-backed store uses (identity, metering).

psycopg (extra ``postgres``) is imported only when a connection is made.
"""

from myriad.storage.postgres._connect import (
    alive,
    async_pool,
    check_url,
    connect,
    live_connection,
    probe,
    redact,
    sync_pool,
    translate,
)
from myriad.storage.postgres._migrations import Migrations, applied_versions, check_current, migrate
from myriad.storage.postgres.schema import RUNTIME_MIGRATIONS
from myriad.storage.postgres.storage import PostgresStorage

__all__ = ["PostgresStorage", "RUNTIME_MIGRATIONS", "Migrations", "migrate", "applied_versions", "check_current",
           "alive", "live_connection",
           "connect", "sync_pool", "async_pool", "probe", "check_url", "redact", "translate"]
