"""rag-rerank: Korean two-stage retrieval (bi-encoder over Chroma -> cross-encoder).

Names load on first use, so ``import rag_rerank`` (and ``rag-rerank --help``) do not import
torch; ``from rag_rerank import Reranker`` does.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import alias_moved, exports

__version__ = "0.1.0"

_EXPORTS = {
    "Reranker": "reranker", "RankedDoc": "types", "Document": "types", "Hit": "types",
    "DEFAULT_RERANKER": "models", "DEFAULT_ENCODER": "models",
    "TwoStageRetriever": "retrieval.pipeline", "ChromaStore": "retrieval.store", "BiEncoder": "retrieval.encoder",
    "InMemoryCorpus": "retrieval.first_stage", "Fusion": "retrieval.fusion", "EngineSettings": "reranker.engine",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .retrieval.encoder import BiEncoder
    from .retrieval.first_stage import InMemoryCorpus
    from .retrieval.fusion import Fusion
    from .models import DEFAULT_ENCODER, DEFAULT_RERANKER
    from .retrieval.pipeline import TwoStageRetriever
    from .reranker import Reranker
    from .reranker.engine import EngineSettings
    from .retrieval.store import ChromaStore
    from .types import Document, Hit, RankedDoc


# The modules' first homes, from before the package had folders: `from rag_rerank.store import ChromaStore`,
# `from rag_rerank import fusion` keep working (the same module objects, imported on first use).
MOVED = {
    "encoder": "retrieval.encoder", "store": "retrieval.store", "lexical": "retrieval.lexical",
    "lexical_index": "retrieval.lexical_index", "first_stage": "retrieval.first_stage", "fusion": "retrieval.fusion",
    "pipeline": "retrieval.pipeline", "known_queries": "retrieval.known_queries",
    "model_delta": "models.delta", "model_settings": "models.settings", "onnx_backend": "models.export",
    "devices": "models.devices", "pairs": "reranker.pairs", "packed": "reranker.engine.packed",
    "graphs": "reranker.engine.graphs", "add_norm": "reranker.cuda.add_norm", "fused": "reranker.cuda.fused",
}
alias_moved(__name__, MOVED)
__getattr__, __dir__ = exports(__name__, _EXPORTS, MOVED)
