from llama_index.postprocessor.rag_rerank.base import KoreanReranker

__all__ = ["KoreanReranker"]
