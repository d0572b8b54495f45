"""Score fusion: combine the reranker's ranking with the first stage's.

A cross-encoder fine-tuned on a few thousand queries is strong but not
infallible, and on lexical Korean data the first stage (Kiwi BM25, hybrid)
is strong too; their errors differ. Weighted reciprocal-rank fusion of the
two rankings keeps the reranker in charge while letting a confident first
stage break its mistakes:

    fused(d) = w / (k + rank_rerank(d)) + (1 - w) / (k + rank_first(d))

over the top ``depth`` candidates (the rest keep first-stage order after
them). ``w = 1`` is plain reranking. Ranks, not scores, because first-stage
scores live on different scales per mode (cosine, BM25, RRF).

The knobs are chosen on a validation split by :func:`tune` and saved next to
the model (``rag_rerank.json``), so ``Reranker(path)`` and the retrievers
apply them with no tuning by the user.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

CONFIG_FILE = "rag_rerank.json"


@dataclass(frozen=True)
class Fusion:
    """How reranker and first stage combine. ``weight`` 1.0 = reranker alone."""

    weight: float = 1.0
    rrf_k: float = 60.0
    depth: int | None = None  # candidates the reranker sees; None: all it is given
    tuned_on: str | None = None  # what the knobs were chosen on, for the record

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"fusion weight must be in [0, 1], got {self.weight}")
        if self.rrf_k < 0:
            raise ValueError(f"rrf_k must be >= 0, got {self.rrf_k}")
        if self.depth is not None and self.depth < 1:
            raise ValueError(f"depth must be >= 1 or None, got {self.depth}")

    def scored(self, available: int) -> int:
        """How many of ``available`` candidates the reranker should score."""
        return available if self.depth is None else min(self.depth, available)

    def fused_scores(self, scores: Sequence[float], total: int | None = None) -> list[float]:
        """One fused score per candidate (first-stage order) given the reranker's scores.

        Only the first ``depth`` scores count (``scores`` may hold just those); the
        other candidates score ``(1 - w) / (k + rank)``, below every reranked one.
        With ``weight`` 1 the reranked candidates keep the reranker's own scores.
        """
        total = len(scores) if total is None else total
        n = min(self.scored(len(scores)), total)
        if self.weight == 1.0:
            return list(scores[:n]) + [0.0] * (total - n)
        by_rerank = sorted(range(n), key=lambda i: (-scores[i], i))
        rerank_rank = {i: r for r, i in enumerate(by_rerank, 1)}
        head = [self.weight / (self.rrf_k + rerank_rank[i]) + (1 - self.weight) / (self.rrf_k + i + 1)
                for i in range(n)]
        return head + [(1 - self.weight) / (self.rrf_k + i + 1) for i in range(n, total)]

    def order(self, scores: Sequence[float], total: int | None = None) -> list[int]:
        """Candidate indices, best first (ties keep first-stage order)."""
        total = len(scores) if total is None else total
        fused = self.fused_scores(scores, total)
        n = min(self.scored(len(scores)), total)
        return sorted(range(n), key=lambda i: (-fused[i], i)) + list(range(n, total))

    @property
    def is_plain(self) -> bool:
        return self.weight == 1.0 and self.depth is None

    def describe(self) -> str:
        if self.is_plain:
            return "plain reranking"
        depth = f"top {self.depth}" if self.depth else "all candidates"
        return f"fused w={self.weight:g} k={self.rrf_k:g} on {depth}"

    def to_dict(self) -> dict:
        return asdict(self)


PLAIN = Fusion()


def resolve(value: Fusion | str | None, auto: Callable[[], Fusion | None]) -> Fusion | None:
    """A ``fusion=`` argument: ``"auto"`` -> ``auto()``, ``None`` -> plain reranking, or a Fusion."""
    if value == "auto":
        return auto()
    if value is not None and not isinstance(value, Fusion):
        raise ValueError(f"fusion must be 'auto', None or a Fusion, got {value!r}")
    return value


def rerank_ranked(reranker, queries: Sequence[str], candidates: Sequence[Sequence[str]],
                  fusion: Fusion | None = None) -> list[tuple[list[int], list[float], list[float]]]:
    """Rerank first-stage candidate lists (all queries in shared batches) and fuse.

    Returns per query ``(order, fused_scores, rerank_scores)``: ``order`` indexes the
    candidates best first, ``fused_scores`` holds one value per candidate, and
    ``rerank_scores`` the reranker's scores of the first ``len(rerank_scores)`` candidates.
    """
    fusion = fusion or PLAIN
    heads = [list(c[: fusion.scored(len(c))]) for c in candidates]
    all_scores = reranker.score_many(list(queries), heads)
    out = []
    for cands, scores in zip(candidates, all_scores):
        out.append((fusion.order(scores, len(cands)), fusion.fused_scores(scores, len(cands)), scores))
    return out


def save(fusion: Fusion, model_dir: str | Path, extra: dict | None = None) -> Path:
    return save_extra(model_dir, {"fusion": fusion.to_dict(), **(extra or {})})


def save_extra(model_dir: str | Path, extra: dict) -> Path:
    """Add keys to the model's ``rag_rerank.json`` (keeping what is there)."""
    path = Path(model_dir) / CONFIG_FILE
    data = _read(path)
    data.update(extra)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False))
    return path


