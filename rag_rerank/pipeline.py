"""TwoStageRetriever: first-stage candidates (dense, BM25 or hybrid) -> reranker -> top n."""
from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Literal, Sequence

from . import fusion as fusion_config
from . import known_queries as known_config
from .known_queries import KnownQueries
from .reranker import Reranker, check_query
from .store import ChromaStore, _check_k
from .types import Hit

Mode = Literal["dense", "bm25", "hybrid"]
MODES = ("dense", "bm25", "hybrid")


def rrf_fuse(rankings: Sequence[Sequence[Hit]], weights: Sequence[float], k: int = 60) -> list[Hit]:
    """Weighted reciprocal-rank fusion: score = sum_i w_i / (k + rank_i)."""
    fused: dict[str, float] = {}
    first: dict[str, Hit] = {}
    for hits, w in zip(rankings, weights):
        for hit in hits:
            fused[hit.id] = fused.get(hit.id, 0.0) + w / (k + hit.first_stage_rank)
            first.setdefault(hit.id, hit)
    order = sorted(fused, key=lambda i: -fused[i])  # stable: earlier rankings win ties
    return [Hit(i, first[i].text, first[i].metadata, fused[i], fused[i], r) for r, i in enumerate(order, 1)]


class TwoStageRetriever:
    """One object a chatbot backend holds: ``retrieve(query)`` -> reranked hits.

    Args:
        store: the :class:`ChromaStore` to search.
        reranker: a :class:`Reranker`, a model name/path, or None for first stage only.
        mode: first stage: ``dense`` (bi-encoder), ``bm25`` (Kiwi) or ``hybrid`` (RRF of both).
        candidate_k: candidates the first stage hands to the reranker.
        top_n: hits returned.
        weights: (dense, bm25) weights of the hybrid fusion; ``rrf_k`` its rank constant.
        fusion: how the reranker's ranking combines with the first stage's: ``"auto"`` (the
            default) uses what the reranker carries (tuned on validation data by
            ``rag-rerank train`` and saved with the model; plain reranking for other models),
            ``None`` plain reranking, or a :class:`~rag_rerank.fusion.Fusion`.
        known_queries: ``"auto"`` (the default) fuses in the documents that answered the
            training queries most similar to the query, when the reranker's training found on
            validation that they help (see :mod:`rag_rerank.known_queries`); ``None`` never, or a
            :class:`~rag_rerank.known_queries.KnownQueries`. Only documents the store holds join;
            they carry ``first_stage_rank`` 0 when the first stage did not find them.

    The default pipeline: hybrid candidates (top 50) -> the fine-tuned reranker on the
    depth its training chose -> fused with the first-stage rank as tuned on validation
    -> fused with the known queries' documents, when training switched them on.
    """

    def __init__(self, store: ChromaStore, reranker: Reranker | str | None = None, *, mode: Mode = "hybrid",
                 candidate_k: int = 50, top_n: int = 5, weights: tuple[float, float] = (1.0, 1.0),
                 rrf_k: int = 60, fusion: fusion_config.Fusion | str | None = "auto",
                 known_queries: KnownQueries | str | None = "auto") -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; use one of {MODES}")
        _check_k(candidate_k)
        _check_k(top_n)
        if mode != "dense" and store.lexical is None:
            raise ValueError(f"mode {mode!r} needs a store opened with lexical=True")
        self.store = store
        self.reranker = Reranker(reranker) if isinstance(reranker, str) else reranker
        self.mode = mode
        self.candidate_k = candidate_k
        self.top_n = top_n
        self.weights = tuple(weights)
        self.rrf_k = rrf_k
        self.fusion = fusion_config.resolve(fusion, lambda: getattr(self.reranker, "fusion", None))
        self.known_queries = known_config.resolve(known_queries,
                                                  lambda: getattr(self.reranker, "known_queries", None))

    def candidates(self, query: str, k: int | None = None, where: dict | None = None) -> list[Hit]:
        """The first stage alone."""
        return self.candidates_many([query], k, where)[0]

    def candidates_many(self, queries: Sequence[str], k: int | None = None,
                        where: dict | None = None) -> list[list[Hit]]:
        """The first stage for many queries: their embeddings computed in shared batches."""
        queries = [check_query(q) for q in queries]
        k = k or self.candidate_k
        _check_k(k)
        if self.mode == "bm25":
            return [self.store.search_lexical(q, k, where) for q in queries]
        vectors = self.store.encoder.embed_queries(queries)
        dense = [self.store.search_vector(v, k, where) for v in vectors]
        if self.mode == "dense":
            return dense
        return [rrf_fuse([d, self.store.search_lexical(q, k, where)], self.weights, self.rrf_k)[:k]
                for q, d in zip(queries, dense)]

    def find_texts(self, texts: Sequence[str], where: dict | None = None):
        """The store's documents with exactly these texts (None where there is none)."""
        return self.store.find_texts(texts, where)

    def retrieve(self, query: str, top_n: int | None = None, where: dict | None = None,
                 rerank: bool = True) -> list[Hit]:
        """Candidates -> rerank -> ``top_n`` hits carrying both stage scores."""
        top_n = top_n or self.top_n
        _check_k(top_n)
        hits = self.candidates(query, where=where)
        if not rerank or self.reranker is None:
            return hits[:top_n]
        ranked: list[Hit] = []
        if hits:
            (order, fused, scores), = fusion_config.rerank_ranked(self.reranker, [query], [[h.text for h in hits]],
                                                                 self.fusion)
            ranked = [hits[i].with_rerank(scores[i], fused[i]) if i < len(scores) else hits[i] for i in order]
        if self.known_queries is not None:  # also when the first stage found nothing
            ranked = self._with_known_queries(query, ranked, where)
        return ranked[:top_n]

    def _with_known_queries(self, query: str, ranked: list[Hit], where: dict | None) -> list[Hit]:
        """Fuse the reranked hits with the documents of the most similar known queries."""
        by_text: dict[str, Hit] = {}
        for h in ranked:
            by_text.setdefault(h.text, h)
        known = self.known_queries.search(query)
        missing = [t for t in known if t not in by_text]
        found = {d.text: d for d in self.store.find_texts(missing, where) if d is not None} if missing else {}
        known = [t for t in known if t in by_text or t in found]
        out = []
        for text, score in self.known_queries.weight.ranked([h.text for h in ranked], known):
            if text in by_text:
                out.append(replace(by_text[text], score=score))
            else:
                doc = found[text]
                out.append(Hit(doc.id, doc.text, doc.metadata, score, 0.0, 0))
        return out

    async def aretrieve(self, query: str, top_n: int | None = None, where: dict | None = None,
                        rerank: bool = True) -> list[Hit]:
        """Async form: the blocking work runs in a worker thread, the event loop stays free."""
        return await asyncio.to_thread(self.retrieve, query, top_n, where, rerank)

    def __repr__(self) -> str:
        return (f"TwoStageRetriever(mode={self.mode!r}, candidate_k={self.candidate_k}, top_n={self.top_n}, "
                f"reranker={self.reranker!r}, fusion={self.fusion!r}, known_queries={self.known_queries!r})")
