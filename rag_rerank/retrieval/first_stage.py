"""The first stage: where candidates for the reranker come from.

One protocol, :class:`FirstStage`, and three implementations:

* :class:`StoreFirstStage` - a :class:`~rag_rerank.store.ChromaStore` searched dense, BM25 or
  hybrid (what :class:`~rag_rerank.pipeline.TwoStageRetriever` uses);
* :class:`InMemoryCorpus` - the same three modes over a plain list of texts, no database
  (exact search instead of HNSW), for mining and evaluation;
* :class:`SavedCandidates` - rankings saved by ``rag-rerank mine`` / ``eval --save-candidates``
  replayed, for training and evaluating on a machine without the store.

Hybrid is the weighted reciprocal-rank fusion (:func:`rag_rerank.fusion.weighted_rrf`) of the
dense and the BM25 ranking, by document id. Nothing here imports the reranker.
"""
from __future__ import annotations

import copy
import hashlib
import random
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Literal, Protocol, Sequence, runtime_checkable

import numpy as np

from .fusion import Fusion, tune
from ..types import Document, Hit, check_docs, check_k, check_queries

if TYPE_CHECKING:
    from .encoder import BiEncoder
    from .store import ChromaStore

Mode = Literal["dense", "bm25", "hybrid"]
MODES = ("dense", "bm25", "hybrid")
# The hybrid: BM25's ranking joins the dense one at equal weight (a Fusion's weight is the added
# ranking's share), RRF constant 60. rag-rerank train tunes it on validation (tune_hybrid).
EQUAL = Fusion(weight=0.5, rrf_k=60.0)


@runtime_checkable
class FirstStage(Protocol):
    """What the retriever, mining and evaluation need from a first stage."""

    mode: str

    def candidates_many(self, queries: Sequence[str], k: int, where: dict | None = None) -> list[list[Hit]]:
        """Each query's top ``k`` hits, best first (``first_stage_rank`` from 1)."""

    def candidates(self, query: str, k: int, where: dict | None = None) -> list[Hit]:
        """One query's top ``k`` hits."""

    def find_texts(self, texts: Sequence[str], where: dict | None = None) -> list[Document | None]:
        """The corpus document whose text is exactly each of ``texts`` (None where there is none)."""

    def sample_texts(self, limit: int) -> list[str]:
        """Texts of the corpus (up to ``limit``), the pool random training negatives come from."""


def holds(first_stage: FirstStage):
    """``texts -> [bool]``: which texts the first stage's corpus holds (what known-query documents
    are checked against)."""
    return lambda texts: [d is not None for d in first_stage.find_texts(texts)]


def candidates_and_sides(first_stage: FirstStage, queries: Sequence[str],
                         k: int) -> tuple[list[list[Hit]], list[dict[str, list[str]]]]:
    """Each query's top ``k`` hits, and the texts of the two rankings a re-weightable hybrid fused
    them from (``{}`` for any other first stage): what mining and ``eval --save-candidates`` save."""
    if isinstance(first_stage, DenseAndLexical) and first_stage.reweightable:
        hits, sides = first_stage.candidates_and_sides_many(queries, k)
        return hits, [{side: [h.text for h in side_hits] for side, side_hits in s.items()} for s in sides]
    return first_stage.candidates_many(queries, k), [{} for _ in queries]


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; use one of {MODES}")
    return mode


def hybrid(dense: Sequence[Hit], lexical: Sequence[Hit], fusion: Fusion = EQUAL) -> list[Hit]:
    """Dense and BM25 hits of one query fused by id (BM25 is the added ranking: ``fusion.weight``
    is its share); ``score`` is the fused value."""
    by_id: dict[str, Hit] = {}
    for hit in (*dense, *lexical):
        by_id.setdefault(hit.id, hit)
    fused = fusion.fuse([h.id for h in dense], [h.id for h in lexical])
    return [Hit(i, by_id[i].text, by_id[i].metadata, s, s, r) for r, (i, s) in enumerate(fused, 1)]


class _Base:
    mode: str

    def candidates(self, query: str, k: int, where: dict | None = None) -> list[Hit]:
        return self.candidates_many([query], k, where)[0]

    def _no_filter(self, where: dict | None) -> None:
        if where:
            raise ValueError(f"{type(self).__name__} has no metadata: a where filter needs a store")


