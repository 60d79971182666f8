"""The telemetry bench runs end to end on a few turns and reports every mode."""

import argparse

from myriad.bench import BENCHES, telemetry


def test_telemetry_bench_small(capsys):
    assert BENCHES["telemetry"] == "myriad.bench.telemetry"
    p = argparse.ArgumentParser()
    telemetry.add_arguments(p)
    result = telemetry.run(p.parse_args(["--turns", "40", "--block", "20", "--warmup", "5", "--agents", "4"]))
    assert set(result["modes"]) == {"off", "local", "otlp", "otlp-sampled"}
    assert all(m["cpu_us_per_turn_median"] > 0 for m in result["modes"].values())
    assert result["turns_per_mode"] == 40
    assert result["exported"]["requests"] > 0 and result["exported"]["bytes"] > 0  # the otlp hosts really export
    out = capsys.readouterr().out
    assert "host CPU per turn" in out and "overhead vs off" in out
