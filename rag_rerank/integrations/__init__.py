"""Framework adapters. Import the one you use:

* ``rag_rerank.integrations.llama_index`` (needs ``rag-rerank[llama-index]``)
* ``rag_rerank.integrations.langchain`` (needs ``rag-rerank[langchain]``)

The core package never imports these frameworks.
"""
