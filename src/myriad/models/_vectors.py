"""A small in-memory vector index (cosine similarity on unit vectors, numpy).

Exact search over a matrix that is rebuilt lazily after appends: for the sizes the
gateway keeps per tenant (thousands of cached prompts or routing outcomes), one
matrix-vector product is well under a millisecond and needs no ANN library.
"""

from __future__ import annotations

from typing import Generic, Sequence, TypeVar

import numpy as np

P = TypeVar("P")


def unit(vec: Sequence[float]) -> np.ndarray:
    v = np.asarray(vec, dtype=np.float32)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


class VectorIndex(Generic[P]):
    """Vectors with payloads; oldest entries leave first beyond ``max_entries``."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._vecs: list[np.ndarray] = []
        self.payloads: list[P] = []
        self._matrix: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self._vecs)

    def add(self, vec: Sequence[float], payload: P) -> None:
        self._vecs.append(unit(vec))
        self.payloads.append(payload)
        if len(self._vecs) > self.max_entries:
            drop = len(self._vecs) - self.max_entries
            del self._vecs[:drop]
            del self.payloads[:drop]
        self._matrix = None

    def remove(self, indices: Sequence[int]) -> None:
        for i in sorted(set(indices), reverse=True):
            del self._vecs[i]
            del self.payloads[i]
        self._matrix = None

    def matrix(self) -> np.ndarray:
        if self._matrix is None:
            self._matrix = np.vstack(self._vecs) if self._vecs else np.zeros((0, 1), dtype=np.float32)
        return self._matrix

    def similarities(self, vec: Sequence[float]) -> np.ndarray:
        """Cosine similarity of ``vec`` to every entry, in insertion order."""
        if not self._vecs:
            return np.zeros(0, dtype=np.float32)
        sims: np.ndarray = self.matrix() @ unit(vec)
        return sims

    def nearest(self, vec: Sequence[float], k: int = 1) -> list[tuple[float, int]]:
        """The ``k`` most similar entries as (similarity, index), best first."""
        sims = self.similarities(vec)
        if sims.size == 0:
            return []
        k = min(k, sims.size)
        idx = np.argpartition(-sims, k - 1)[:k]
        idx = idx[np.argsort(-sims[idx])]
        return [(float(sims[i]), int(i)) for i in idx]


__all__ = ["VectorIndex", "unit"]
