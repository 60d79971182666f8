"""The shared database: which storage backend, and every component's migrations.

``settings.storage.database`` None keeps the embedded SQLite files; a PostgreSQL URL
puts the runtime (and the stores that support it) there. ``MIGRATIONS`` lists every
component's schema history; ``myriad db migrate`` and the server at start apply them
all. A room that keeps tables in PostgreSQL adds its ``Migrations`` here.
"""

from __future__ import annotations

from typing import Any

from myriad.settings import Settings
from myriad.storage import Migrations, PostgresStorage, SQLiteStorage


def migrations() -> list[Migrations]:
    """Every component's migrations, in the order they are applied."""
    from myriad.identity import IDENTITY_MIGRATIONS
    from myriad.metering import LEDGER_MIGRATIONS
    from myriad.models.responses import RESPONSES_MIGRATIONS
    from myriad.storage.postgres import RUNTIME_MIGRATIONS

    return [RUNTIME_MIGRATIONS, Migrations("identity", IDENTITY_MIGRATIONS), Migrations("metering", LEDGER_MIGRATIONS),
            Migrations("responses", RESPONSES_MIGRATIONS)]


def migrate_database(url: str, timeout: float = 5.0) -> dict[str, list[int]]:
    """Create or upgrade every component's tables; ``{component: versions applied now}``."""
    from myriad.storage.postgres import check_current, migrate

    components = migrations()
    check_current(url, components, timeout=timeout)
    return migrate(url, components, timeout=timeout)


def build_storage(settings: Settings) -> Any:
    """The runtime's ``Storage`` for these settings (not opened)."""
    url = settings.storage.database
    if not url:
        return SQLiteStorage(settings.data_dir)
    return PostgresStorage(url, settings.data_dir, pool_size=settings.storage.pool_size,
                           timeout=settings.storage.connect_timeout, run_migrations=False,
                           synchronous_commit=settings.storage.synchronous_commit)


__all__ = ["migrations", "migrate_database", "build_storage"]
