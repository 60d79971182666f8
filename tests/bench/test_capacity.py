"""``myriad capacity`` reads the benches' JSON and does the arithmetic it states."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _capacity(*args: str, cwd: Path) -> dict:
    r = subprocess.run([sys.executable, "-m", "myriad", "capacity", *args], capture_output=True, text=True, cwd=cwd,
                       env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "assumptions:" in r.stdout and "container per agent" in r.stdout
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_capacity_from_saved_results(tmp_path: Path) -> None:
    bench = tmp_path / ".myriad" / "bench"
    bench.mkdir(parents=True)
    (bench / "density.json").write_text(json.dumps({
        "bench": "density", "think_s": 10.0, "myriad_sessions_per_core": 1000,
        "myriad": [{"sessions": 1000, "host_rss_mb": 500.0}]}) + "\n")
    (bench / "scale.json").write_text(json.dumps({
        "bench": "scale", "overhead": {"front_door_cpu_ms_per_turn": 0.5}, "cpu_scaling_efficiency": 0.8}) + "\n")
    out = _capacity("--sessions", "1000000", "--think", "20", "--cores-per-machine", "10", cwd=tmp_path)
    assert out["sessions_per_core"] == 2000  # twice the think time, twice the sessions per core
    assert out["shard_cores"] == 625  # 1e6 / 2000 / 0.8
    assert out["front_door_cores"] == 25  # 50,000 turns/s x 0.5 ms
    assert out["cores"] == 650 and out["machines"] == 65
    assert out["postgres_state_writes_per_s"] == 50_000
    assert out["container_per_agent_cpus"] == [20_000, 40_000]
    assert out["sources"]["sessions_per_core"].endswith("density.json")


def test_capacity_without_results_says_so(tmp_path: Path) -> None:
    out = _capacity("--sessions", "24000000", cwd=tmp_path)
    assert out["container_per_agent_cpus"] == [480_000, 960_000]
    assert "no density result" in out["sources"]["sessions_per_core"]
    assert out["cores"] < 480_000
