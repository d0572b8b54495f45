"""LangChain integration of rag-rerank: Korean two-stage retrieval (Chroma + Kiwi BM25 first stage,
a fine-tuned Korean cross-encoder second stage)."""
from langchain_rag_rerank.cross_encoders import KoreanCrossEncoder
from langchain_rag_rerank.document_compressors import KoreanCrossEncoderReranker
from langchain_rag_rerank.embeddings import KoreanEmbeddings
from langchain_rag_rerank.retrievers import KoreanChromaRetriever, hit_to_document

__all__ = ["KoreanChromaRetriever", "KoreanCrossEncoder", "KoreanCrossEncoderReranker", "KoreanEmbeddings",
           "hit_to_document"]
