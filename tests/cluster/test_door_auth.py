"""The front door's authentication against a real PostgreSQL key store (no Ray): a
refused key is refused again from memory until the key store changes, a revocation
made elsewhere reaches it, and nothing it remembers outlives a change."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from myriad.cluster.door_auth import DoorAuth, needs_credential
from myriad.identity import KeyStore
from myriad.settings import Settings

pytestmark = pytest.mark.integration


def _scope(key: str | None) -> dict[str, Any]:
    headers = [(b"authorization", f"Bearer {key}".encode())] if key else []
    return {"type": "http", "method": "GET", "path": "/v1/models", "query_string": b"", "headers": headers}


def test_which_paths_the_door_authenticates() -> None:
    assert needs_credential("/v1/agents/tally/a/rpc") and needs_credential("/agents/tally/a")
    assert needs_credential("/v1/chat/completions") and needs_credential("/v1/nope")
    assert not needs_credential("/v1/oauth/token") and not needs_credential("/healthz")
    assert not needs_credential("/mcp/notes/alice") and not needs_credential("/.well-known/jwks.json")


async def test_refusals_are_remembered_until_the_key_store_changes(tmp_path: Path, pg_url: str) -> None:
    other = KeyStore(tmp_path / "cli", pg_url)  # another process's store, as `myriad keys` uses
    other.open()
    other.create_tenant("acme")
    _, good = other.create_key("acme")
    auth = DoorAuth(Settings.load(data_dir=tmp_path / "door"), pg_url)
    await auth.open()  # listening from here on: the writes above are not news to it
    try:
        lookups = [0]
        verify = auth.keys.verify

        def counted(presented: str | None) -> Any:
            lookups[0] += 1
            return verify(presented)

        auth.keys.verify = counted  # type: ignore[method-assign]
        wrong = "myr_0123456789ab_" + "x" * 27
        first = await auth.refusal(_scope(wrong))
        assert first is not None and first.message == "invalid API key" and lookups[0] == 1
        for _ in range(5):
            assert await auth.refusal(_scope(wrong)) is first
        assert lookups[0] == 1  # from memory: no query per repeated bad key
        missing = await auth.refusal(_scope(None))
        assert missing is not None and missing.message.startswith("missing API key")
        scope = _scope(good)
        assert await auth.refusal(scope) is None and scope["myriad.principal"].tenant == "acme"
        # a revocation elsewhere reaches the door (the key store's notification), and voids what it remembers
        other.revoke_key(good.split("_")[1])
        deadline = time.monotonic() + 2
        while (refused := await auth.refusal(_scope(good))) is None:
            assert time.monotonic() < deadline, "the door still accepts a key revoked 2 s ago"
            await asyncio.sleep(0.01)
        assert refused.message == "API key has been revoked"
        before = lookups[0]
        assert (await auth.refusal(_scope(wrong))).message == "invalid API key"  # type: ignore[union-attr]
        assert lookups[0] == before + 1  # the change voided the remembered refusal: looked up again
        assert await auth.refusal(_scope(good)) is refused  # and the revoked key is now remembered
    finally:
        other.close()
        auth.close()
