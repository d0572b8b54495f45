"""KoreanChromaRetriever: a LangChain retriever over rag-rerank's TwoStageRetriever."""
from __future__ import annotations

from typing import Optional

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field

from rag_rerank.retrieval.pipeline import TwoStageRetriever
from rag_rerank.types import Hit


def hit_to_document(hit: Hit) -> Document:
    metadata = {**hit.metadata, "first_stage_score": hit.first_stage_score}
    if hit.rerank_score is not None:
        metadata["relevance_score"] = hit.rerank_score
    return Document(page_content=hit.text, metadata=metadata, id=hit.id)


class KoreanChromaRetriever(BaseRetriever):
    """A LangChain retriever over a :class:`~rag_rerank.retrieval.pipeline.TwoStageRetriever`.

    How many documents, as LangChain's own retrievers take it: ``k`` (``top_n`` is accepted as its
    old name), ``search_kwargs={"k": ..., "where": {...}}`` like ``VectorStoreRetriever`` (``"filter"``,
    the name LangChain's Chroma retriever uses, is taken for ``"where"``), or per call:
    ``retriever.invoke(query, k=1, where={...})``. A per-call value wins over
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
        unknown = set(self.search_kwargs) - {"k", "where", "filter"}
        if unknown:  # a typo here would otherwise be ignored in silence
            raise ValueError(f"search_kwargs takes 'k' and 'where' (or its Chroma name 'filter'), not "
                             f"{', '.join(sorted(unknown))}")
        if {"where", "filter"} <= set(self.search_kwargs):
            raise ValueError("search_kwargs has both 'where' and 'filter' (the same Chroma filter): give one")
        for value in (k, self.search_kwargs.get("k"), self.k):
            if value is not None:
                return value  # check_k in the pipeline refuses 0, negatives and non-integers
        return self.pipeline.top_n if self.rerank else self.pipeline.candidate_k

    def _where(self, where: Optional[dict]) -> Optional[dict]:
        given = self.search_kwargs.get("where", self.search_kwargs.get("filter"))
        return next((w for w in (where, given, self.where) if w is not None), None)
