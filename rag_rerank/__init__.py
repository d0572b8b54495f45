"""rag-rerank: Korean two-stage retrieval (bi-encoder over Chroma -> cross-encoder)."""
from .reranker import DEFAULT_RERANKER, RankedDoc, Reranker

__all__ = ["DEFAULT_RERANKER", "RankedDoc", "Reranker"]
__version__ = "0.1.0"
