"""First start: a ``default`` tenant and a key, printed once and kept 0600 on disk."""

from __future__ import annotations

import os
from pathlib import Path

from myriad.identity import KeyStore


def ensure_default_tenant(keys: KeyStore, data_dir: Path) -> str:
    """Create the ``default`` tenant and its first key if absent; describe where the key is."""
    keys.open()
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


__all__ = ["ensure_default_tenant"]
