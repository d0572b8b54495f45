"""ChromaBiEncoderRetriever: a LlamaIndex retriever over rag-rerank's TwoStageRetriever."""
from __future__ import annotations

from typing import List, Optional

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from llama_index.core.vector_stores.types import FilterCondition, MetadataFilter, MetadataFilters

from rag_rerank.retrieval.pipeline import TwoStageRetriever
from rag_rerank.types import Hit, check_k


def hit_to_node(hit: Hit) -> NodeWithScore:
    metadata = dict(hit.metadata)
    metadata["first_stage_score"] = hit.first_stage_score
    if hit.rerank_score is not None:
        metadata["rerank_score"] = hit.rerank_score
    node = TextNode(id_=hit.id, text=hit.text, metadata=metadata,
                    excluded_embed_metadata_keys=["first_stage_score", "rerank_score"],
                    excluded_llm_metadata_keys=["first_stage_score", "rerank_score"])
    return NodeWithScore(node=node, score=hit.score)


_OPERATORS = {"==": "$eq", "!=": "$ne", ">": "$gt", ">=": "$gte", "<": "$lt", "<=": "$lte", "in": "$in",
              "nin": "$nin"}


def chroma_where(filters: MetadataFilters) -> dict:
    """LlamaIndex ``MetadataFilters`` as a Chroma ``where`` dict (what LlamaIndex's Chroma vector store sends):
    ``==`` ``!=`` ``>`` ``>=`` ``<`` ``<=`` ``in`` ``nin``, nested under ``and`` / ``or``. Operators Chroma's
    metadata filter has no form for (text match, contains, any/all, is_empty) and ``not`` are refused by name."""
    if filters.condition not in (FilterCondition.AND, FilterCondition.OR, None):
        raise ValueError(f"filters: condition {filters.condition.value!r} has no Chroma form; use 'and' or 'or'")
    parts = []
    for f in filters.filters:
        if isinstance(f, MetadataFilters):
            parts.append(chroma_where(f))
            continue
        if not isinstance(f, MetadataFilter):
            raise TypeError(f"filters: expected MetadataFilter or MetadataFilters, got {type(f).__name__}")
        op = _OPERATORS.get(f.operator.value)
        if op is None:
            raise ValueError(f"filters: operator {f.operator.value!r} (on {f.key!r}) has no Chroma metadata form; "
                             f"use one of {', '.join(_OPERATORS)}")
        parts.append({f.key: {op: f.value}})
    if not parts:
        raise ValueError("filters: no filter given (MetadataFilters(filters=[]))")
    if len(parts) == 1:
        return parts[0]
    return {"$or" if filters.condition == FilterCondition.OR else "$and": parts}


class ChromaBiEncoderRetriever(BaseRetriever):
    """A LlamaIndex retriever over a :class:`~rag_rerank.retrieval.store.ChromaStore`.

    Wraps a :class:`~rag_rerank.retrieval.pipeline.TwoStageRetriever`; with ``rerank=False``
    (or a pipeline without reranker) it is the first stage alone, ready to
    feed a :class:`KoreanReranker` in a query engine.
    """

    def __init__(self, retriever: TwoStageRetriever, *, similarity_top_k: Optional[int] = None,
                 top_n: Optional[int] = None, rerank: bool = True, where: Optional[dict] = None,
                 filters: Optional[MetadataFilters] = None, callback_manager: Optional[CallbackManager] = None,
                 verbose: bool = False) -> None:
        """``similarity_top_k``: nodes returned, LlamaIndex's name (``top_n`` is its old name here);
        default the pipeline's ``top_n`` (its ``candidate_k`` with ``rerank=False``). ``where``: a Chroma
        metadata filter; ``filters``: the same as LlamaIndex's ``MetadataFilters`` (as ``VectorIndexRetriever``
        takes them), turned into a ``where`` by :func:`chroma_where`."""
        super().__init__(callback_manager=callback_manager, verbose=verbose)
        if similarity_top_k is not None and top_n is not None and similarity_top_k != top_n:
            raise ValueError(f"similarity_top_k={similarity_top_k} and top_n={top_n} disagree: give one")
        self.pipeline = retriever
        chosen = similarity_top_k if similarity_top_k is not None else top_n
        self.similarity_top_k = check_k(chosen) if chosen is not None else (
            retriever.top_n if rerank else retriever.candidate_k)
        self.rerank = rerank
        if filters is not None and where is not None:
            raise ValueError("where and filters are both given (the same metadata filter): give one")
        self.where = chroma_where(filters) if filters is not None else where

    def _retrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        hits = self.pipeline.retrieve(query_bundle.query_str, self.similarity_top_k, self.where, self.rerank)
        return [hit_to_node(h) for h in hits]

    async def _aretrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        hits = await self.pipeline.aretrieve(query_bundle.query_str, self.similarity_top_k, self.where, self.rerank)
        return [hit_to_node(h) for h in hits]
