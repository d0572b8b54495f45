from llama_index.retrievers.rag_rerank.base import ChromaBiEncoderRetriever, hit_to_node

__all__ = ["ChromaBiEncoderRetriever", "hit_to_node"]
