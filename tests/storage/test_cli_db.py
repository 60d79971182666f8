"""``myriad db migrate`` and ``myriad serve --database``: one clear line when it cannot work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.test_cli import myriad


def test_db_migrate_creates_then_reports_up_to_date(pg_url: str, tmp_path: Path) -> None:
    first = myriad("db", "migrate", "--database", pg_url, "--data-dir", str(tmp_path))
    assert "runtime" in first.stdout and "applied 1" in first.stdout
    again = myriad("db", "migrate", "--data-dir", str(tmp_path), check=False)
    assert again.returncode == 2 and "no database" in again.stderr  # nothing to migrate without a URL


def test_bad_databases_are_one_line_not_a_traceback(postgres: Any, tmp_path: Path) -> None:
    # (every kind of bad database is checked in process in test_postgres.py; here, that
    # the CLI prints it as one line for both verbs)
    cases = [
        (("db", "migrate", "--database", postgres.url("nope")), 'does not exist: create it'),
        (("serve", "--database", "postgresql://myriad@127.0.0.1:1/x", "--port", "1"), "connection refused"),
    ]
    for args, message in cases:
        r = myriad(*args, "--data-dir", str(tmp_path), check=False)
        assert r.returncode == 2, r.stderr
        assert message in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_database_setting_from_toml_env_and_flag(tmp_path: Path) -> None:
    from myriad.settings import Settings

    toml = tmp_path / "myriad.toml"
    toml.write_text('[storage]\ndatabase = "postgresql://a@toml/db"\npool_size = 3\n')
    assert Settings.load(toml, env={}).storage.database == "postgresql://a@toml/db"
    s = Settings.load(toml, env={"MYRIAD_DATABASE": "postgresql://a@env/db"})
    assert s.storage.database == "postgresql://a@env/db" and s.storage.pool_size == 3
    assert Settings.load(env={}).storage.database is None  # embedded SQLite by default
    from myriad.server.database import build_storage
    from myriad.storage import PostgresStorage, SQLiteStorage

    assert isinstance(build_storage(Settings.load(env={})), SQLiteStorage)
    assert isinstance(build_storage(s), PostgresStorage)
