"""This package's tests run alone (`pytest` in this folder) or in the repository's suite: the fixtures
every rag-rerank suite shares (offline e5 and the shipped reranker, tiny models, a Chroma server, the demo's
Korean corpus) come from the core package."""
from rag_rerank.testing.fixtures import *  # noqa: F401,F403
