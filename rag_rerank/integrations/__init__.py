"""Framework adapters, each its own installable package under ``integrations/`` (the core
package never imports a framework); these modules re-export them:

* ``rag_rerank.integrations.llama_index`` -> ``llama-index-rag-rerank``
  (``llama_index.postprocessor.rag_rerank``, ``llama_index.retrievers.rag_rerank``,
  ``llama_index.embeddings.rag_rerank``)
* ``rag_rerank.integrations.langchain`` -> ``langchain-rag-rerank`` (``langchain_rag_rerank``)
"""
