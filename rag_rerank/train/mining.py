"""Hard negatives from our own first stage, plus random ones.

A reranker sees, at query time, the first stage's top candidates: the
negatives that teach it most are those same candidates (minus the positives).
Random negatives keep the easy end of the scale calibrated.
"""
from __future__ import annotations

import random
from typing import Protocol, Sequence

from ..types import Document, Hit
from .data import Group, TrainingData


class FirstStage(Protocol):
    def candidates(self, query: str, k: int) -> list[Hit]: ...


def mine_hard_negatives(data: TrainingData, first_stage: FirstStage, *, corpus: Sequence[str] | None = None,
                        num_hard: int = 4, num_random: int = 1, candidate_k: int = 30, skip_top: int = 0,
                        seed: int = 0) -> TrainingData:
    """Return new data whose groups carry ``num_hard`` mined + ``num_random`` random negatives.

    ``first_stage`` is a :class:`~rag_rerank.pipeline.TwoStageRetriever` (its ``candidates``)
    or an :class:`~rag_rerank.corpus.InMemoryCorpus`; ``corpus`` (texts) feeds the random
    negatives and defaults to the first stage's own texts when it has them. Positives are
    never used as negatives. Each group also keeps the first stage's top ``candidate_k``
    texts in rank order (``Group.candidates``): validation uses them to evaluate reranking
    and tune fusion exactly as the pipeline will run. Scored pairs pass through unchanged.
    """
    rng = random.Random(seed)
    pool = list(corpus) if corpus is not None else _pool(first_stage)
    if num_random and not pool:
        raise ValueError("random negatives need a corpus: pass corpus=[...] or num_random=0")
    queries = [g.query for g in data.groups]
    many = getattr(first_stage, "candidates_many", None)
    k = candidate_k + skip_top
    ranked = many(queries, k) if many else [first_stage.candidates(q, k) for q in queries]
    groups = []
    for group, hits in zip(data.groups, ranked):
        banned = set(group.positives) | set(group.negatives)
        hard = [h.text for h in hits[skip_top:] if h.text not in banned]
        hard = list(dict.fromkeys(hard))[:num_hard]
        taken = banned | set(hard)
        randoms: list[str] = []
        for _ in range(num_random * 20):
            if len(randoms) >= num_random:
                break
            doc = rng.choice(pool)
            if doc not in taken:
                randoms.append(doc)
                taken.add(doc)
        ranked_texts = list(dict.fromkeys(h.text for h in hits[:k]))
        groups.append(Group(group.query, list(group.positives), group.negatives + hard + randoms, ranked_texts))
    return TrainingData(groups, list(data.pairs))


class SavedCandidates:
    """A first stage replayed from saved candidate lists (``rag-rerank mine`` / ``eval
    --save-candidates`` output): mining and training on a machine without the store.

    ``candidates(query, k)`` returns the saved ranking of that query. ``corpus``, the texts the
    rankings were searched in, is the random-negative pool and answers :meth:`find_texts`;
    without it the pool is every text the file names (candidates and positives alike) and only
    saved candidates count as found (a positive is never assumed to be in the corpus).
    """

    def __init__(self, data: TrainingData, mode: str = "saved", corpus: Sequence[str] | None = None) -> None:
        self.mode = mode
        # a query the first stage found nothing for is saved with no candidates: it replays as []
        self._ranked = {g.query: list(g.candidates) for g in data.groups}
        if not any(self._ranked.values()):
            raise ValueError("saved candidates: no row carries 'candidates' (write them with rag-rerank mine "
                             "or rag-rerank eval --save-candidates)")
        if corpus is not None:
            self.texts = list(dict.fromkeys(corpus))
            self._known = set(self.texts)
        else:
            self.texts = list(dict.fromkeys(t for g in data.groups for t in (*g.candidates, *g.positives)))
            self._known = {t for g in data.groups for t in g.candidates}

    def find_texts(self, texts: Sequence[str]) -> list[Document | None]:
        return [Document(t, {}, t) if t in self._known else None for t in texts]

    def candidates(self, query: str, k: int) -> list[Hit]:
        if query not in self._ranked:
            raise ValueError(f"saved candidates: no ranking saved for query {query[:60]!r}")
        return [Hit(str(r), text, {}, 1.0 / r, 1.0 / r, r) for r, text in enumerate(self._ranked[query][:k], 1)]


def _pool(first_stage, limit: int = 20000) -> list[str]:
    """Texts for random negatives: the in-memory corpus, or (a slice of) the store behind the pipeline."""
    if hasattr(first_stage, "texts"):
        return list(first_stage.texts)
    store = getattr(first_stage, "store", None)
    return [d.text for d in store.get(limit=limit)] if store is not None else []
