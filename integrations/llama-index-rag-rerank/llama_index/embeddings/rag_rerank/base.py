"""KoreanEmbedding: rag-rerank's bi-encoder as a LlamaIndex embedding model."""
from __future__ import annotations

import asyncio
from typing import Any, List, Optional

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr

from rag_rerank.retrieval.encoder import BiEncoder
from rag_rerank.models import DEFAULT_ENCODER


class KoreanEmbedding(BaseEmbedding):
    """Our :class:`~rag_rerank.retrieval.encoder.BiEncoder` as a LlamaIndex embedding model.

    Queries get the query prompt and documents the passage prompt, so a
    ``VectorStoreIndex`` + ``ChromaVectorStore`` built with it matches a
    :class:`~rag_rerank.retrieval.store.ChromaStore` built with the same model.
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
