"""KoreanReranker: a LlamaIndex node postprocessor running rag-rerank's second stage.

Unlike LlamaIndex's ``SentenceTransformerRerank``, it never mutates the nodes it is given, has real
async, emits both the instrumentation events and the legacy callback on every path, and fuses the
reranker with the order the nodes arrive in as the model's training chose.
"""
from __future__ import annotations

import asyncio
from typing import Any, List, Optional

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from rag_rerank.models import DEFAULT_RERANKER
from rag_rerank.retrieval.pipeline import SecondStage
from rag_rerank.reranker import Reranker

dispatcher = get_dispatcher(__name__)


class KoreanReranker(BaseNodePostprocessor):
    """Rerank retrieved nodes with a Korean cross-encoder, fused with the order they arrive in.

    The incoming order is the first stage: with ``fusion="auto"`` (the default) the reranker's
    ranking is fused with it as the model's training chose on validation (``rag_rerank.json``;
    plain reranking for models without one), so a query engine gets the ranking
    :class:`~rag_rerank.retrieval.pipeline.TwoStageRetriever` gives on the same candidates. ``fusion=None``:
    plain reranking. A node's ``score`` is the final pipeline score (what ``score_threshold``
    cuts on); ``metadata["rerank_score"]`` the reranker's [0, 1] relevance (absent for nodes below
    the fusion's depth, which the reranker does not score) and ``metadata["first_stage_score"]``
    the score it arrived with. Pass ``reranker=`` to share one loaded :class:`~rag_rerank.Reranker`
    between postprocessors; otherwise one is loaded from ``model``.
    """

    model: str = Field(default=DEFAULT_RERANKER, description="Hub name, local directory or offline:NAME.")
    top_n: int = Field(default=5, gt=0, description="Nodes returned.")
    batch_size: Optional[int] = Field(default=None, gt=0, description="Pairs per forward pass at full length "
                                      "(None: the Reranker's, 64 on CUDA and 32 elsewhere).")
    device: Optional[str] = Field(default=None, description="cuda / mps / cpu; auto when None.")
    max_length: int = Field(default=512, gt=8, description="Tokens per (query, window) pair.")
    score_threshold: Optional[float] = Field(default=None, allow_inf_nan=False,
                                             description="Drop nodes scoring below this.")
    keep_retrieval_score: bool = Field(default=False,
                                       description="Copy the incoming score to metadata['retrieval_score'].")
    fusion: Optional[Any] = Field(default="auto", description="'auto' (the model's saved fusion with the incoming "
                                  "order), None (plain reranking) or a rag_rerank.retrieval.fusion.Fusion.")
    _stage: SecondStage = PrivateAttr()

    def __init__(self, reranker: Optional[Reranker] = None, **data: Any) -> None:
        super().__init__(**SecondStage.adapter_fields(reranker, data))
        self._stage = SecondStage.of(self, reranker)

    @classmethod
    def class_name(cls) -> str:
        return "KoreanReranker"

    def _postprocess_nodes(self, nodes: List[NodeWithScore],
                           query_bundle: Optional[QueryBundle] = None) -> List[NodeWithScore]:
        query, texts = self._start(nodes, query_bundle)
        return self._finish(nodes, query_bundle, self._stage.rank(query, texts))

    async def _apostprocess_nodes(self, nodes: List[NodeWithScore],
                                  query_bundle: Optional[QueryBundle] = None) -> List[NodeWithScore]:
        query, texts = self._start(nodes, query_bundle)
        # The model runs in a worker thread; events stay on the caller's task.
        return self._finish(nodes, query_bundle, await asyncio.to_thread(self._stage.rank, query, texts))


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
