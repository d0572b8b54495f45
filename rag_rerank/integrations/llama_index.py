"""LlamaIndex adapters: a node postprocessor, a retriever and an embedding model.

    from rag_rerank.integrations.llama_index import (
        KoreanReranker, ChromaBiEncoderRetriever, KoreanEmbedding)

Unlike LlamaIndex's ``SentenceTransformerRerank``, :class:`KoreanReranker`
never mutates the nodes it is given, has real async, and emits both the
instrumentation events and the legacy callback on every path.
"""
from __future__ import annotations

import asyncio
from typing import Any, List, Optional

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode

from .. import fusion as fusion_lib
from .. import model_settings
from ..encoder import BiEncoder
from ..fusion import Fusion
from ..models import DEFAULT_ENCODER, DEFAULT_RERANKER
from ..pipeline import TwoStageRetriever
from ..reranker import Reranker
from ..types import Hit, check_k

dispatcher = get_dispatcher(__name__)


class KoreanReranker(BaseNodePostprocessor):
    """Rerank retrieved nodes with a Korean cross-encoder, fused with the order they arrive in.

    The incoming order is the first stage: with ``fusion="auto"`` (the default) the reranker's
    ranking is fused with it as the model's training chose on validation (``rag_rerank.json``;
    plain reranking for models without one), so a query engine gets the ranking
    :class:`~rag_rerank.pipeline.TwoStageRetriever` gives on the same candidates. ``fusion=None``:
    plain reranking. A node's ``score`` is the final pipeline score (what ``score_threshold``
    cuts on); ``metadata["rerank_score"]`` the reranker's [0, 1] relevance (absent for nodes below
    the fusion's depth, which the reranker does not score) and ``metadata["first_stage_score"]``
    the score it arrived with. Pass ``reranker=`` to share one loaded :class:`~rag_rerank.Reranker`
    between postprocessors; otherwise one is loaded from ``model``.
    """

    model: str = Field(default=DEFAULT_RERANKER, description="Hub name, local directory or offline:NAME.")
    top_n: int = Field(default=5, gt=0, description="Nodes returned.")
    batch_size: int = Field(default=32, gt=0, description="Pairs per forward pass.")
    device: Optional[str] = Field(default=None, description="cuda / mps / cpu; auto when None.")
    max_length: int = Field(default=512, gt=8, description="Tokens per (query, window) pair.")
    score_threshold: Optional[float] = Field(default=None, description="Drop nodes scoring below this.")
    keep_retrieval_score: bool = Field(default=False,
                                       description="Copy the incoming score to metadata['retrieval_score'].")
    fusion: Optional[Any] = Field(default="auto", description="'auto' (the model's saved fusion with the incoming "
                                  "order), None (plain reranking) or a rag_rerank.fusion.Fusion.")
    _reranker: Reranker = PrivateAttr()
    _fusion: Optional[Fusion] = PrivateAttr()

    def __init__(self, reranker: Optional[Reranker] = None, **data: Any) -> None:
        if reranker is not None:
            data.setdefault("model", reranker.model_name)
        super().__init__(**data)
        self._reranker = reranker or Reranker(self.model, device=self.device, max_length=self.max_length,
                                              batch_size=self.batch_size)
        self._fusion = fusion_lib.resolve(self.fusion, lambda: model_settings.load(self._reranker.path).fusion)

    @classmethod
    def class_name(cls) -> str:
        return "KoreanReranker"

    def _postprocess_nodes(self, nodes: List[NodeWithScore],
                           query_bundle: Optional[QueryBundle] = None) -> List[NodeWithScore]:
        query, texts = self._start(nodes, query_bundle)
        return self._finish(nodes, query_bundle, self._rank(query, texts))

    async def _apostprocess_nodes(self, nodes: List[NodeWithScore],
                                  query_bundle: Optional[QueryBundle] = None) -> List[NodeWithScore]:
        query, texts = self._start(nodes, query_bundle)
        # The model runs in a worker thread; events stay on the caller's task.
        return self._finish(nodes, query_bundle, await asyncio.to_thread(self._rank, query, texts))

    def _rank(self, query: str, texts: List[str]):
        """``(node index, final score, rerank score or None)`` best first."""
        return fusion_lib.rerank_fused(self._reranker, [query], [texts], self._fusion)[0] if texts else []

    def _start(self, nodes, query_bundle):
        if query_bundle is None:
            raise ValueError("KoreanReranker needs the query: pass query_bundle or query_str")
        dispatcher.event(ReRankStartEvent(query=query_bundle, nodes=nodes, top_n=self.top_n,
                                          model_name=self.model))
        return query_bundle.query_str, [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]

    def _finish(self, nodes, query_bundle, ranked) -> List[NodeWithScore]:
        with self.callback_manager.event(CBEventType.RERANKING, payload={
            EventPayload.NODES: nodes, EventPayload.MODEL_NAME: self.model,
            EventPayload.QUERY_STR: query_bundle.query_str, EventPayload.TOP_K: self.top_n,
        }) as event:
            kept = [r for r in ranked if self.score_threshold is None or r[1] >= self.score_threshold]
            new_nodes = [self._rescored(nodes[i], final, rerank) for i, final, rerank in kept[: self.top_n]]
            event.on_end(payload={EventPayload.NODES: new_nodes})
        dispatcher.event(ReRankEndEvent(nodes=new_nodes))
        return new_nodes

    def _rescored(self, node: NodeWithScore, final: float, rerank: Optional[float]) -> NodeWithScore:
        inner = node.node.model_copy()  # a copy: the caller's node keeps its metadata
        extra = {"first_stage_score": node.score}
        if rerank is not None:
            extra["rerank_score"] = float(rerank)
        if self.keep_retrieval_score:
            extra["retrieval_score"] = node.score
        inner.metadata = {**node.node.metadata, **extra}
        # scores are for ranking, not for the LLM or the embedding of the text
        inner.excluded_llm_metadata_keys = [*node.node.excluded_llm_metadata_keys, *extra]
        inner.excluded_embed_metadata_keys = [*node.node.excluded_embed_metadata_keys, *extra]
        return NodeWithScore(node=inner, score=float(final))


