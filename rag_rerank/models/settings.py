"""The pipeline settings saved with a trained reranker: ``MODEL_DIR/rag_rerank.json``.

``rag-rerank train`` chooses on validation how its reranker should be fused with the first
stage and with the known (training) queries; this module is the one writer and the one reader
of that file. The reranker itself never reads it (it only scores pairs): the retrievers, the
framework adapters and ``rag-rerank eval`` do, through :func:`load`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..retrieval.fusion import Fusion

CONFIG_FILE = "rag_rerank.json"


@dataclass(frozen=True)
class ModelSettings:
    """What training chose for the pipeline around a reranker.

    ``fusion``: the reranker's ranking fused with the first stage's (None: plain reranking).
    ``known_queries``: the known queries' documents fused into the pipeline's ranking (None or
    weight 0: off; the queries themselves live in ``known_queries.jsonl.gz`` beside it).
    ``hybrid``: how BM25 joins the dense ranking in the hybrid first stage (tuned on validation).
    ``first_stage`` / ``candidate_k``: the first stage and depth these were tuned on.
    ``extra``: anything else found in the file, kept when the file is rewritten.
    """

    fusion: Fusion | None = None
    known_queries: Fusion | None = None
    hybrid: Fusion | None = None
    first_stage: str | None = None
    candidate_k: int | None = None
    known_query_count: int | None = None
    extra: dict = field(default_factory=dict)

    def replace(self, **changes) -> "ModelSettings":
        return replace(self, **changes)

    def save(self, model_dir: str | Path) -> Path:
        data = dict(self.extra)
        for key, value in (("fusion", self.fusion), ("hybrid", self.hybrid), ("first_stage", self.first_stage),
                           ("candidate_k", self.candidate_k)):
            if value is not None:
                data[key] = value.to_dict() if isinstance(value, Fusion) else value
        if self.known_queries is not None:
            data["known_queries"] = {**self.known_queries.to_dict(), "queries": self.known_query_count}
        path = Path(model_dir) / CONFIG_FILE
        if not data:  # nothing chosen: no file (and none left from an earlier run into this directory)
            path.unlink(missing_ok=True)
            return path
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
        return path


_KNOWN_KEYS = ("fusion", "known_queries", "hybrid", "first_stage", "candidate_k")


def load(model_dir: str | Path | None) -> ModelSettings:
    """The settings saved with a model; empty settings for a model trained elsewhere (no file). A file
    that is there but unreadable, or holds values of the wrong kind, is an error naming it: a model
    whose trained fusion silently turned off would rank differently from what its training measured."""
    if model_dir is None:
        return ModelSettings()
    path = Path(model_dir) / CONFIG_FILE
    try:
        text = path.read_text(encoding="utf-8-sig")  # hand-edited: a byte-order mark may lead
    except FileNotFoundError:
        return ModelSettings()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the model's settings ({exc}); restore it, or delete it to run the "
                         "model with no saved fusion") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); restore it, or delete it to run the model with no saved "
                         "fusion") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    try:
        known = data.get("known_queries") or None
        for key in ("fusion", "hybrid", "known_queries"):
            if data.get(key) is not None and not isinstance(data[key], dict):
                raise ValueError(f"'{key}' must be an object, got {data[key]!r}")
        candidate_k = data.get("candidate_k")
        if candidate_k is not None:
            from ..types import check_int

            candidate_k = check_int(candidate_k, "candidate_k", minimum=1)
        if data.get("first_stage") not in (None, "dense", "bm25", "hybrid"):
            raise ValueError(f"'first_stage' must be dense, bm25 or hybrid, got {data['first_stage']!r}")
        return ModelSettings(
            fusion=Fusion.from_dict(data["fusion"]) if data.get("fusion") else None,
            known_queries=Fusion.from_dict(known) if known else None,
            hybrid=Fusion.from_dict(data["hybrid"]) if data.get("hybrid") else None,
            first_stage=data.get("first_stage"), candidate_k=candidate_k,
            known_query_count=known.get("queries") if known else None,
            extra={k: v for k, v in data.items() if k not in _KNOWN_KEYS})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None
