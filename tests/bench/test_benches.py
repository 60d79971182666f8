"""The benchmarks run end to end (tiny sizes: these check they work, not how fast)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def bench(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "myriad", "bench", *args], cwd=REPO, capture_output=True,
                          text=True, env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_hibernation_bench():
    r = bench("hibernation", "--agents", "300", "--samples", "50")
    assert r["agents"] == 300 and r["wake_p50_ms"] > 0 and r["disk_bytes_per_agent"] > 0


@pytest.mark.integration
def test_density_bench_smoke():
    r = bench("density", "--levels", "20", "--baseline-levels", "3", "--think", "0.3", "--duration", "5",
              "--ttft", "0.05", "--tps", "200", "--tokens", "5", "--sessions-per-tenant", "8")
    level = r["myriad"][0]
    assert level["sessions"] == 20 and level["turns"] > 0
    assert r["baseline"][0]["turns"] > 0 and r["baseline_rss_mb_per_session"] > 0
    # the full default stack ran, and says so; sessions spread over tenants of <= 8
    assert r["stack"] == {"metering": True, "telemetry": True, "tool": True, "tenants": 3, "sessions_per_tenant": 8,
                          "isolates_per_tenant": 1000}
    assert level["cpu_ms_per_turn"] > 0 and level["host_threads"] >= 1
    assert 0 <= level["isolates_opened"] <= 20  # each session's isolate opened once, at most


def test_density_preflight_leaves_room_for_the_isolate_cap(tmp_path, monkeypatch):
    """The bench raises vm.max_map_count to what ``Sandboxes.isolate_cap`` needs for its top
    level (before, it used its own smaller margin: at 5,000 sessions the cap was 4,867 and
    the host evicted isolates, a cold start on most turns)."""
    from myriad.bench import density
    from myriad.sandbox.policy import isolate_map_budget

    limit = tmp_path / "max_map_count"
    limit.write_text("65530\n")
    monkeypatch.setattr(density, "_MAP_COUNT", limit)
    assert "raised" in density.map_count_preflight(5_000)
    assert isolate_map_budget(str(limit)) >= 5_000
    assert "room for 100 " in density.map_count_preflight(100)


@pytest.mark.integration
def test_sandbox_bench_smoke():
    r = bench("sandbox", "--isolates", "5", "--live-isolates", "5", "--containers", "3", "--live-containers", "2",
              "--baseline", "3")
    assert r["isolate"]["n"] == 5 and r["isolate"]["p50_ms"] > 0 and r["isolate"]["bytes_per_sandbox"] > 0
    assert r["baseline_node"]["p50_ms"] > 0
    assert r["container"]["n"] == 3 and r["container"]["p50_ms"] > 0 and r["bwrap_alone"]["p50_ms"] > 0
    assert r["baseline_fork_exec"]["p50_ms"] > 0


@pytest.mark.integration
def test_mcp_bench_smoke():
    r = bench("mcp", "--calls", "20")
    assert r["round_trip"]["direct"]["n"] == 20 and r["round_trip"]["myriad"]["n"] == 20
    assert r["round_trip"]["myriad"]["server_cpu_ms_per_call"] > 0
    assert r["round_trip"]["calling"]["outbound"]["n"] == 20 and r["round_trip"]["calling"]["plain"]["n"] == 20
    ten = r["ten_tools"]
    assert ten["round_trips"]["model_calls"] == 11 and ten["code_mode"]["model_calls"] == 2
    assert ten["code_mode"]["script_result"] == {"sum": sum((k + 1) * (k + 1) for k in range(10))}
    assert ten["round_trips"]["total_tokens"] > ten["code_mode"]["total_tokens"] > 0


def test_chat_bench_smoke():
    r = bench("chat", "--chunks", "40", "--rounds", "1", "--pace", "0.2")
    per = r["us_per_chunk"]
    assert r["chunks"] == 40 and all(v > 0 for v in per.values()) and r["ratio_burst"] > 0


def _agents_bench(*args: str, path: str = "/usr/bin:/bin") -> tuple[dict, str]:
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": path}
    for k in ("HOME", "XDG_CACHE_HOME"):  # share the on-demand peer install (~/.cache/myriad/peers/workerd)
        if k in os.environ:
            env[k] = os.environ[k]
    proc = subprocess.run([sys.executable, "-m", "myriad", "bench", "agents", *args], cwd=REPO, capture_output=True,
                          text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stdout


@pytest.mark.integration
def test_agents_bench_smoke_myriad_and_workerd():
    r, out = _agents_bench("--sessions", "5", "--duration", "3", "--think", "0.3", "--peer", "workerd")
    sides = ["myriad"]
    if "skipped" in r["workerd"]:  # npm could not install the peer here: said so, plainly
        assert r["workerd"]["skipped"] and f"peer workerd skipped: {r['workerd']['skipped']}" in out
    else:
        sides.append("workerd")
        assert "not Cloudflare's production" in r["note"] and "not Cloudflare's production" in out
        assert r["ratios"]["cpu_workerd_over_myriad"] > 0
    for s in sides:
        m = r[s]
        assert m["connected"] == 5 and m["errors"] == 0, m
        assert m["turns"] > 5 and m["cpu_s_per_1000_turns"] > 0 and m["rss_after_mb"] > 0
        assert 0 < m["p50_ms"] <= m["p99_ms"]


def test_agents_bench_says_why_the_peer_is_skipped():
    r, out = _agents_bench("--no-myriad", "--peer", "workerd", path="/nonexistent")
    assert r["workerd"] == {"skipped": "node and npm are needed (not on PATH)"}
    assert "peer workerd skipped: node and npm are needed (not on PATH)" in out
