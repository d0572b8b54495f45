"""Plain data types shared by the stages (no framework types in the core)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class Document:
    """A document to store: text, flat metadata, optional id (content hash when None)."""

    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    id: str | None = None


@dataclass(frozen=True)
class Hit:
    """One retrieved document.

    ``score`` is the score the hit was ranked by at the last stage that ran:
    the reranker's [0, 1] relevance when reranked, the fused score when the
    reranker's ranking was fused with the first stage's (see :mod:`rag_rerank.fusion`)
    or with the known queries' documents (see :mod:`rag_rerank.known_queries`),
    else the first-stage score. ``first_stage_rank`` 0 marks a document found only
    through a known query (its ``first_stage_score`` is then 0 and ``rerank_score`` None).
    ``first_stage_score`` meaning depends on the mode: dense = cosine similarity
    mapped to [0, 1] as ``(1 + cos) / 2``; bm25 = Okapi BM25 (unbounded, >= 0);
    hybrid = weighted reciprocal-rank fusion ``sum w / (rrf_k + rank)``.
    """

    id: str
    text: str
    metadata: dict[str, Any]
    score: float
    first_stage_score: float
    first_stage_rank: int
    rerank_score: float | None = None

    def with_rerank(self, score: float, ranked_by: float | None = None) -> "Hit":
        return replace(self, score=score if ranked_by is None else ranked_by, rerank_score=score)
