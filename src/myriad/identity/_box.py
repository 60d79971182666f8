"""Encryption at rest: AES-256-GCM with the identity secret key.

The key comes from settings (``identity.secret_key``, base64url of 32 bytes). For the
embedded single-machine mode an empty setting means: generate one once into
``<data_dir>/identity.key`` with mode 0600. Every ciphertext is bound to its row by
associated data, so a ciphertext copied to another row does not decrypt.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from myriad.errors import ConfigError, StorageError
from myriad.identity.jose import b64url, b64url_decode

_VERSION = b"\x01"


class SecretBox:
    """Seal and open small secrets with AES-256-GCM (random 96-bit nonces)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ConfigError("identity.secret_key must be 32 bytes (base64url-encoded)")
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, aad: str) -> bytes:
        nonce = secrets.token_bytes(12)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, aad.encode())

    def open(self, blob: bytes, aad: str) -> bytes:
        if len(blob) < 29 or blob[:1] != _VERSION:
            raise StorageError("a sealed secret is corrupt")
        try:
            return self._aead.decrypt(blob[1:13], blob[13:], aad.encode())
        except InvalidTag:
            raise StorageError("a sealed secret does not open with the configured identity.secret_key "
                               "(was the key changed, or the row tampered with?)") from None


def secret_key(configured: str, data_dir: Path) -> bytes:
    """The configured key, else the one kept in ``<data_dir>/identity.key`` (created on first use)."""
    if configured:
        try:
            return b64url_decode(configured.strip())
        except ValueError:
            raise ConfigError("identity.secret_key is not base64url") from None
    path = Path(data_dir) / "identity.key"
    if path.exists():
        return b64url_decode(path.read_text().strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    tmp = path.with_name(f".identity.key.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(b64url(key) + "\n")
    try:
        os.link(tmp, path)  # atomic; if another process won the race, use its key
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return b64url_decode(path.read_text().strip())


__all__ = ["SecretBox", "secret_key"]
