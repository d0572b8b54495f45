"""The LangChain adapters, re-exported from their own package ``langchain-rag-rerank``
(``integrations/langchain-rag-rerank``, module ``langchain_rag_rerank``)."""
try:
    from langchain_rag_rerank import (KoreanChromaRetriever, KoreanCrossEncoder, KoreanCrossEncoderReranker,
                                      KoreanEmbeddings, hit_to_document)
except ImportError as exc:  # pragma: no cover - said to whoever imports this without the package
    raise ImportError(f"rag_rerank.integrations.langchain needs the langchain-rag-rerank package ({exc}): "
                      "pip install -e integrations/langchain-rag-rerank") from exc

__all__ = ["KoreanChromaRetriever", "KoreanCrossEncoder", "KoreanCrossEncoderReranker", "KoreanEmbeddings",
           "hit_to_document"]
