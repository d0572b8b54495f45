"""Evaluation: ranking metrics and the rows of ``rag-rerank eval`` and the training report.

One row per system: the first stage alone, then for each reranker the plain reranking, its
saved fusion with the first stage, and the known queries on top (:mod:`rag_rerank.model_settings`
says which of these the model carries). The CLI and the trainer only call :func:`evaluate`
and the row builders here; scores are computed once per reranker and every derived row
reuses them (the reranker is deterministic).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

from .retrieval import fusion as fusion_lib
from .models import settings as model_settings
from .retrieval.first_stage import StoreFirstStage, candidates_and_sides, holds
from .retrieval.fusion import PLAIN, Fusion
from .retrieval.known_queries import KnownQueries, combine
from .retrieval.known_queries import resolve as resolve_known
from .types import in_chunks

if TYPE_CHECKING:
    from .retrieval.first_stage import FirstStage
    from .types import Group

METRICS = ("MRR@10", "NDCG@10", "R@1", "R@10")


def ranking_metrics(ranked: Sequence[Sequence[str]], relevant: Sequence[set[str]]) -> dict[str, float]:
    """Mean MRR@10, NDCG@10 (binary gains), Recall@1 and Recall@10 over queries. A relevant item gains at its
    first place only: rankings of texts hold a chunk stored twice twice, which would count it twice (NDCG@10
    above 1)."""
    if len(ranked) != len(relevant):
        raise ValueError("one ranking per query")
    totals = dict.fromkeys(METRICS, 0.0)
    for q, (docs, rel) in enumerate(zip(ranked, relevant)):
        if isinstance(docs, str) or isinstance(rel, str):  # read as characters ('in' a string is a substring test)
            which = f"ranked[{q}]" if isinstance(docs, str) else f"relevant[{q}]"
            raise TypeError(f"{which} is one string; give each query's ranking as a list and its relevant "
                            "documents as a set of texts or ids")
        top = list(docs[:10])
        hits = [d in rel and d not in top[:i] for i, d in enumerate(top)]
        totals["MRR@10"] += next((1.0 / (i + 1) for i, h in enumerate(hits) if h), 0.0)
        dcg = sum(1.0 / math.log2(i + 2) for i, h in enumerate(hits) if h)
        ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(rel), 10)))
        totals["NDCG@10"] += dcg / ideal if ideal else 0.0
        totals["R@1"] += sum(hits[:1]) / len(rel) if rel else 0.0
        totals["R@10"] += len(set(top) & rel) / len(rel) if rel else 0.0
    n = max(len(ranked), 1)
    return {k: v / n for k, v in totals.items()}


def mrr(ranked: Sequence[Sequence[str]], relevant: Sequence[set[str]]) -> float:
    """MRR@10: the metric every tuner in the package chooses by."""
    return ranking_metrics(ranked, relevant)["MRR@10"]


def positives_missing(first_stage: "FirstStage", groups: Sequence["Group"], data: str) -> str | None:
    """Which queries of ``data`` have none of their positives among the texts of the corpus searched
    (positives are matched by text): None when all do, else how many and the first. A store answers each
    text with a full-text query, so its first 200 queries tell the story at a bounded cost."""
    checked = groups[:200] if isinstance(first_stage, StoreFirstStage) else groups
    texts = list(dict.fromkeys(p for g in checked for p in g.positives))
    held = {t for t, ok in zip(texts, holds(first_stage)(texts)) if ok}
    lost = [g.query for g in checked if not held.intersection(g.positives)]
    if not lost:
        return None
    of = f"{len(groups)}" if len(checked) == len(groups) else f"the first {len(checked)}"
    return f"{len(lost)} of {of} queries in {data} have no positive in the corpus searched (first: {lost[0][:60]!r})"


@dataclass
class EvalRow:
    name: str
    metrics: dict[str, float]
    seconds: float
    extra: dict = field(default_factory=dict)


def ranking_row(name: str, groups: Sequence["Group"], rankings: Sequence[Sequence[str]], seconds: float = 0.0,
                extra: dict | None = None) -> EvalRow:
    """The row of each query's ranking (texts, best first) against its positives."""
    return EvalRow(name, ranking_metrics(rankings, [set(g.positives) for g in groups]), seconds, extra or {})


def first_stage_row(first_stage: "FirstStage", groups: Sequence["Group"], candidate_k: int,
                    name: str) -> tuple[EvalRow, list[list[str]], list[dict[str, list[str]]]]:
    """Rank with the first stage; returns the row, the candidate lists (texts) for reranking and,
    for a hybrid, the two rankings they were fused from (what ``--save-candidates`` keeps)."""
    start = time.perf_counter()
    hits, sides = candidates_and_sides(first_stage, [g.query for g in groups], candidate_k)
    candidates = [[h.text for h in row] for row in hits]
    return ranking_row(name, groups, candidates, time.perf_counter() - start), candidates, sides


PROGRESS_CHUNK = 256  # queries a scoring call takes when a progress bar shows (thousands of pairs: full batches)


def score_candidates(reranker, groups: Sequence["Group"], candidates: Sequence[Sequence[str]],
                     name: str, progress: bool = False) -> tuple[EvalRow, list[list[float]]]:
    """Plain reranking of each query's candidates; returns the row and the reranker's scores
    (reused by every fused row and by the tuners). ``progress``: a bar on stderr (queries scored)."""
    start = time.perf_counter()
    queries, docs = [g.query for g in groups], [list(c) for c in candidates]
    parts = in_chunks(lambda a, b: reranker.score_many(queries[a:b], docs[a:b]), len(queries), PROGRESS_CHUNK,
                      f"reranking ({name.removeprefix('+ ')})", progress)
    scores = [row for part in parts for row in part]
    row = ranking_row(name, groups, fused_rankings(candidates, scores, PLAIN), time.perf_counter() - start)
    return row, scores


