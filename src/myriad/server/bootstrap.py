"""First start: a ``default`` tenant and a key, printed once and kept 0600 on disk;
and a private data directory (0700, its files 0600) on every start."""

from __future__ import annotations

import os
from pathlib import Path

from myriad.identity import KeyStore


def ensure_default_tenant(keys: KeyStore, data_dir: Path) -> str:
    """Create the ``default`` tenant and its first key if absent; describe where the key is."""
    keys.open()
    Path(data_dir).mkdir(parents=True, exist_ok=True)  # with keys in PostgreSQL nothing else may have made it
    key_file = Path(data_dir) / "default.key"
    if keys.tenant_exists("default"):
        return f"{key_file} (tenant 'default')" if key_file.exists() else "tenant 'default' exists; create a key with `myriad keys create --tenant default`"
    keys.create_tenant("default")
    _, plaintext = keys.create_key("default", label="created on first start")
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(plaintext + "\n")
    print(f"\n  First start: created tenant 'default' with API key\n\n    {plaintext}\n\n"
          f"  (shown once; also saved 0600 in {key_file})", flush=True)
    return f"{key_file} (tenant 'default')"


def secure_data_dir(data_dir: Path) -> None:
    """The data directory holds key hashes, the audit log, the vault and every agent's
    SQL: 0700 for it and its directories, 0600 for its files, and a umask of 077 so
    whatever the server creates later is private too. (Sandbox workspaces are the
    sandbox tier's: it sets their modes explicitly, and keeps the default
    ``<data_dir>/sandboxes`` elsewhere when the sandbox users cannot walk to it.)"""
    os.umask(0o077)
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    for top, dirs, files in os.walk(data_dir):
        if top == str(data_dir) and "sandboxes" in dirs:
            dirs.remove("sandboxes")  # the sandbox tier manages its own modes
        for name in dirs:
            _chmod(os.path.join(top, name), 0o700)
        for name in files:
            _chmod(os.path.join(top, name), 0o600)


def _chmod(path: str, mode: int) -> None:
    try:
        os.chmod(path, mode, follow_symlinks=False)
    except (NotImplementedError, OSError):
        pass  # a symlink (no lchmod on Linux) or a file gone meanwhile


__all__ = ["ensure_default_tenant", "secure_data_dir"]