def read_config(model_dir: str | Path) -> dict:
    """Everything saved in the model's ``rag_rerank.json`` ({} when there is none)."""
    return _read(Path(model_dir) / CONFIG_FILE)


def load(model_dir: str | Path) -> Fusion | None:
    """The fusion saved with a model, or None (a model trained elsewhere: plain reranking)."""
    data = _read(Path(model_dir) / CONFIG_FILE).get("fusion")
    if not data:
        return None
    known = {k: data[k] for k in ("weight", "rrf_k", "depth", "tuned_on") if k in data}
    return Fusion(**known)


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# Coarse on purpose: validation splits are a few hundred queries, and a fine grid
# would fit their noise. Ties go to the earlier (simpler) setting. Low weights are the
# safety net: a reranker that did not learn the task (seen on a chatbot Q->A task) must
# not pull the pipeline below its first stage; weight 0 is the first stage itself.
WEIGHTS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.0)
RRF_KS = (60.0, 10.0, 2.0)
DEPTHS = (None, 30, 20, 10)


def tune(candidates: Sequence[Sequence[str]], scores: Sequence[Sequence[float]], relevant: Sequence[set[str]],
         metric: Callable[[list[list[str]], list[set[str]]], float], *, weights=WEIGHTS, rrf_ks=RRF_KS,
         depths=DEPTHS, min_gain: float = 0.002, tuned_on: str | None = None) -> tuple[Fusion, dict]:
    """Choose (weight, rrf_k, depth) maximising ``metric`` on validation rankings.

    ``candidates[q]`` are query q's first-stage candidates in first-stage order and
    ``scores[q]`` their reranker scores. A setting replaces plain reranking only when it
    gains at least ``min_gain``. Returns the fusion and a report of what was tried.
    """
    def evaluate(f: Fusion) -> float:
        ranked = [[c[i] for i in f.order(s)] for c, s in zip(candidates, scores)]
        return metric(ranked, list(relevant))

    longest = max((len(c) for c in candidates), default=0)
    plain = Fusion(tuned_on=tuned_on)
    best, best_value = plain, evaluate(plain)
    tried = {"plain": best_value}
    for depth in depths:
        if depth is not None and depth >= longest:
            continue
        for k in rrf_ks:
            for w in weights:
                f = Fusion(w, k, depth, tuned_on)
                value = evaluate(f)
                tried[f"w={w:g} k={k:g} depth={depth or 'all'}"] = value
                if value > best_value + (min_gain if best == plain else 1e-12):
                    best, best_value = f, value
    return best, {"best": best.to_dict(), "best_value": best_value, "plain_value": tried["plain"],
                  "first_stage_value": evaluate(Fusion(0.0, 60.0, None)), "tried": len(tried)}
