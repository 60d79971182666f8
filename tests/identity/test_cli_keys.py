"""``myriad keys create --scopes`` and ``myriad keys rotate`` (in process, real data dir)."""

from myriad.cli import main
from myriad.identity import KeyStore


def test_keys_create_scoped_and_rotate(tmp_path, capsys):
    d = str(tmp_path)
    assert main(["tenants", "create", "acme", "--data-dir", d]) == 0
    assert main(["keys", "create", "--tenant", "acme", "--scopes", "agents models:gpt-4o", "--data-dir", d]) == 0
    key = capsys.readouterr().out.strip().splitlines()[-1]
    store = KeyStore(tmp_path)
    assert store.verify(key).scopes == {"agents", "models:gpt-4o"}
    key_id = key.split("_")[1]
    assert main(["keys", "rotate", key_id, "--data-dir", d]) == 0
    new = capsys.readouterr().out.strip().splitlines()[-1]
    assert store.verify(new).scopes == {"agents", "models:gpt-4o"}
    assert main(["keys", "list", "--data-dir", d]) == 0
    listing = capsys.readouterr().out
    assert "revoked" in listing and "models:gpt-4o" in listing
    assert main(["keys", "create", "--tenant", "acme", "--scopes", "Bad!", "--data-dir", d]) == 2
    assert "invalid scope" in capsys.readouterr().err
    store.close()