_SIDE_POOL = ThreadPoolExecutor(4, thread_name_prefix="rag-rerank-bm25-side")


class DenseAndLexical(_Base, ABC):
    """A first stage that searches both sides itself, so its hybrid can be re-weighted."""

    hybrid_fusion: Fusion = EQUAL
    reweightable = True  # whether both sides can be searched (saved candidates: only if they were saved)

    def candidates_many(self, queries: Sequence[str], k: int, where: dict | None = None) -> list[list[Hit]]:
        """Embeddings of all queries are computed in shared batches."""
        return self.candidates_and_sides_many(queries, k, where)[0]

    def candidates_and_sides_many(self, queries: Sequence[str], k: int,
                                  where: dict | None = None) -> tuple[list[list[Hit]], list[dict[str, list[Hit]]]]:
        """Each query's top ``k`` hits and, in hybrid mode, the two rankings they were fused from
        (``{"dense": hits, "bm25": hits}``; ``{}`` in the other modes)."""
        queries = check_queries(queries)
        k = check_k(k)
        if self.mode == "bm25":
            return self._lexical_many(queries, k, where), [{} for _ in queries]
        if self.mode == "dense":
            return self._dense_many(queries, k, where), [{} for _ in queries]
        # the two sides side by side: the encoder and Kiwi each release the GIL for their work
        lexical_side = _SIDE_POOL.submit(self._lexical_many, queries, k, where)
        try:
            dense = self._dense_many(queries, k, where)
        finally:
            lexical = lexical_side.result()
        fused = [hybrid(d, lx, self.hybrid_fusion)[:k] for d, lx in zip(dense, lexical)]
        return fused, [{"dense": d, "bm25": lx} for d, lx in zip(dense, lexical)]

    def sides_many(self, queries: Sequence[str], k: int, where: dict | None = None) -> tuple[list, list]:
        """Each query's dense and BM25 rankings, before they are fused (what :func:`tune_hybrid` weighs)."""
        queries = check_queries(queries)
        return self._dense_many(queries, check_k(k), where), self._lexical_many(queries, k, where)

    def with_hybrid(self, fusion: Fusion | None) -> "DenseAndLexical":
        """The same first stage with another hybrid fusion (None: equal weights)."""
        other = copy.copy(self)
        other.hybrid_fusion = fusion or EQUAL
        return other

    @abstractmethod
    def _dense_many(self, queries: list[str], k: int, where: dict | None) -> list[list[Hit]]:
        """Each query's dense top ``k``."""

    @abstractmethod
    def _lexical_many(self, queries: list[str], k: int, where: dict | None) -> list[list[Hit]]:
        """Each query's BM25 top ``k``."""


class StoreFirstStage(DenseAndLexical):
    """Dense, BM25 or hybrid search of a :class:`~rag_rerank.store.ChromaStore`."""

    def __init__(self, store: "ChromaStore", mode: Mode = "hybrid", *, hybrid: Fusion | None = None) -> None:
        self.mode = check_mode(mode)
        if mode != "dense" and store.lexical is None:
            raise ValueError(f"mode {mode!r} needs a store opened with lexical=True")
        self.store, self.hybrid_fusion = store, hybrid or EQUAL

    def _dense_many(self, queries: list[str], k: int, where: dict | None) -> list[list[Hit]]:
        vectors = self.store.encoder.embed_queries(queries)
        return [self.store.search_vector(v, k, where) for v in vectors]

    def _lexical_many(self, queries: list[str], k: int, where: dict | None) -> list[list[Hit]]:
        return [self.store.search_lexical(q, k, where) for q in queries]

    def find_texts(self, texts: Sequence[str], where: dict | None = None) -> list[Document | None]:
        return self.store.find_texts(texts, where)

    def sample_texts(self, limit: int = 20000) -> list[str]:
        return [d.text for d in self.store.get(limit=limit)]

    def __repr__(self) -> str:
        return f"StoreFirstStage({self.store!r}, mode={self.mode!r})"


