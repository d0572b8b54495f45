"""rag-rerank: Korean two-stage retrieval (bi-encoder over Chroma -> cross-encoder).

Names load on first use, so ``import rag_rerank`` (and ``rag-rerank --help``) do not import
torch; ``from rag_rerank import Reranker`` does.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import exports

__version__ = "0.1.0"

_EXPORTS = {
    "Reranker": "reranker", "RankedDoc": "types", "Document": "types", "Hit": "types",
    "DEFAULT_RERANKER": "models", "DEFAULT_ENCODER": "models",
    "TwoStageRetriever": "pipeline", "ChromaStore": "store", "BiEncoder": "encoder",
    "InMemoryCorpus": "first_stage", "Fusion": "fusion",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .encoder import BiEncoder
    from .first_stage import InMemoryCorpus
    from .fusion import Fusion
    from .models import DEFAULT_ENCODER, DEFAULT_RERANKER
    from .pipeline import TwoStageRetriever
    from .reranker import Reranker
    from .store import ChromaStore
    from .types import Document, Hit, RankedDoc


__getattr__, __dir__ = exports(__name__, _EXPORTS)
