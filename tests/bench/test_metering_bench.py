"""The metering bench runs end to end on a small ledger and its checks hold."""

import argparse

from myriad.bench import BENCHES, metering


def test_metering_bench_small(tmp_path, capsys):
    assert BENCHES["metering"] == "myriad.bench.metering"
    p = argparse.ArgumentParser()
    metering.add_arguments(p)
    result = metering.run(p.parse_args(["--events", "600", "--calls", "20", "--concurrency", "12", "--dir", str(tmp_path)]))
    assert all(v["same_answer"] for v in result["aggregate"].values())
    assert result["race"]["reserve"] == {"admitted": 5, "spent_over_budget": 1.0}
    assert result["race"]["naive"]["spent_over_budget"] >= 1.0
    out = capsys.readouterr().out
    assert "budget race" in out and result["bytes_per_event"] > 0
