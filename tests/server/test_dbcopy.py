"""``myriad db copy --from <data dir> --to postgresql://...``: an embedded deployment, built
with the real SQLite stores, moves into a real PostgreSQL server and every store reads
it back there as it was (agents, state, schedules, agent SQL, keys, vault, signing keys,
ledger, budgets, holds); a second copy into the same database is refused in one line."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from myriad.identity import Identity, KeyStore, jose
from myriad.metering import Budget, Scope, Subject, Usage, UsageEvent, UsageQuery, open_store
from myriad.metering._store import ReservationRequest
from myriad.models.responses import PostgresResponseStore, SQLiteResponseStore, StoredResponse
from myriad.settings import IdentitySettings
from myriad.storage import AgentRecord, PostgresStorage, ScheduleRecord, SQLiteStorage
from tests.metering.conftest import PRICES
from tests.test_cli import myriad

SECRET = "ghp_" + "c0pyT0k3n" * 3
PATH = "acme/notes/n1"


async def _runtime(src: Path) -> None:
    st = SQLiteStorage(src)
    await st.open()
    await st.create_agent(AgentRecord(PATH, "acme", "notes", "n1", json.dumps({"count": 7}).encode(), 100.0, 200.0))
    await st.create_agent(AgentRecord("acme/notes/empty", "acme", "notes", "empty", None, 1.0, 1.0))
    await st.add_schedule(ScheduleRecord("s1", PATH, "acme", "notes", "n1", "fire", '{"text": "water"}', "cron",
                                         "*/5 * * * *", 4_000_000_000.0, 0, 150.0))
    sql = st.agent_sql(PATH)
    sql.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL, blob BLOB)")
    sql.execute("CREATE INDEX notes_body ON notes(body)")
    for i in range(3):
        sql.execute("INSERT INTO notes (body, blob) VALUES (?, ?)", (f"note {i}", bytes([i]) * 70_000))
    sql.execute("DELETE FROM notes WHERE id = 3")
    sql.close()
    await st.close()


def _identity(src: Path) -> tuple[str, str, str]:
    ks = KeyStore(src)
    ks.create_tenant("acme")
    info, key = ks.create_key("acme", label="ci", scopes="agents models")
    old, old_key = ks.create_key("acme")
    ks.revoke_key(old.id)
    ident = Identity(IdentitySettings(), ks, src)
    ident.vault.put("acme", "alice", "github", SECRET, domains=["api.github.com"])
    ident.audit.record(ks.verify(key), "test.copy", "before")
    token = ident.for_agent("acme", "notes/n1").token()
    # alice's agent and sandbox (owners.db), and an OAuth code already redeemed (identity.db)
    ident.owners.claim("agent", "acme", PATH, "alice")
    ident.owners.record("sandbox", "acme", "alice-box", "alice")
    assert ident.authorization.db is ks.db  # (its table is made on first use)
    ks.db.execute("INSERT INTO oauth_spent (jti, exp) VALUES (?, ?)", ("spent-code", 4_000_000_000.0))
    ks.close()
    return key, old_key, token


def _ledger(src: Path) -> dict:
    led = open_store(f"sqlite:///{src / 'metering.db'}")
    led.add_price_version(dict(PRICES))
    led.put_budget(Budget(Scope("acme"), "month", hard="1.00", soft="0.000001", id="b-month"))
    s = Subject("acme", "ann", "agents/notes/n1")
    est = Usage.tokens_of("gpt", input=1000, output=1000)
    g = led.reserve(ReservationRequest(s, est, "model"))
    led.settle(g.id, [UsageEvent(s, Usage.tokens_of("gpt", input=900, output=100), id="ev-settled")])
    led.append([UsageEvent(Subject("acme"), Usage.tokens_of("gpt", input=10, output=10), id="ev-plain")])
    led.reserve(ReservationRequest(s, est, "model", id="res-open"))  # a hold still open at copy time
    before = {
        "totals": led.totals(UsageQuery("acme", group_by=("user", "resource"))),
        "status": led.budget_status("acme"),
        "events": [(e.seq, e.cloudevent["id"], e.cost_nanos) for e in led.events("acme")],
        "notices": [n.type for n in led.notices("acme")],
        "open": led.open_reservations("acme"),
    }
    led.close()
    return before


ALICE = "acme\x00user:alice"  # how the /v1/responses door keys a user's stored responses


def _responses(src: Path) -> None:
    store = SQLiteResponseStore(src / "responses.db")
    for owner, rid in ((ALICE, "resp_a"), ("acme", "resp_t")):
        store.put(owner, StoredResponse(response={"id": rid}, input_items=[{"type": "message", "id": f"in_{rid}"}],
                                        conversation=[{"type": "message", "id": f"msg_{rid}"}]))
    store.close()


def test_db_copy_moves_an_embedded_deployment_into_postgresql(tmp_path: Path, pg_url: str) -> None:
    src = tmp_path / "embedded"
    asyncio.run(_runtime(src))
    key, old_key, token = _identity(src)
    before = _ledger(src)
    _responses(src)

    r = myriad("db", "copy", "--from", str(src), "--to", pg_url, "--data-dir", str(tmp_path / "unused"))
    assert "myriad_metering.events: 2 row(s)" in r.stdout and "agent SQL databases: 1" in r.stdout
    assert "identity.key" in r.stdout  # the one thing that does not travel in the database

    # identity: keys verify, revoked stays revoked, the vault opens, the signing key still verifies its token
    ks = KeyStore(src, pg_url)  # src: where identity.key is
    assert ks.verify(key).tenant == "acme" and ks.list_tenants() == ["acme"]
    try:
        ks.verify(old_key)
        raise AssertionError("a revoked key came back to life")
    except Exception as e:
        assert "revoked" in str(e)
    ident = Identity(IdentitySettings(), ks, src)
    [inj] = ident.vault.injections_for("acme", "alice", "api.github.com")
    assert inj.value == "Bearer " + SECRET
    parsed = jose.parse(token)
    assert ident.tokens.verify(parsed, typ=parsed.claims["typ"])["tenant"] == "acme"  # signature checked with the copied key
    assert [e.action for e in ident.audit.entries("acme")] == ["test.copy"]
    ident.audit.record(None, "test.after", "x", tenant="acme")  # the audit id sequence continues
    # alice's agent is hers on every machine now; her sandbox's owner stays with its host (owners.db)
    assert ident.owners.owner("agent", "acme", PATH) == (True, "alice")
    assert ident.owners.owner("sandbox", "acme", "alice-box") == (False, None)
    assert ks.db.execute("SELECT exp FROM oauth_spent WHERE jti = 'spent-code'").fetchone()[0] == 4_000_000_000.0
    ks.close()

    # stored responses: previous_response_id works from PostgreSQL, each owner's own
    shared = PostgresResponseStore(pg_url)
    assert shared.get(ALICE, "resp_a").input_items == [{"type": "message", "id": "in_resp_a"}]
    assert shared.item(ALICE, "msg_resp_a") == {"type": "message", "id": "msg_resp_a"}
    assert shared.get("acme", "resp_a") is None and shared.get("acme", "resp_t") is not None
    shared.close()

    # metering: the same totals, spend, holds and sequence numbers; new events continue after them
    led = open_store(pg_url)
    assert led.totals(UsageQuery("acme", group_by=("user", "resource"))) == before["totals"]
    assert led.budget_status("acme") == before["status"]
    assert [(e.seq, e.cloudevent["id"], e.cost_nanos) for e in led.events("acme")] == before["events"]
    assert [n.type for n in led.notices("acme")] == before["notices"] and before["notices"]
    assert led.open_reservations("acme") == before["open"] == 1
    led.settle("res-open", [UsageEvent(Subject("acme", "ann", "agents/notes/n1"), Usage.tokens_of("gpt", input=5, output=5),
                                       id="ev-after")])
    assert led.events("acme")[-1].seq > before["events"][-1][0] and led.open_reservations("acme") == 0
    led.close()

    # runtime: from an empty local disk, the agent's state, schedule and SQL rows are all there
    async def runtime() -> None:
        pg = PostgresStorage(pg_url, tmp_path / "fresh-machine")
        await pg.open()
        try:
            rec = await pg.load_agent(PATH)
            assert rec is not None and json.loads(rec.state or b"") == {"count": 7} and rec.has_sql
            assert (rec.created, rec.updated) == (100.0, 200.0)
            empty = await pg.load_agent("acme/notes/empty")
            assert empty is not None and empty.state is None and not empty.has_sql
            [s] = await pg.list_schedules(PATH)
            assert (s.id, s.cron, s.payload) == ("s1", "*/5 * * * *", '{"text": "water"}')
            sql = await pg.open_agent_sql(PATH)
            rows = sql.execute("SELECT id, body, length(blob) AS n FROM notes ORDER BY id")
            assert rows == [{"id": 1, "body": "note 0", "n": 70_000}, {"id": 2, "body": "note 1", "n": 70_000}]
            sql.execute("INSERT INTO notes (body) VALUES ('new')")  # AUTOINCREMENT continues past the deleted 3
            assert sql.execute("SELECT max(id) AS m FROM notes") == [{"m": 4}]
            assert sql.execute("SELECT name FROM sqlite_master WHERE type = 'index'") == [{"name": "notes_body"}]
            sql.close()
        finally:
            await pg.close()

    asyncio.run(runtime())

    # every table the identity and metering schemas have is one the copy fills (a new one must be added there)
    import psycopg

    from myriad.server.dbcopy import COPIED

    with psycopg.connect(pg_url) as conn:
        tables = {f"{s}.{t}" for s, t in conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_schema IN ('myriad_identity', 'myriad_metering', 'myriad_responses')")}
    assert tables and tables <= COPIED, tables - COPIED

    # a second copy into a database that has rows is refused, in one line
    again = myriad("db", "copy", "--from", str(src), "--to", pg_url, check=False)
    assert again.returncode == 2 and "already has" in again.stderr and "Traceback" not in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
