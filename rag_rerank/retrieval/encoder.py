"""BiEncoder: the first-stage embedding model (sentence-transformers, or on a CPU the exported graph
run by ONNX Runtime or OpenVINO)."""
from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from .. import models
from ..models.devices import resolve_device, resolve_dtype
from ..models import DEFAULT_ENCODER
from ..models.export import check_options, choose_backend, torch_instead
from ..types import check_docs, check_int, check_queries, check_query

__all__ = ["DEFAULT_ENCODER", "BiEncoder"]


class BiEncoder:
    """Embeds queries and passages into normalised vectors.

    Prompts: the model's own saved prompts (``query``/``passage``) win; e5
    models without them get ``"query: "``/``"passage: "``; other models none.
    Pass ``query_prompt``/``passage_prompt`` to override.

    ``dtype``: torch backend's weights and activations, ``"fp16"`` on CUDA and ``"fp32"`` elsewhere
    unless given; with ``backend="openvino"``, OpenVINO's choice for this CPU (bf16 where it has bf16
    units) unless given. ``self.dtype`` says what it computes in, as the Reranker's does.

    CPU backends run the transformer exported to ONNX (cached beside the weights) with the model's own
    pooling and unit-length vectors, and texts batched by length: ``backend="onnx"`` by ONNX Runtime
    (fp32, or int8 weights with ``quantize=True``), ``backend="openvino"`` by OpenVINO (on 2 cores
    with bf16 units 3.2x ``SentenceTransformer.encode``, bench/rerank_speed.py); ``threads`` sets
    their intra-op threads.
    """

    def __init__(self, model: str = DEFAULT_ENCODER, *, device: str | None = None, batch_size: int = 64,
                 query_prompt: str | None = None, passage_prompt: str | None = None,
                 max_length: int | None = None, trust_remote_code: bool = False,
                 local_files_only: bool | None = None, backend: Literal["auto", "torch", "onnx", "openvino"] = "auto",
                 quantize: bool = False, threads: int | None = None, dtype: str | None = None) -> None:
        batch_size = check_int(batch_size, "batch_size", minimum=1)  # 0 / -1 failed (or ran) deep inside a backend
        if max_length is not None:
            check_int(max_length, "max_length", minimum=1)
        asked = backend
        backend, self.backend_reason = choose_backend(backend, device, quantize=quantize,
                                                      trust_remote_code=trust_remote_code)
        cpu_backend = check_options(backend, device, quantize, threads)
        self.model_name = str(model)
        self.backend = backend
        self.path = models.resolve(model, local_files_only=local_files_only)
        self.device = resolve_device("cpu" if cpu_backend else device)
        if cpu_backend:
            try:
                self.model, self._graph = None, _GraphEncoder(self.path, backend, max_length, quantize, threads, dtype)
            except Exception as exc:  # chosen, not asked for: a model the CPU backends cannot run loads in torch
                self.backend_reason = torch_instead("BiEncoder", asked, backend, self.model_name, exc)
                cpu_backend, backend, self.backend = False, "torch", "torch"
        if cpu_backend:
            self.dtype = resolve_dtype(self._graph.graph.computes_in, self.device)
            saved = self._graph.prompts
        else:
            from sentence_transformers import SentenceTransformer

            # auto: fp16 on CUDA (as the Reranker: closer to fp32 than bf16, and about twice as fast)
            if dtype in (None, "auto"):
                dtype = "fp16" if self.device.type == "cuda" else "fp32"
            self.dtype = resolve_dtype(dtype, self.device)
            self.model = SentenceTransformer(str(self.path), device=str(self.device),
                                             trust_remote_code=trust_remote_code, model_kwargs={"dtype": self.dtype})
            self._graph = None
            if max_length:
                self.model.max_seq_length = max_length
            saved = self.model.prompts or {}
        is_e5 = is_e5_name(self.model_name) or is_e5_name(self.path.name)
        # prompts a model saved (sentence-transformers 6 fills empty defaults and says "document" for passages)
        saved = {k: v for k, v in (saved or {}).items() if isinstance(v, str) and v}
        self.query_prompt = query_prompt if query_prompt is not None else saved.get(
            "query", "query: " if is_e5 else "")
        self.passage_prompt = passage_prompt if passage_prompt is not None else saved.get(
            "passage", saved.get("document", "passage: " if is_e5 else ""))
        if not (self.path / "modules.json").exists() and models.has_head(self.path):  # headers read only then
            # a cross-encoder's encoder was trained to score pairs, not to place texts by meaning: its pooled
            # vectors search badly, in silence (sentence-transformers only logs that it made a mean pooling)
            warnings.warn(f"{self.model_name}: a cross-encoder (its weights carry a classification head, and it has "
                          "no sentence-transformers modules.json), not a bi-encoder: its embeddings were not trained "
                          "for search; give a bi-encoder (e.g. multilingual-e5-small) here and the cross-encoder to "
                          "the Reranker", stacklevel=2)
        self.batch_size = batch_size
        # SentenceTransformer.encode shares one fast tokenizer: serialise calls.
        self._lock = threading.Lock()

    @property
    def dimension(self) -> int:
        if self._graph is not None:
            return self._graph.dimension
        getter = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(getter())

    def embed_query(self, query: str) -> np.ndarray:
        return self.embed_queries([check_query(query)])[0]

    def embed_queries(self, queries: Sequence[str]) -> np.ndarray:
        return self._encode(check_queries(queries), self.query_prompt)

    def embed_passages(self, passages: Sequence[str], show_progress: bool = False) -> np.ndarray:
        return self._encode(check_docs(passages), self.passage_prompt, show_progress)

    @property
    def max_length(self) -> int:
        """Tokens a text is embedded from (its prompt and special tokens included); the rest is cut."""
        if self._graph is not None:
            return self._graph.max_length
        return int(self.model.max_seq_length or self.model.tokenizer.model_max_length)

    def count_truncated(self, passages: Sequence[str]) -> int:
        """How many of ``passages`` are longer than :attr:`max_length` tokens: their vectors are made from the
        start only (as every sentence-transformers model cuts), so dense search never sees the rest. Only texts
        longer in characters than the window are tokenised (a token covers at least one character)."""
        long = [self.passage_prompt + t for t in passages if len(self.passage_prompt) + len(t) > self.max_length - 2]
        if not long:
            return 0
        tokenizer = self._graph.tokenizer if self._graph is not None else self.model.tokenizer
        with self._lock:  # the fast tokenizer is shared with encode
            ids = tokenizer(long, truncation=False, verbose=False, return_attention_mask=False,
                            return_token_type_ids=False)["input_ids"]
        return sum(len(i) > self.max_length for i in ids)

    def _encode(self, texts: list[str], prompt: str, show_progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if self._graph is not None:
            with self._lock:
                return self._graph.encode([prompt + t for t in texts], self.batch_size)
        with self._lock:
            vectors = self.model.encode(texts, prompt=prompt, batch_size=self.batch_size,
                                        normalize_embeddings=True, convert_to_numpy=True,
                                        show_progress_bar=show_progress)
        return vectors.astype(np.float32, copy=False)

    def __repr__(self) -> str:
        where = f"backend={self.backend!r}" if self._graph is not None else f"device={str(self.device)!r}"
        return f"BiEncoder(model={self.model_name!r}, {where})"


class _GraphEncoder:
    """A sentence-transformers directory (Transformer -> Pooling -> Normalize) run as an exported graph."""

    def __init__(self, path: Path, backend: str, max_length: int | None, quantize: bool, threads: int | None,
                 dtype: str | None) -> None:
        from transformers import AutoConfig, AutoTokenizer

        from ..models import export as onnx_backend

        modules = models.read_json(path / "modules.json") or []
        kinds = [m.get("type", "").rsplit(".", 1)[-1] for m in modules]
        unknown = [k for k in kinds if k not in ("Transformer", "Pooling", "Normalize")]
        if unknown:
            raise ValueError(f"{path}: backend={backend!r} runs Transformer -> Pooling -> Normalize models; this one "
                             f"also has {', '.join(unknown)}: use backend='torch'")
        pooling_dir = next((m["path"] for m in modules if m.get("type", "").endswith("Pooling")), "1_Pooling")
        pooling = models.read_json(path / pooling_dir / "config.json") or {"pooling_mode_mean_tokens": True}
        self.pooling = ("cls" if pooling.get("pooling_mode_cls_token") else
                        "max" if pooling.get("pooling_mode_max_tokens") else "mean")
        st_config = models.read_json(path / "config_sentence_transformers.json") or {}
        self.prompts = st_config.get("prompts") or {}
        saved_max = (models.read_json(path / "sentence_bert_config.json") or {}).get("max_seq_length")
        config = AutoConfig.from_pretrained(str(path))
        self.dimension = int(config.hidden_size)
        self.max_length = min(x for x in (max_length, saved_max, config.max_position_embeddings, 512) if x)
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.graph = onnx_backend.load(path, "encoder", backend, quantize=quantize, threads=threads, dtype=dtype)

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        # Length-sorted batches: far less padding than input order on passages of mixed length.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = self.tokenizer([texts[i] for i in idx], truncation=True, max_length=self.max_length,
                                   padding=True, return_tensors="np")
            hidden = self.graph(batch).astype(np.float32)
            mask = batch["attention_mask"][..., None].astype(np.float32)
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            elif self.pooling == "max":
                pooled = np.where(mask > 0, hidden, -np.inf).max(axis=1)
            else:
                pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
            out[idx] = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        return out


def as_bi_encoder(encoder: "BiEncoder | str", options: dict | None) -> "BiEncoder":
    """``encoder`` as a BiEncoder: loaded by name with ``options``; a loaded one is taken as it is."""
    if isinstance(encoder, BiEncoder):
        if options:
            raise ValueError("encoder_options apply to an encoder given by name; this BiEncoder is already loaded "
                             f"(pass {sorted(options)} to BiEncoder(...) instead)")
        return encoder
    return BiEncoder(encoder, **(options or {}))


def is_e5_name(name: str) -> bool:
    """Whether a model name or folder names an e5 model ("intfloat/multilingual-e5-small", "my-e5-tuned"):
    "e5" as a word of it, not any "e5" inside another word or a cache hash."""
    import re

    return re.search(r"(^|[/_\-.])(multilingual-)?e5([/_\-.]|$)", str(name).lower()) is not None
