"""KoreanEmbeddings: rag-rerank's bi-encoder as LangChain Embeddings."""
from __future__ import annotations

import asyncio
from typing import Any, Optional

from langchain_core.embeddings import Embeddings

from rag_rerank.retrieval.encoder import BiEncoder
from rag_rerank.models import DEFAULT_ENCODER


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
