"""KoreanCrossEncoder: rag-rerank's Reranker behind langchain-core's BaseCrossEncoder."""
from __future__ import annotations

from typing import Any, Optional

from langchain_core.cross_encoders import BaseCrossEncoder

from rag_rerank.models import DEFAULT_RERANKER
from rag_rerank.reranker import Reranker


class KoreanCrossEncoder(BaseCrossEncoder):
    """``langchain_core`` cross-encoder interface, so ``CrossEncoderReranker`` can use our model."""

    def __init__(self, model: str = DEFAULT_RERANKER, *, reranker: Optional[Reranker] = None, **kwargs: Any):
        self.reranker = reranker or Reranker(model, **kwargs)

    def score(self, text_pairs: list[tuple[str, str]]) -> list[float]:
        if not text_pairs:
            return []
        # Group pairs by query so each query's documents share length-sorted batches.
        groups: dict[str, list[int]] = {}
        for i, pair in enumerate(text_pairs):
            if isinstance(pair, (str, bytes)) or len(pair) != 2:
                raise ValueError(f"text_pairs[{i}] must be a (query, document) pair, got {pair!r:.80}")
            groups.setdefault(pair[0], []).append(i)
        queries = list(groups)
        scored = self.reranker.score_many(queries, [[text_pairs[i][1] for i in groups[q]] for q in queries])
        out = [0.0] * len(text_pairs)
        for q, scores in zip(queries, scored):
            for i, s in zip(groups[q], scores):
                out[i] = s
        return out
