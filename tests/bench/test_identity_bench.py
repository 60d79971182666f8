"""The identity bench runs end to end with few calls and reports every operation."""

import argparse

from myriad.bench import BENCHES, identity


def test_identity_bench_small(tmp_path, capsys):
    assert BENCHES["identity"] == "myriad.bench.identity"
    p = argparse.ArgumentParser()
    identity.add_arguments(p)
    result = identity.run(p.parse_args(["--n", "20", "--dir", str(tmp_path)]))
    assert len(result["results"]) == 9 and all(r["n"] == 20 and r["p50_ms"] > 0 for r in result["results"].values())
    assert result["delegated_over_ed25519_verify"] > 1  # verifying a token costs at least its signature check
    assert "token exchange (RFC 8693)" in capsys.readouterr().out