def fused_rankings(candidates: Sequence[Sequence[str]], scores: Sequence[Sequence[float]],
                   fusion: Fusion) -> list[list[str]]:
    """Each query's candidates in the order ``fusion`` gives them from the reranker's scores: the second stage
    (:func:`~rag_rerank.retrieval.pipeline.fuse_scores`) on scores computed once."""
    from .retrieval.pipeline import fuse_scores

    ranked = fuse_scores(candidates, scores, fusion)
    return [[cands[i] for i, _final, _score in r] for cands, r in zip(candidates, ranked)]


def known_rankings(rankings: Sequence[Sequence[str]], known: Sequence[Sequence[str]],
                   fusion: Fusion) -> list[list[str]]:
    return [combine(fusion, r, k) for r, k in zip(rankings, known)]


def reranker_rows(reranker, groups: Sequence["Group"], candidates: Sequence[Sequence[str]], label: str, *,
                  fusion: Fusion | str | None = "auto", known_queries: KnownQueries | str | None = "auto",
                  first_stage: "FirstStage | None" = None, progress: bool = False) -> list[EvalRow]:
    """Plain reranking, then (where the model carries them, or as given) its fusion with the first
    stage and its known queries: over the first stage alone and over the fused pipeline (the
    default pipeline). Known-query documents count only if ``first_stage`` holds them (without
    one: only the query's own candidates)."""
    settings = model_settings.load(reranker.path)
    fusion = fusion_lib.resolve(fusion, lambda: settings.fusion) or PLAIN
    known_queries = _resolve_known(known_queries, reranker)
    plain, scores = score_candidates(reranker, groups, candidates, label, progress)
    rows = [plain]
    pipeline = fused_rankings(candidates, scores, fusion)
    if not fusion.is_plain:
        rows.append(ranking_row(f"{label}, fused {fusion.describe()}", groups, pipeline, plain.seconds,
                                {"scores_reused": True}))
    if known_queries is not None:
        start = time.perf_counter()
        held = holds(first_stage) if first_stage is not None else None
        known = known_queries.documents([g.query for g in groups], held, candidates)
        lookup = time.perf_counter() - start
        kq = f"known queries ({known_queries.fusion.describe()})"
        rows.append(ranking_row(f"first stage + {label.removeprefix('+ ')}'s {kq}", groups,
                                known_rankings(candidates, known, known_queries.fusion), lookup))
        name = f"{label}, {'plain reranking' if fusion.is_plain else 'fused ' + fusion.describe()}, + {kq}"
        rows.append(ranking_row(name, groups, known_rankings(pipeline, known, known_queries.fusion),
                                plain.seconds + lookup))
    return rows


def _resolve_known(value, reranker) -> KnownQueries | None:
    return resolve_known(value, lambda: KnownQueries.load(reranker.path) if reranker.path is not None else None)


def evaluate(groups: Sequence["Group"], candidates: Sequence[Sequence[str]], first_row: EvalRow,
             rerankers: Sequence[tuple[str, object]] = (), *, fusion: str | None = "auto",
             known_queries: str | None = "auto", hybrid: str | None = "auto",
             first_stage: "FirstStage | None" = None, depth: int = 50, progress: bool = False) -> list[EvalRow]:
    """The first stage's row, then each ``(label, reranker)``'s rows over the same candidates.

    With ``hybrid="auto"`` a model that carries tuned hybrid weights is evaluated on the
    candidates of its own hybrid (a row of their own first), as the pipeline would run it,
    where ``first_stage`` can re-weight its hybrid (``depth``: its candidates per query)."""
    rows = [first_row]
    for label, reranker in rerankers:
        own_stage, own_candidates = first_stage, candidates
        weights = _own_hybrid(hybrid, reranker, first_stage)
        if weights is not None:
            own_stage = first_stage.with_hybrid(weights)
            row, own_candidates, _ = first_stage_row(own_stage, groups, depth,
                                                  f"hybrid {weights.describe()}, {label}'s (top {depth})")
            rows.append(row)
        rows += reranker_rows(reranker, groups, own_candidates, f"+ {label}", fusion=fusion,
                              known_queries=known_queries, first_stage=own_stage, progress=progress)
    return rows


def _own_hybrid(hybrid: str | None, reranker, first_stage) -> Fusion | None:
    """The hybrid weights a model saved, where they differ from the first stage's and it can use them."""
    from .retrieval.first_stage import DenseAndLexical

    if (first_stage is None or first_stage.mode != "hybrid" or not isinstance(first_stage, DenseAndLexical)
            or not first_stage.reweightable or reranker.path is None):
        return None
    weights = fusion_lib.resolve(hybrid, lambda: model_settings.load(reranker.path).hybrid)
    if weights is None or (weights.weight, weights.rrf_k) == (first_stage.hybrid_fusion.weight,
                                                              first_stage.hybrid_fusion.rrf_k):
        return None
    return weights


def format_table(rows: Sequence[EvalRow], title: str | None = None) -> str:
    """A Markdown table: one row per system, the four metrics and the time it took."""
    lines = [f"**{title}**", ""] if title else []
    lines += ["| system | " + " | ".join(METRICS) + " | time (s) |",
              "|---|" + "---:|" * (len(METRICS) + 1)]
    for row in rows:
        lines.append(f"| {row.name} | " + " | ".join(f"{row.metrics[m]:.4f}" for m in METRICS)
                     + f" | {row.seconds:.1f} |")
    return "\n".join(lines)
