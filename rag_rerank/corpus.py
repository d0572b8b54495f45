"""InMemoryCorpus: the first stage over a plain list of texts, no database.

Same ``candidates`` API and scores as :class:`~rag_rerank.pipeline.TwoStageRetriever`
over a :class:`~rag_rerank.store.ChromaStore` (exact search instead of HNSW),
for mining hard negatives and evaluating without a store.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .encoder import BiEncoder
from .lexical import KoreanBM25
from .pipeline import MODES, rrf_fuse
from .reranker import check_docs, check_query
from .store import _check_k
from .types import Document, Hit


class InMemoryCorpus:
    def __init__(self, texts: Sequence[str], *, mode: str = "hybrid", encoder: BiEncoder | str | None = None,
                 weights: tuple[float, float] = (1.0, 1.0), rrf_k: int = 60, bm25_tokenizer: str = "kiwi") -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; use one of {MODES}")
        self.texts = list(dict.fromkeys(check_docs(texts)))  # one entry per distinct text
        self.ids = [str(i) for i in range(len(self.texts))]
        self.mode, self.weights, self.rrf_k = mode, weights, rrf_k
        self._position: dict[str, int] | None = None
        self.encoder = None
        self._vectors = None
        if mode != "bm25":
            self.encoder = encoder if isinstance(encoder, BiEncoder) else BiEncoder(encoder or "intfloat/multilingual-e5-small")
            self._vectors = self.encoder.embed_passages(self.texts)
        self.lexical = None
        if mode != "dense":
            self.lexical = KoreanBM25(bm25_tokenizer)
            self.lexical.add(self.ids, self.texts)

    def candidates(self, query: str, k: int) -> list[Hit]:
        return self.candidates_many([query], k)[0]

    def find_texts(self, texts: Sequence[str]) -> list[Document | None]:
        """The corpus document whose text is exactly each of ``texts`` (None where there is none)."""
        if self._position is None:
            self._position = {t: i for i, t in enumerate(self.texts)}
        return [Document(t, {}, self.ids[self._position[t]]) if t in self._position else None for t in texts]

    def candidates_many(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        _check_k(k)
        queries = [check_query(q) for q in queries]
        dense = self._dense(queries, k) if self.mode != "bm25" else None
        lexical = [self._bm25(q, k) for q in queries] if self.mode != "dense" else None
        if self.mode == "dense":
            return dense
        if self.mode == "bm25":
            return lexical
        return [rrf_fuse([d, l], self.weights, self.rrf_k)[:k] for d, l in zip(dense, lexical)]

    def _dense(self, queries: list[str], k: int) -> list[list[Hit]]:
        sims = self.encoder.embed_queries(queries) @ self._vectors.T
        out = []
        for row in sims:
            top = np.argsort(-row, kind="stable")[:k]
            out.append([Hit(self.ids[i], self.texts[i], {}, float((1 + row[i]) / 2), float((1 + row[i]) / 2), r)
                        for r, i in enumerate(top, 1)])
        return out

    def _bm25(self, query: str, k: int) -> list[Hit]:
        return [Hit(i, self.texts[int(i)], {}, s, s, r) for r, (i, s) in enumerate(self.lexical.search(query, k), 1)]
