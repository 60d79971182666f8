"""A real ``myriad serve`` routed to a real simulated OpenAI-compatible upstream, for
the tests that drive the gateway with real OpenAI clients (Responses API, Agents
SDK, LangChain, the Vercel AI SDK)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.integration.live import LiveServer

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"

CONFIG = """
[router]
retries = 1
backoff = 0.01
attempt_timeout = 2
cooldown_failures = 1000
default_model = "fast"

[[deployment]]
name = "primary"
model = "fast"
provider = "openai"
base_url = "{base}"
upstream_model = "up-primary"
price = {{ input = 0.15, output = 0.6 }}

[[deployment]]
name = "backup"
model = "smart"
provider = "openai"
base_url = "{base}"
upstream_model = "up-backup"

[[deployment]]
name = "tiny"
model = "tiny"
provider = "openai"
base_url = "{base}"
upstream_model = "up-tiny"
context_window = 40

[[deployment]]
name = "native"
model = "native"
provider = "openai"
base_url = "{base}"
upstream_model = "up-native"
options = {{ responses_api = true }}

[[deployment]]
model = "embed"
provider = "openai"
base_url = "{base}"
upstream_model = "up-embed"
kind = "embedding"

[groups.fast]
fallbacks = ["smart"]

[groups.native]
fallbacks = ["smart"]
"""


def tiktoken_cache(into: Path) -> Path:
    """A ``TIKTOKEN_CACHE_DIR`` holding ``cl100k_base``, built from the npm package
    ``js-tiktoken`` (tests/node): these machines reach npm but not OpenAI's blob
    store, where tiktoken would download it. Byte-identical to the original (tiktoken
    checks its sha256)."""
    ranks = NODE_DIR / "node_modules" / "js-tiktoken" / "dist" / "ranks" / "cl100k_base.js"
    if not ranks.exists():
        pytest.fail("npm packages missing: run scripts/setup.sh --test (npm install in tests/node)")
    text = ranks.read_text()
    data = json.loads(text[text.index("{"):text.rindex("}") + 1])
    lines = []
    for row in data["bpe_ranks"].split("\n"):
        if row:
            _, offset, *tokens = row.split(" ")
            lines += [f"{t} {int(offset) + i}\n" for i, t in enumerate(tokens)]
    into.mkdir(parents=True, exist_ok=True)
    (into / hashlib.sha1(CL100K_URL.encode()).hexdigest()).write_bytes("".join(lines).encode())
    return into


def start(tmp: Path, base_url: str) -> LiveServer:
    cfg = tmp / "models.toml"
    cfg.write_text(CONFIG.format(base=base_url))
    env = {"MYRIAD_MODELS__CONFIG": str(cfg), "TIKTOKEN_CACHE_DIR": str(tiktoken_cache(tmp / "tiktoken"))}
    return LiveServer(tmp / "data", env=env).start()


__all__ = ["NODE_DIR", "start", "tiktoken_cache"]
