"""``myriad bench storage`` runs end to end (tiny sizes: it works, not how fast)."""

from typing import Any

from tests.bench.test_benches import bench


def test_storage_bench_side_by_side(pg_url: str) -> None:
    r: Any = bench("storage", "--ops", "20", "--agents", "20", "--database", pg_url)
    backends = [x["backend"] for x in r["results"]]
    assert backends == ["sqlite", "sqlite fsync", "postgres sc=on", "postgres sc=off"]
    for x in r["results"]:
        assert x["save_state"]["p50_ms"] > 0 and x["wake"]["p50_ms"] > 0 and x["sql_insert_turn"]["p50_ms"] > 0
    assert r["results"][2]["sql_restore_per_mb_ms"] > 0
