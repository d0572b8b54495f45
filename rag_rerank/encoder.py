"""BiEncoder: the first-stage embedding model (sentence-transformers)."""
from __future__ import annotations

import threading
from typing import Sequence

import numpy as np

from . import models
from .devices import resolve_device
from .models import DEFAULT_ENCODER
from .types import check_docs, check_query

__all__ = ["DEFAULT_ENCODER", "BiEncoder"]


class BiEncoder:
    """Embeds queries and passages into normalised vectors.

    Prompts: the model's own saved prompts (``query``/``passage``) win; e5
    models without them get ``"query: "``/``"passage: "``; other models none.
    Pass ``query_prompt``/``passage_prompt`` to override.
    """

    def __init__(self, model: str = DEFAULT_ENCODER, *, device: str | None = None, batch_size: int = 64,
                 query_prompt: str | None = None, passage_prompt: str | None = None,
                 max_length: int | None = None, trust_remote_code: bool = False,
                 local_files_only: bool | None = None) -> None:
        from sentence_transformers import SentenceTransformer

        self.model_name = str(model)
        self.path = models.resolve(model, local_files_only=local_files_only)
        self.device = resolve_device(device)
        self.model = SentenceTransformer(str(self.path), device=str(self.device),
                                         trust_remote_code=trust_remote_code)
        if max_length:
            self.model.max_seq_length = max_length
        saved = self.model.prompts or {}
        is_e5 = "e5" in self.model_name.lower() or "e5" in self.path.name.lower()
        self.query_prompt = query_prompt if query_prompt is not None else saved.get(
            "query", "query: " if is_e5 else "")
        self.passage_prompt = passage_prompt if passage_prompt is not None else saved.get(
            "passage", "passage: " if is_e5 else "")
        self.batch_size = batch_size
        # SentenceTransformer.encode shares one fast tokenizer: serialise calls.
        self._lock = threading.Lock()

    @property
    def dimension(self) -> int:
        getter = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(getter())

    def embed_query(self, query: str) -> np.ndarray:
        return self.embed_queries([check_query(query)])[0]

    def embed_queries(self, queries: Sequence[str]) -> np.ndarray:
        return self._encode([check_query(q) for q in queries], self.query_prompt)

    def embed_passages(self, passages: Sequence[str], show_progress: bool = False) -> np.ndarray:
        return self._encode(check_docs(passages), self.passage_prompt, show_progress)

    def _encode(self, texts: list[str], prompt: str, show_progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with self._lock:
            vectors = self.model.encode(texts, prompt=prompt, batch_size=self.batch_size,
                                        normalize_embeddings=True, convert_to_numpy=True,
                                        show_progress_bar=show_progress)
        return vectors.astype(np.float32, copy=False)

    def __repr__(self) -> str:
        return f"BiEncoder(model={self.model_name!r}, device={str(self.device)!r})"
