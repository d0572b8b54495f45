"""TwoStageRetriever: first stage -> reranker -> fusion -> top n hits.

Data flows one way: the first stage (:mod:`rag_rerank.first_stage`) finds candidates, the
reranker scores them, :mod:`rag_rerank.fusion` combines its ranking with the first stage's and
with the known queries' documents, as the reranker's training chose
(:mod:`rag_rerank.model_settings`).
"""
from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import TYPE_CHECKING, Sequence

from . import fusion as fusion_lib
from . import known_queries as known_lib
from ..models import settings as model_settings
from .first_stage import FirstStage, Mode, StoreFirstStage, check_mode
from .fusion import Fusion
from .known_queries import KnownQueries
from ..types import Hit, check_k, check_query

if TYPE_CHECKING:
    from ..reranker import Reranker
    from .store import ChromaStore


def rerank_fused(reranker, queries: Sequence[str], candidates: Sequence[Sequence[str]],
                 fusion: Fusion | None = None) -> list[list[tuple[int, float, float | None]]]:
    """The second stage: rerank first-stage candidate lists (all queries share length-sorted batches)
    and fuse with the first stage's order (:func:`fuse_scores`).

    Returns per query ``(candidate index, final score, reranker score or None)`` best first; the
    reranker scores only the top ``fusion.depth`` candidates (None for the rest)."""
    fusion = fusion or fusion_lib.PLAIN
    heads = [list(c[: fusion.head(len(c))]) for c in candidates]
    return fuse_scores(candidates, reranker.score_many(list(queries), heads), fusion)


def fuse_scores(candidates: Sequence[Sequence[str]], scores: Sequence[Sequence[float]],
                fusion: Fusion) -> list[list[tuple[int, float, float | None]]]:
    """The second stage's ranking from the reranker's scores of each list's head (or of every candidate):
    what :func:`rerank_fused` returns, with no model run - ``rag-rerank eval`` scores each candidate once
    and fuses those scores several ways through here."""
    out = []
    for cands, s in zip(candidates, scores):
        final = fusion.fused_scores(s, len(cands))
        out.append([(i, final[i], s[i] if i < len(s) else None) for i in fusion.order(s, len(cands))])
    return out


class SecondStage:
    """A reranker and its fusion with the order candidates arrive in: the part of the pipeline the
    framework adapters run on the ranking their retriever hands them.

    ``fusion``: ``"auto"`` uses what ``rag-rerank train`` saved with the reranker (plain reranking
    for models without it), ``None`` plain reranking, or a :class:`~rag_rerank.fusion.Fusion`.
    """

    def __init__(self, reranker: "Reranker", fusion: Fusion | str | None = "auto") -> None:
        self.reranker = reranker
        self.fusion = fusion_lib.resolve(fusion, lambda: model_settings.load(reranker.path).fusion)

    @staticmethod
    def adapter_fields(reranker: "Reranker | None", data: dict) -> dict:
        """A framework adapter's fields: ``model`` names the given ``reranker`` unless the caller set it."""
        return data if reranker is None else {"model": reranker.model_name, **data}

    @classmethod
    def of(cls, adapter, reranker: "Reranker | None") -> "SecondStage":
        """The second stage of a framework adapter (its ``model``, ``fusion``, ``device``, ``max_length`` and
        ``batch_size`` fields): ``reranker`` shared as given, else loaded from those fields."""
        return cls.load(reranker, adapter.model, adapter.fusion, device=adapter.device,
                        max_length=adapter.max_length, batch_size=adapter.batch_size)

    @classmethod
    def load(cls, reranker: "Reranker | None", model: str, fusion: Fusion | str | None = "auto",
             **options) -> "SecondStage":
        """The adapters' one way in: a loaded ``reranker`` shared as given, else one loaded from
        ``model`` with ``options`` (device, max_length, batch_size)."""
        if reranker is None:
            from ..reranker import Reranker

            reranker = Reranker(model, **options)
        return cls(reranker, fusion)

    def rank(self, query: str, texts: Sequence[str]) -> list[tuple[int, float, float | None]]:
        """``(candidate index, final score, rerank score or None)`` best first, for ``texts`` in
        first-stage order (None: below the fusion's depth, not scored)."""
        texts = list(texts)
        return rerank_fused(self.reranker, [query], [texts], self.fusion)[0] if texts else []