def hit_to_node(hit: Hit) -> NodeWithScore:
    metadata = dict(hit.metadata)
    metadata["first_stage_score"] = hit.first_stage_score
    if hit.rerank_score is not None:
        metadata["rerank_score"] = hit.rerank_score
    node = TextNode(id_=hit.id, text=hit.text, metadata=metadata,
                    excluded_embed_metadata_keys=["first_stage_score", "rerank_score"],
                    excluded_llm_metadata_keys=["first_stage_score", "rerank_score"])
    return NodeWithScore(node=node, score=hit.score)


class ChromaBiEncoderRetriever(BaseRetriever):
    """A LlamaIndex retriever over a :class:`~rag_rerank.store.ChromaStore`.

    Wraps a :class:`~rag_rerank.pipeline.TwoStageRetriever`; with ``rerank=False``
    (or a pipeline without reranker) it is the first stage alone, ready to
    feed a :class:`KoreanReranker` in a query engine.
    """

    def __init__(self, retriever: TwoStageRetriever, *, similarity_top_k: Optional[int] = None,
                 top_n: Optional[int] = None, rerank: bool = True, where: Optional[dict] = None,
                 callback_manager: Optional[CallbackManager] = None, verbose: bool = False) -> None:
        """``similarity_top_k``: nodes returned, LlamaIndex's name (``top_n`` is its old name here);
        default the pipeline's ``top_n`` (its ``candidate_k`` with ``rerank=False``)."""
        super().__init__(callback_manager=callback_manager, verbose=verbose)
        if similarity_top_k is not None and top_n is not None and similarity_top_k != top_n:
            raise ValueError(f"similarity_top_k={similarity_top_k} and top_n={top_n} disagree: give one")
        self.pipeline = retriever
        chosen = similarity_top_k if similarity_top_k is not None else top_n
        self.similarity_top_k = check_k(chosen) if chosen is not None else (
            retriever.top_n if rerank else retriever.candidate_k)
        self.rerank = rerank
        self.where = where

    def _retrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        hits = self.pipeline.retrieve(query_bundle.query_str, self.similarity_top_k, self.where, self.rerank)
        return [hit_to_node(h) for h in hits]

    async def _aretrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        hits = await self.pipeline.aretrieve(query_bundle.query_str, self.similarity_top_k, self.where, self.rerank)
        return [hit_to_node(h) for h in hits]


class KoreanEmbedding(BaseEmbedding):
    """Our :class:`~rag_rerank.encoder.BiEncoder` as a LlamaIndex embedding model.

    Queries get the query prompt and documents the passage prompt, so a
    ``VectorStoreIndex`` + ``ChromaVectorStore`` built with it matches a
    :class:`~rag_rerank.store.ChromaStore` built with the same model.
    """

    model_name: str = Field(default=DEFAULT_ENCODER)
    device: Optional[str] = Field(default=None)
    _encoder: BiEncoder = PrivateAttr()

    def __init__(self, encoder: Optional[BiEncoder] = None, **data: Any) -> None:
        if encoder is not None:
            data.setdefault("model_name", encoder.model_name)
        super().__init__(**data)
        self._encoder = encoder or BiEncoder(self.model_name, device=self.device, batch_size=self.embed_batch_size)

    @classmethod
    def class_name(cls) -> str:
        return "KoreanEmbedding"

    def _get_query_embedding(self, query: str) -> List[float]:
        return self._encoder.embed_query(query).tolist()

    def _get_text_embedding(self, text: str) -> List[float]:
        return self._encoder.embed_passages([text])[0].tolist()

    def _get_text_embeddings(self, texts: List[str]) -> List[List[float]]:
        return self._encoder.embed_passages(texts).tolist()

    async def _aget_query_embedding(self, query: str) -> List[float]:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> List[float]:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: List[str]) -> List[List[float]]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)
