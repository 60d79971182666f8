"""Exactly-once claiming of schedules by several processes sharing one PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from myriad.storage import AgentRecord, PostgresStorage, ScheduleRecord

REPO = Path(__file__).resolve().parents[2]
N_SCHEDULES, N_AGENTS, N_PROCS = 1000, 1000, 4  # one schedule per agent: two processes must not hold one agent (single activation is the cluster's job)


async def _seed(url: str, tmp: Path, due: float) -> PostgresStorage:
    s = PostgresStorage(url, tmp / "seed", pool_size=2)
    await s.open()
    for a in range(N_AGENTS):
        path = f"t/ticker/a{a}"
        await s.create_agent(AgentRecord(path, "t", "ticker", f"a{a}", b"[]", due, due))
    for i in range(N_SCHEDULES):
        a = i % N_AGENTS
        await s.add_schedule(ScheduleRecord(f"s{i:04d}", f"t/ticker/a{a}", "t", "ticker", f"a{a}", "tick",
                                            f'"s{i:04d}"', "delayed", None, due, 0, due))
    return s


def _spawn(url: str, tmp: Path, i: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    return subprocess.Popen([sys.executable, "-m", "tests.storage._claim_worker", url, str(tmp / f"w{i}"),
                             str(tmp / f"w{i}.log")], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)


async def test_thousand_schedules_four_processes_one_killed(pg_url: str, tmp_path: Path) -> None:
    due = time.time() + 3
    seed = await _seed(pg_url, tmp_path, due)
    procs = [_spawn(pg_url, tmp_path, i) for i in range(N_PROCS)]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    victim, log = procs[0], tmp_path / "w0.log"
    # kill -9 one process once it has started some firings and not finished others
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        lines = log.read_text().splitlines() if log.exists() else []
        if sum(x.startswith("done") for x in lines) >= 20:
            break
        await asyncio.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    for p in procs[1:]:
        assert p.wait(60) == 0
    fired: Counter[str] = Counter()
    for a in range(N_AGENTS):
        rec = await seed.load_agent(f"t/ticker/a{a}")
        fired.update(json.loads(rec.state))
    assert await seed.next_due() is None  # every row settled
    await seed.close()
    victim_lines = log.read_text().splitlines()
    started = {x.split()[1] for x in victim_lines if x.startswith("start")}
    done = {x.split()[1] for x in victim_lines if x.startswith("done")}
    died_mid_fire = started - done
    twice = {sid for sid, n in fired.items() if n > 1}
    assert set(fired) == {f"s{i:04d}" for i in range(N_SCHEDULES)}  # every schedule fired
    assert max(fired.values()) <= 2
    assert twice <= died_mid_fire, twice - died_mid_fire  # none twice but those whose claimant died mid-fire
    others_started = Counter(x.split()[1] for i in range(1, N_PROCS)
                             for x in (tmp_path / f"w{i}.log").read_text().splitlines() if x.startswith("start"))
    assert max(others_started.values()) == 1  # live claimants never fired one twice
    print(f"\n1,000 schedules, 4 processes: victim started {len(started)}, finished {len(done)}; "
          f"died mid-fire {len(died_mid_fire)}, fired twice {len(twice)}")
