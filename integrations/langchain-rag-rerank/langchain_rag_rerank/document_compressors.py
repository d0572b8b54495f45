"""KoreanCrossEncoderReranker: a document compressor running rag-rerank's second stage."""
from __future__ import annotations

import asyncio
from typing import Any, Optional, Sequence

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import ConfigDict, Field, PrivateAttr

from rag_rerank.models import DEFAULT_RERANKER
from rag_rerank.retrieval.pipeline import SecondStage
from rag_rerank.reranker import Reranker
from rag_rerank.types import check_query


class KoreanCrossEncoderReranker(BaseDocumentCompressor):
    """Rerank documents with a Korean cross-encoder, fused with the order they arrive in.

    The incoming order is the first stage (the base retriever's ranking): with ``fusion="auto"``
    (the default) the reranker's ranking is fused with it as the model's training chose on
    validation (plain reranking for models without saved settings), as
    :class:`~rag_rerank.retrieval.pipeline.TwoStageRetriever` does; ``fusion=None``: plain reranking.
    ``metadata['relevance_score']`` is the final pipeline score (what ``score_threshold`` cuts
    on), ``metadata['rerank_score']`` the reranker's [0, 1] relevance (absent below the fusion's
    depth); with ``keep_retrieval_score=True`` a score the document arrived with
    (``metadata['relevance_score']`` of an earlier stage) moves to ``metadata['retrieval_score']``.
    Returns copies: ids and all other metadata are kept, the inputs are untouched.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    model: str = Field(default=DEFAULT_RERANKER)
    top_n: int = Field(default=3, gt=0)
    score_threshold: Optional[float] = Field(default=None, allow_inf_nan=False)  # NaN would drop every document
    batch_size: Optional[int] = Field(default=None, gt=0)  # None: the Reranker's (64 on CUDA, 32 elsewhere)
    device: Optional[str] = None
    max_length: int = Field(default=512, gt=8)
    keep_retrieval_score: bool = False
    fusion: Optional[Any] = "auto"  # 'auto' | None | rag_rerank.retrieval.fusion.Fusion
    _stage: SecondStage = PrivateAttr()

    def __init__(self, reranker: Optional[Reranker] = None, **data: Any) -> None:
        super().__init__(**SecondStage.adapter_fields(reranker, data))
        self._stage = SecondStage.of(self, reranker)

    def compress_documents(self, documents: Sequence[Document], query: str,
                           callbacks: Optional[Callbacks] = None) -> Sequence[Document]:
        check_query(query)
        documents = list(documents)  # a generator too: read once, indexed by the ranking
        return self._select(documents, self._stage.rank(query, [d.page_content for d in documents]))

    async def acompress_documents(self, documents: Sequence[Document], query: str,
                                  callbacks: Optional[Callbacks] = None) -> Sequence[Document]:
        check_query(query)
        documents = list(documents)
        texts = [d.page_content for d in documents]
        return self._select(documents, await asyncio.to_thread(self._stage.rank, query, texts))


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