class InMemoryCorpus(DenseAndLexical):
    """The first stage over a plain list of texts: same modes and scores as a store. A hit's id is its
    text's position in ``texts`` (a text given twice is one entry, at its first position)."""

    def __init__(self, texts: Sequence[str], *, mode: Mode = "hybrid", encoder: "BiEncoder | str | None" = None,
                 encoder_options: dict | None = None, hybrid: Fusion | None = None, bm25_tokenizer: str = "kiwi") -> None:
        """``encoder_options``: keyword arguments for a bi-encoder loaded by name (``backend``, ``threads``, ...)."""
        self.mode = check_mode(mode)
        # one entry per distinct text; its id is where it first stands in ``texts`` (a repeated text
        # earlier had shifted every later id off its text's position)
        self._id = {}  # text -> its id
        for i, text in enumerate(check_docs(texts)):
            self._id.setdefault(text, str(i))
        self.texts, self.ids = list(self._id), list(self._id.values())
        self._by_id = dict(zip(self.ids, self.texts))
        self.hybrid_fusion = hybrid or EQUAL
        self.encoder = None
        self._vectors = None
        if mode != "bm25":
            from .encoder import DEFAULT_ENCODER, as_bi_encoder

            self.encoder = as_bi_encoder(encoder or DEFAULT_ENCODER, encoder_options)
            self._vectors = self.encoder.embed_passages(self.texts)
        self.lexical = None
        if mode != "dense":
            from .lexical import KoreanBM25

            self.lexical = KoreanBM25(bm25_tokenizer)
            self.lexical.add(self.ids, self.texts)

    def find_texts(self, texts: Sequence[str], where: dict | None = None) -> list[Document | None]:
        self._no_filter(where)
        return [Document(t, {}, self._id[t]) if t in self._id else None for t in check_docs(texts, "texts")]

    def sample_texts(self, limit: int = 20000) -> list[str]:
        return self.texts[:limit]

    def _dense_many(self, queries: list[str], k: int, where: dict | None) -> list[list[Hit]]:
        self._no_filter(where)
        sims = self.encoder.embed_queries(queries) @ self._vectors.T
        out = []
        for row in sims:
            top = np.argsort(-row, kind="stable")[:k]
            out.append([Hit(self.ids[i], self.texts[i], {}, float((1 + row[i]) / 2), float((1 + row[i]) / 2), r)
                        for r, i in enumerate(top, 1)])
        return out

    def _lexical_many(self, queries: list[str], k: int, where: dict | None) -> list[list[Hit]]:
        self._no_filter(where)
        return [[Hit(i, self._by_id[i], {}, s, s, r) for r, (i, s) in enumerate(self.lexical.search(q, k), 1)]
                for q in queries]

    def __repr__(self) -> str:
        return f"InMemoryCorpus({len(self.texts)} texts, mode={self.mode!r})"


# BM25's share in the hybrid: 0 is dense alone, 1 BM25 alone (on Korean passages BM25 is often the
# stronger side, and equal weights pulled the hybrid below it); coarse, like every tuner here.
HYBRID_WEIGHTS = (0.5, 0.0, 0.2, 0.35, 0.65, 0.8, 0.9, 1.0)
HYBRID_RRF_KS = (60.0, 10.0)


def tune_hybrid(first_stage: DenseAndLexical, queries: Sequence[str], relevant: Sequence[set[str]], metric, *,
                depth: int = 50, min_gain: float = 0.002, tuned_on: str | None = None) -> tuple[Fusion, dict]:
    """Choose the hybrid's BM25 share and RRF constant on validation queries (equal weights kept
    unless another setting gains ``min_gain``). Weights 0 and 1 are in the grid, so on validation
    the tuned hybrid is never below its better side. Returns the fusion and what was tried."""
    dense, lexical = first_stage.sides_many(queries, depth)
    text = {h.id: h.text for row in (*dense, *lexical) for h in row}
    pairs = [([h.id for h in d], [h.id for h in lx]) for d, lx in zip(dense, lexical)]
    relevant = list(relevant)

    def evaluate(f: Fusion) -> float:
        return metric([[text[i] for i, _ in f.fuse(d, lx)][:depth] for d, lx in pairs], relevant)

    grid = [Fusion(w, k, None, tuned_on) for k in HYBRID_RRF_KS for w in HYBRID_WEIGHTS]
    best, report = tune(evaluate, grid, Fusion(EQUAL.weight, EQUAL.rrf_k, None, tuned_on), min_gain=min_gain)
    report.update(dense_value=evaluate(Fusion(0.0)), bm25_value=evaluate(Fusion(1.0)))
    return best, report


