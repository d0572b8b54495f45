from llama_index.embeddings.rag_rerank.base import KoreanEmbedding

__all__ = ["KoreanEmbedding"]
