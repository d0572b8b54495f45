"""LangChain adapters: a document compressor, a cross-encoder, a retriever, embeddings.

    from rag_rerank.integrations.langchain import (
        KoreanCrossEncoderReranker, KoreanCrossEncoder, KoreanChromaRetriever, KoreanEmbeddings)
"""
from __future__ import annotations

import asyncio
from typing import Any, Optional, Sequence

from langchain_core.callbacks import (AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun,
                                      Callbacks)
from langchain_core.cross_encoders import BaseCrossEncoder
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field, PrivateAttr

from .. import fusion as fusion_lib
from .. import model_settings
from ..encoder import BiEncoder
from ..fusion import Fusion
from ..models import DEFAULT_ENCODER, DEFAULT_RERANKER
from ..pipeline import TwoStageRetriever
from ..reranker import Reranker
from ..types import Hit, check_query


class KoreanCrossEncoder(BaseCrossEncoder):
    """``langchain_core`` cross-encoder interface, so ``CrossEncoderReranker`` can use our model."""

    def __init__(self, model: str = DEFAULT_RERANKER, *, reranker: Optional[Reranker] = None, **kwargs: Any):
        self.reranker = reranker or Reranker(model, **kwargs)

    def score(self, text_pairs: list[tuple[str, str]]) -> list[float]:
        if not text_pairs:
            return []
        # Group pairs by query so each query's documents share length-sorted batches.
        groups: dict[str, list[int]] = {}
        for i, (query, _) in enumerate(text_pairs):
            groups.setdefault(query, []).append(i)
        queries = list(groups)
        scored = self.reranker.score_many(queries, [[text_pairs[i][1] for i in groups[q]] for q in queries])
        out = [0.0] * len(text_pairs)
        for q, scores in zip(queries, scored):
            for i, s in zip(groups[q], scores):
                out[i] = s
        return out


