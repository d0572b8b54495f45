"""The LlamaIndex adapters, re-exported from their own package ``llama-index-rag-rerank``
(``integrations/llama-index-rag-rerank``): ``llama_index.postprocessor.rag_rerank``,
``llama_index.retrievers.rag_rerank`` and ``llama_index.embeddings.rag_rerank``."""
try:
    from llama_index.embeddings.rag_rerank import KoreanEmbedding
    from llama_index.postprocessor.rag_rerank import KoreanReranker
    from llama_index.retrievers.rag_rerank import ChromaBiEncoderRetriever, hit_to_node
except ImportError as exc:  # pragma: no cover - said to whoever imports this without the package
    raise ImportError(f"rag_rerank.integrations.llama_index needs the llama-index-rag-rerank package ({exc}): "
                      "pip install -e integrations/llama-index-rag-rerank") from exc

__all__ = ["ChromaBiEncoderRetriever", "KoreanEmbedding", "KoreanReranker", "hit_to_node"]