def text_id(text: str) -> str:
    """A stable id for a text that carries none (saved candidates, training files)."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


class SavedCandidates(DenseAndLexical):
    """A first stage replayed from saved rankings (``rag-rerank mine`` / ``eval --save-candidates``
    output, loaded with :func:`rag_rerank.train.data.load`).

    ``candidates(query, k)`` returns the saved ranking of that query. Where a hybrid saved its two
    rankings too (every row has ``Group.sides``), the first stage is re-weightable: after
    :meth:`with_hybrid` it fuses them anew, exactly as the store would have. ``corpus``, the texts
    the rankings were searched in, is the random-negative pool and answers :meth:`find_texts`;
    without it the pool is every text the file names (candidates and positives alike) and only
    saved candidates count as found (a positive is never assumed to be in the corpus).
    """

    def __init__(self, data, mode: str = "saved", corpus: Sequence[str] | None = None) -> None:
        self.mode = mode
        # a query the first stage found nothing for is saved with no candidates: it replays as []
        self._ranked = {g.query: list(g.candidates) for g in data.groups}
        if not any(self._ranked.values()):
            raise ValueError("saved candidates: no row carries 'candidates' (write them with rag-rerank mine "
                             "or rag-rerank eval --save-candidates)")
        self._sides = {g.query: g.sides for g in data.groups}
        self.reweightable = mode == "hybrid" and all(self._sides.values())
        self._reweighted = False
        if corpus is not None:
            self.texts = list(dict.fromkeys(corpus))
            self._known = set(self.texts)
        else:
            self.texts = list(dict.fromkeys(t for g in data.groups for t in (*g.candidates, *g.positives)))
            self._known = {t for g in data.groups for t in g.candidates}

    def candidates_and_sides_many(self, queries: Sequence[str], k: int,
                                  where: dict | None = None) -> tuple[list[list[Hit]], list[dict[str, list[Hit]]]]:
        self._no_filter(where)
        if self._reweighted:
            return super().candidates_and_sides_many(queries, k)
        k, queries = check_k(k), check_queries(queries)
        hits = [_replayed(self._saved(self._ranked, q)[:k]) for q in queries]
        sides = [{side: _replayed(texts[:k]) for side, texts in self._saved(self._sides, q).items()} for q in queries]
        return hits, sides

    def with_hybrid(self, fusion: Fusion | None) -> "SavedCandidates":
        if not self.reweightable:
            raise ValueError("saved candidates: re-weighting the hybrid needs both of its rankings saved (rows with "
                             "'dense' and 'bm25': rag-rerank mine / eval --save-candidates of a hybrid first stage)")
        other = super().with_hybrid(fusion)
        other._reweighted = True
        return other

    def _dense_many(self, queries: list[str], k: int, where: dict | None) -> list[list[Hit]]:
        return [_replayed(self._saved(self._sides, q)["dense"][:k]) for q in queries]

    def _lexical_many(self, queries: list[str], k: int, where: dict | None) -> list[list[Hit]]:
        return [_replayed(self._saved(self._sides, q)["bm25"][:k]) for q in queries]

    @staticmethod
    def _saved(table: dict, query: str):
        if query not in table:
            raise ValueError(f"saved candidates: no ranking saved for query {query[:60]!r}")
        return table[query]

    def find_texts(self, texts: Sequence[str], where: dict | None = None) -> list[Document | None]:
        self._no_filter(where)
        return [Document(t, {}, text_id(t)) if t in self._known else None for t in check_docs(texts, "texts")]

    def sample_texts(self, limit: int = 20000) -> list[str]:
        return self.texts if len(self.texts) <= limit else random.Random(0).sample(self.texts, limit)

    def __repr__(self) -> str:
        return f"SavedCandidates({len(self._ranked)} queries, mode={self.mode!r})"


def _replayed(texts: Sequence[str]) -> list[Hit]:
    """Saved texts as hits: the score is 1/rank (the saved file keeps the order, not the scores)."""
    return [Hit(text_id(t), t, {}, 1.0 / r, 1.0 / r, r) for r, t in enumerate(texts, 1)]
