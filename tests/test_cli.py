import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def myriad(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "myriad", *args], cwd=REPO, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}, check=check, timeout=60)


def test_help_explains_itself():
    out = myriad("--help").stdout
    for verb in ("serve", "tenants", "keys", "bench"):
        assert verb in out
    assert "hibernation" in myriad("bench", "--help").stdout


def test_tenants_and_keys(tmp_path: Path):
    d = str(tmp_path)
    myriad("tenants", "create", "acme", "--data-dir", d)
    assert myriad("tenants", "list", "--data-dir", d).stdout.split() == ["acme"]
    key = myriad("keys", "create", "--tenant", "acme", "--label", "ci", "--data-dir", d).stdout.strip().splitlines()[-1]
    assert key.startswith("myr_")
    key_id = key.split("_")[1]
    assert "active" in myriad("keys", "list", "--data-dir", d).stdout
    myriad("keys", "revoke", key_id, "--data-dir", d)
    assert "revoked" in myriad("keys", "list", "--data-dir", d).stdout


def test_errors_are_sentences_not_tracebacks(tmp_path: Path):
    r = myriad("keys", "create", "--tenant", "ghost", "--data-dir", str(tmp_path), check=False)
    assert r.returncode == 2 and "tenant 'ghost' does not exist" in r.stderr and "Traceback" not in r.stderr
    r = myriad("tenants", "create", "Bad Name!", "--data-dir", str(tmp_path), check=False)
    assert r.returncode == 2 and "invalid tenant name" in r.stderr
    r = myriad("serve", "--agents", "no.such.module", "--data-dir", str(tmp_path), check=False)
    assert r.returncode == 2 and "cannot import agents module" in r.stderr


def test_usage_verb_reads_the_ledger(tmp_path: Path):
    r = myriad("usage", "--data-dir", str(tmp_path), "totals", "--tenant", "default", "--format", "json")
    assert r.returncode == 0
    assert "Traceback" not in r.stderr