class KoreanCrossEncoderReranker(BaseDocumentCompressor):
    """Rerank documents with a Korean cross-encoder, fused with the order they arrive in.

    The incoming order is the first stage (the base retriever's ranking): with ``fusion="auto"``
    (the default) the reranker's ranking is fused with it as the model's training chose on
    validation (plain reranking for models without saved settings), as
    :class:`~rag_rerank.pipeline.TwoStageRetriever` does; ``fusion=None``: plain reranking.
    ``metadata['relevance_score']`` is the final pipeline score (what ``score_threshold`` cuts
    on), ``metadata['rerank_score']`` the reranker's [0, 1] relevance (absent below the fusion's
    depth); with ``keep_retrieval_score=True`` a score the document arrived with
    (``metadata['relevance_score']`` of an earlier stage) moves to ``metadata['retrieval_score']``.
    Returns copies: ids and all other metadata are kept, the inputs are untouched.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    model: str = Field(default=DEFAULT_RERANKER)
    top_n: int = Field(default=3, gt=0)
    score_threshold: Optional[float] = None
    batch_size: int = Field(default=32, gt=0)
    device: Optional[str] = None
    max_length: int = Field(default=512, gt=8)
    keep_retrieval_score: bool = False
    fusion: Optional[Any] = "auto"  # 'auto' | None | rag_rerank.fusion.Fusion
    _reranker: Reranker = PrivateAttr()
    _fusion: Optional[Fusion] = PrivateAttr()

    def __init__(self, reranker: Optional[Reranker] = None, **data: Any) -> None:
        if reranker is not None:
            data.setdefault("model", reranker.model_name)
        super().__init__(**data)
        self._reranker = reranker or Reranker(self.model, device=self.device, max_length=self.max_length,
                                              batch_size=self.batch_size)
        self._fusion = fusion_lib.resolve(self.fusion, lambda: model_settings.load(self._reranker.path).fusion)

    def compress_documents(self, documents: Sequence[Document], query: str,
                           callbacks: Optional[Callbacks] = None) -> Sequence[Document]:
        check_query(query)
        return self._select(documents, self._rank(query, documents))

    async def acompress_documents(self, documents: Sequence[Document], query: str,
                                  callbacks: Optional[Callbacks] = None) -> Sequence[Document]:
        check_query(query)
        return self._select(documents, await asyncio.to_thread(self._rank, query, documents))

    def _rank(self, query: str, documents: Sequence[Document]):
        """``(document index, final score, rerank score or None)`` best first."""
        texts = [d.page_content for d in documents]
        return fusion_lib.rerank_fused(self._reranker, [query], [texts], self._fusion)[0] if texts else []

    def _select(self, documents: Sequence[Document], ranked) -> list[Document]:
        kept = [r for r in ranked if self.score_threshold is None or r[1] >= self.score_threshold]
        return [self._scored(documents[i], final, rerank) for i, final, rerank in kept[: self.top_n]]

    def _scored(self, doc: Document, final: float, rerank: Optional[float]) -> Document:
        extra: dict[str, Any] = {"relevance_score": float(final)}
        if rerank is not None:
            extra["rerank_score"] = float(rerank)
        if self.keep_retrieval_score and "relevance_score" in doc.metadata:
            extra["retrieval_score"] = doc.metadata["relevance_score"]
        return _with_metadata(doc, **extra)


def _with_metadata(doc: Document, **extra: Any) -> Document:
    return Document(page_content=doc.page_content, metadata={**doc.metadata, **extra}, id=doc.id)


def hit_to_document(hit: Hit) -> Document:
    metadata = {**hit.metadata, "first_stage_score": hit.first_stage_score}
    if hit.rerank_score is not None:
        metadata["relevance_score"] = hit.rerank_score
    return Document(page_content=hit.text, metadata=metadata, id=hit.id)


class KoreanChromaRetriever(BaseRetriever):
    """A LangChain retriever over a :class:`~rag_rerank.pipeline.TwoStageRetriever`.

    How many documents, as LangChain's own retrievers take it: ``k`` (``top_n`` is accepted as its
    old name), ``search_kwargs={"k": ..., "where": {...}}`` like ``VectorStoreRetriever``, or per
    call: ``retriever.invoke(query, k=1, where={...})``. A per-call value wins over
    ``search_kwargs``, which wins over the fields; unset, the pipeline's ``top_n`` (its
    ``candidate_k`` with ``rerank=False``).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True)

    pipeline: TwoStageRetriever
    k: Optional[int] = Field(default=None, gt=0, alias="top_n")
    search_kwargs: dict = Field(default_factory=dict)
    rerank: bool = True
    where: Optional[dict] = None

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun,
                                k: Optional[int] = None, where: Optional[dict] = None) -> list[Document]:
        hits = self.pipeline.retrieve(query, self._n(k), self._where(where), self.rerank)
        return [hit_to_document(h) for h in hits]

    async def _aget_relevant_documents(self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun,
                                       k: Optional[int] = None, where: Optional[dict] = None) -> list[Document]:
        hits = await self.pipeline.aretrieve(query, self._n(k), self._where(where), self.rerank)
        return [hit_to_document(h) for h in hits]

    def _n(self, k: Optional[int]) -> int:
        unknown = set(self.search_kwargs) - {"k", "where"}
        if unknown:  # a typo here would otherwise be ignored in silence
            raise ValueError(f"search_kwargs takes 'k' and 'where', not {', '.join(sorted(unknown))}")
        for value in (k, self.search_kwargs.get("k"), self.k):
            if value is not None:
                return value  # check_k in the pipeline refuses 0, negatives and non-integers
        return self.pipeline.top_n if self.rerank else self.pipeline.candidate_k

    def _where(self, where: Optional[dict]) -> Optional[dict]:
        return next((w for w in (where, self.search_kwargs.get("where"), self.where) if w is not None), None)


class KoreanEmbeddings(Embeddings):
    """Our bi-encoder as LangChain ``Embeddings`` (query and passage prompts applied)."""

    def __init__(self, model: str = DEFAULT_ENCODER, *, encoder: Optional[BiEncoder] = None, **kwargs: Any):
        self.encoder = encoder or BiEncoder(model, **kwargs)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.encoder.embed_passages(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.encoder.embed_query(text).tolist()

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        return await asyncio.to_thread(self.embed_query, text)