class TwoStageRetriever:
    """One object a chatbot backend holds: ``retrieve(query)`` -> reranked hits.

    Args:
        store: the :class:`~rag_rerank.store.ChromaStore` to search, or any
            :class:`~rag_rerank.first_stage.FirstStage` (then ``mode`` and ``hybrid`` are its own).
        reranker: a :class:`~rag_rerank.Reranker`, a model name/path, or None for first stage only.
        mode: first stage over a store: ``dense`` (bi-encoder), ``bm25`` (Kiwi) or ``hybrid`` (RRF of both,
            the default). Beside a first stage it may only repeat that first stage's mode.
        candidate_k: candidates the first stage hands to the reranker.
        top_n: hits returned.
        hybrid: how BM25's ranking joins the dense one in ``hybrid`` mode: ``"auto"`` (the default)
            uses what the reranker's training tuned on validation (equal weights for other models),
            ``None`` equal weights, or a :class:`~rag_rerank.fusion.Fusion` (its weight is BM25's share).
        fusion: how the reranker's ranking combines with the first stage's: ``"auto"`` (the
            default) uses what was saved with the reranker (tuned on validation data by
            ``rag-rerank train``; plain reranking for other models), ``None`` plain reranking,
            or a :class:`~rag_rerank.fusion.Fusion`.
        known_queries: ``"auto"`` (the default) fuses in the documents that answered the
            training queries most similar to the query, when the reranker's training found on
            validation that they help (see :mod:`rag_rerank.known_queries`); ``None`` never, or a
            :class:`~rag_rerank.known_queries.KnownQueries`. Only documents the first stage's
            corpus holds join; they carry ``first_stage_rank`` 0 when the first stage did not find them.

    The default pipeline: hybrid candidates (top 50) -> the fine-tuned reranker on the
    depth its training chose -> fused with the first-stage rank as tuned on validation
    -> fused with the known queries' documents, when training switched them on.
    """

    def __init__(self, store: "ChromaStore | FirstStage", reranker: "Reranker | str | None" = None, *,
                 mode: Mode | None = None, candidate_k: int = 50, top_n: int = 5,
                 hybrid: Fusion | str | None = "auto", fusion: Fusion | str | None = "auto",
                 known_queries: KnownQueries | str | None = "auto") -> None:
        self.candidate_k = check_k(candidate_k, "candidate_k")
        self.top_n = check_k(top_n, "top_n")
        if isinstance(reranker, str):
            from ..reranker import Reranker

            reranker = Reranker(reranker)
        settings = model_settings.load(reranker.path if reranker is not None else None)
        if isinstance(store, FirstStage):
            # a first stage searches as it was built: a mode or hybrid given here beside it was ignored in
            # silence (mode="dense" over a BM25 corpus searched BM25)
            if mode is not None and check_mode(mode) != store.mode:
                raise ValueError(f"mode={mode!r}, but the first stage given searches in mode {store.mode!r}: set the "
                                 "mode where the first stage is built (e.g. InMemoryCorpus(texts, mode=...)) or "
                                 "leave mode unset")
            if fusion_lib.resolve(hybrid, lambda: None) is not None:
                raise ValueError("hybrid= applies to a store; a first stage given as it is keeps its own hybrid "
                                 "(e.g. InMemoryCorpus(texts, hybrid=Fusion(...)))")
            self.first_stage = store
        elif callable(getattr(store, "search_vector", None)) and hasattr(store, "lexical"):
            self.first_stage = StoreFirstStage(store, mode or "hybrid",
                                               hybrid=fusion_lib.resolve(hybrid, lambda: settings.hybrid))
        else:
            raise TypeError(f"store must be a ChromaStore or a first stage (e.g. InMemoryCorpus), got "
                            f"{type(store).__name__}")
        fusion = fusion_lib.resolve(fusion, lambda: settings.fusion)  # checked with or without a reranker
        # the second stage the framework adapters run, its fusion resolved from the settings read above
        self.second_stage = SecondStage(reranker, fusion) if reranker is not None else None
        self.known_queries = known_lib.resolve(
            known_queries, lambda: KnownQueries.load(reranker.path) if reranker is not None else None)

    @property
    def mode(self) -> str:
        return self.first_stage.mode

    @property
    def reranker(self) -> "Reranker | None":
        return self.second_stage.reranker if self.second_stage is not None else None

    @property
    def fusion(self) -> Fusion | None:
        """How the reranker's ranking joins the first stage's (None: plain reranking, or no reranker)."""
        return self.second_stage.fusion if self.second_stage is not None else None

    def candidates(self, query: str, k: int | None = None, where: dict | None = None) -> list[Hit]:
        """The first stage alone."""
        return self.candidates_many([query], k, where)[0]

    def candidates_many(self, queries: Sequence[str], k: int | None = None,
                        where: dict | None = None) -> list[list[Hit]]:
        """The first stage for many queries (embeddings computed in shared batches)."""
        return self.first_stage.candidates_many(queries, check_k(self.candidate_k if k is None else k), where)

    def retrieve(self, query: str, top_n: int | None = None, where: dict | None = None,
                 rerank: bool = True) -> list[Hit]:
        """Candidates -> rerank -> fusion -> ``top_n`` hits carrying every stage's score. A ``top_n`` above
        ``candidate_k`` takes ``top_n`` candidates (it returned only ``candidate_k`` hits, silently fewer)."""
        check_query(query)
        top_n = check_k(top_n if top_n is not None else self.top_n, "top_n")
        hits = self.candidates(query, max(self.candidate_k, top_n), where)
        if not rerank or self.reranker is None:
            return hits[:top_n]
        return self.rerank_hits(query, hits, where)[:top_n]

    def rerank_hits(self, query: str, hits: Sequence[Hit], where: dict | None = None) -> list[Hit]:
        """The second stage over first-stage ``hits`` (best first): rerank, fuse with their order and
        with the known queries' documents. ``retrieve`` is ``candidates`` then this."""
        check_query(query)
        if self.reranker is None:
            return list(hits)
        ranked = [hits[i].with_rerank(rerank_score, final) if rerank_score is not None
                  else replace(hits[i], score=final)
                  for i, final, rerank_score in self.second_stage.rank(query, [h.text for h in hits])]
        if self.known_queries is not None:  # also when the first stage found nothing
            ranked = self._with_known_queries(query, ranked, where)
        return ranked

    def _with_known_queries(self, query: str, ranked: list[Hit], where: dict | None) -> list[Hit]:
        """Fuse the reranked hits with the documents of the most similar known queries, by id."""
        by_text = {h.text: h for h in reversed(ranked)}  # the best-ranked hit of a text wins
        known = self.known_queries.search(query)
        missing = [t for t in known if t not in by_text]
        found = {d.text: d for d in self.first_stage.find_texts(missing, where) if d is not None} if missing else {}
        joined = [by_text[t] if t in by_text else Hit(found[t].id, t, found[t].metadata, 0.0, 0.0, 0)
                  for t in known if t in by_text or t in found]
        by_id = {h.id: h for h in (*joined, *ranked)}
        fused = self.known_queries.fusion.fuse([h.id for h in ranked], [h.id for h in joined])
        return [replace(by_id[i], score=score) for i, score in fused]

    async def aretrieve(self, query: str, top_n: int | None = None, where: dict | None = None,
                        rerank: bool = True) -> list[Hit]:
        """Async form: the blocking work runs in a worker thread, the event loop stays free."""
        return await asyncio.to_thread(self.retrieve, query, top_n, where, rerank)

    def __repr__(self) -> str:
        return (f"TwoStageRetriever(first_stage={self.first_stage!r}, candidate_k={self.candidate_k}, "
                f"top_n={self.top_n}, reranker={self.reranker!r}, fusion={self.fusion!r}, "
                f"known_queries={self.known_queries!r})")
