"""The vault: sealed at rest, bound to its row, matched by domain, scrubbed from text."""

import logging
import sqlite3

import pytest

from myriad.errors import InvalidRequest, StorageError
from myriad.identity import Identity, Redactor
from myriad.identity._box import SecretBox, secret_key

SECRET = "ghp_" + "s3cr3tT0k3n" * 3


def test_secret_is_encrypted_at_rest_and_only_lent_to_matching_hosts(identity, keystore, tmp_path):
    info = identity.vault.put("acme", "alice", "github", SECRET, domains=["api.github.com", "*.githubusercontent.com"])
    assert info.fingerprint.startswith("sha256:") and SECRET not in repr(info.to_json())
    raw = b"".join(tmp_path.joinpath(f).read_bytes() for f in ("identity.db", "identity.db-wal") if tmp_path.joinpath(f).exists())
    # every column of every stored row, as the database returns it (either backend)
    raw += b"".join(repr(tuple(r)).encode() for r in keystore.db.execute("SELECT * FROM credentials"))
    assert b"github" in raw
    assert SECRET.encode() not in raw and b"s3cr3tT0k3n" not in raw
    [inj] = identity.vault.injections_for("acme", "alice", "api.github.com")
    assert (inj.header, inj.value) == ("authorization", "Bearer " + SECRET)
    assert identity.vault.injections_for("acme", "alice", "raw.githubusercontent.com")
    assert identity.vault.injections_for("acme", "alice", "github.com.evil.net") == []
    assert identity.vault.injections_for("acme", "bob", "api.github.com") == []
    assert identity.vault.injections_for("other", "alice", "api.github.com") == []
    assert [c.provider for c in identity.vault.credentials("acme", "alice")] == ["github"]


def test_ciphertext_is_bound_to_its_row_and_key(identity, keystore, tmp_path, settings):
    identity.vault.put("acme", "alice", "github", SECRET, domains=["api.github.com"])
    identity.vault.put("acme", "mallory", "github", "mallorys-own-token", domains=["api.github.com"])
    # Copy alice's ciphertext into mallory's row: it must not open there.
    keystore.db.execute('UPDATE credentials SET sealed=(SELECT sealed FROM credentials WHERE "user"=\'alice\') WHERE "user"=\'mallory\'')
    with pytest.raises(StorageError, match="does not open"):
        identity.vault.injections_for("acme", "mallory", "api.github.com")
    settings.secret_key = "A" * 43  # a different 32-byte key
    other = Identity(settings, keystore, tmp_path)
    with pytest.raises(StorageError, match="does not open"):
        other.vault.injections_for("acme", "alice", "api.github.com")


def test_generated_key_file_is_private_and_stable(tmp_path):
    k1 = secret_key("", tmp_path)
    assert (tmp_path / "identity.key").stat().st_mode & 0o777 == 0o600
    assert secret_key("", tmp_path) == k1
    box = SecretBox(k1)
    assert box.open(box.seal(b"x", "a"), "a") == b"x"


@pytest.mark.parametrize("kwargs,param", [
    ({"provider": "GitHub!"}, "provider"), ({"secret": ""}, "secret"), ({"secret": "a\nb"}, "secret"),
    ({"domains": []}, "domains"), ({"domains": ["*"]}, "domains"), ({"domains": "api.github.com"}, "domains"),
    ({"header": "bad header"}, "header"),
])
def test_bad_credentials_are_400(identity, kwargs, param):
    args = {"provider": "github", "secret": SECRET, "domains": ["api.github.com"], **kwargs}
    provider, secret = args.pop("provider"), args.pop("secret")
    with pytest.raises(InvalidRequest) as e:
        identity.vault.put("acme", "alice", provider, secret, **args)
    assert e.value.details["param"] == param


def test_redactor_scrubs_logs(caplog):
    r = Redactor()
    r.add(SECRET)
    r.add("short")  # too short to redact safely
    assert r.redact(f"upstream said: bad token {SECRET}!") == "upstream said: bad token [REDACTED]!"
    log = logging.getLogger("test.vault")
    log.addFilter(r.logging_filter())
    with caplog.at_level(logging.INFO, logger="test.vault"):
        log.info("calling with %s", SECRET)
    assert SECRET not in caplog.text and "[REDACTED]" in caplog.text
