"""Ranking metrics and the before/after table of first stage vs first stage + reranker."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Sequence

from .data import Group

METRICS = ("MRR@10", "NDCG@10", "R@1", "R@10")


def ranking_metrics(ranked: Sequence[Sequence[str]], relevant: Sequence[set[str]]) -> dict[str, float]:
    """Mean MRR@10, NDCG@10 (binary gains), Recall@1 and Recall@10 over queries."""
    if len(ranked) != len(relevant):
        raise ValueError("one ranking per query")
    totals = dict.fromkeys(METRICS, 0.0)
    for docs, rel in zip(ranked, relevant):
        top = list(docs[:10])
        hits = [d in rel for d in top]
        totals["MRR@10"] += next((1.0 / (i + 1) for i, h in enumerate(hits) if h), 0.0)
        dcg = sum(1.0 / math.log2(i + 2) for i, h in enumerate(hits) if h)
        ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(rel), 10)))
        totals["NDCG@10"] += dcg / ideal if ideal else 0.0
        totals["R@1"] += sum(hits[:1]) / len(rel) if rel else 0.0
        totals["R@10"] += len(set(top) & rel) / len(rel) if rel else 0.0
    n = max(len(ranked), 1)
    return {k: v / n for k, v in totals.items()}


@dataclass
class EvalRow:
    name: str
    metrics: dict[str, float]
    seconds: float
    extra: dict = field(default_factory=dict)


def evaluate_first_stage(first_stage, groups: Sequence[Group], candidate_k: int, name: str):
    """Rank with the first stage; returns the row and the candidate lists (texts) for reranking."""
    start = time.perf_counter()
    queries = [g.query for g in groups]
    many = getattr(first_stage, "candidates_many", None)
    hits = many(queries, candidate_k) if many else [first_stage.candidates(q, candidate_k) for q in queries]
    candidates = [[h.text for h in row] for row in hits]
    metrics = ranking_metrics(candidates, [set(g.positives) for g in groups])
    return EvalRow(name, metrics, time.perf_counter() - start), candidates


def evaluate_reranker(reranker, groups: Sequence[Group], candidates: Sequence[Sequence[str]], name: str,
                      fusion=None) -> tuple[EvalRow, list[list[float]]]:
    """Rerank each query's candidates (first-stage order), optionally fused with that order.

    Returns the row and the reranker's scores (reusable, e.g. to tune fusion).
    """
    from ..fusion import rerank_ranked

    start = time.perf_counter()
    results = rerank_ranked(reranker, [g.query for g in groups], candidates, fusion)
    rankings = [[cands[i] for i in order] for cands, (order, _, _) in zip(candidates, results)]
    row = _ranked_row(name, groups, rankings, time.perf_counter() - start)
    return row, [scores for _, _, scores in results]


def _ranked_row(name: str, groups: Sequence[Group], rankings: Sequence[Sequence[str]], seconds: float,
                extra: dict | None = None) -> EvalRow:
    """The row of each query's ranking (texts, best first) against its positives."""
    return EvalRow(name, ranking_metrics(rankings, [set(g.positives) for g in groups]), seconds, extra or {})


def fused_rankings(candidates: Sequence[Sequence[str]], scores: Sequence[Sequence[float]], fusion) -> list[list[str]]:
    """Each query's candidates in the order ``fusion`` gives them from the reranker's scores."""
    return [[cands[i] for i in fusion.order(s, len(cands))] for cands, s in zip(candidates, scores)]


def fused_row(groups: Sequence[Group], candidates: Sequence[Sequence[str]], scores: Sequence[Sequence[float]],
              fusion, name: str, seconds: float) -> EvalRow:
    """The fused pipeline's row from scores a plain reranking already computed (the reranker is
    deterministic, so scoring again would only cost time). ``seconds`` is the plain scoring's
    time: an upper bound for the fused pipeline, which scores only the top ``depth``."""
    return _ranked_row(name, groups, fused_rankings(candidates, scores, fusion), seconds, {"scores_reused": True})


def known_documents(known_queries, queries: Sequence[str], candidates: Sequence[Sequence[str]],
                    first_stage=None, exclude: Sequence[set[str]] | None = None) -> list[list[str]]:
    """Each query's documents from the known queries, keeping only those the corpus holds: the
    first stage's ``find_texts`` says which (memoised: answers repeat across queries); without
    one, only the query's own first-stage candidates count as held. ``exclude[q]``: documents
    whose known queries query q must not use (see ``KnownQueries.search(exclude_docs=...)``)."""
    find = getattr(first_stage, "find_texts", None)
    held: dict[str, bool] = {}

    def in_corpus(texts: list[str]) -> list[bool]:
        new = [t for t in dict.fromkeys(texts) if t not in held]
        if new:
            held.update(zip(new, (d is not None for d in find(new))))
        return [held[t] for t in texts]

    out = []
    for i, (query, cands) in enumerate(zip(queries, candidates)):
        allowed = in_corpus if find is not None else (lambda ts, own=set(cands): [t in own for t in ts])
        banned = frozenset(exclude[i]) if exclude is not None else frozenset()
        out.append(known_queries.search(query, exclude_docs=banned, allowed=allowed))
    return out


def known_row(groups: Sequence[Group], rankings: Sequence[Sequence[str]], known: Sequence[Sequence[str]],
              weight, name: str, seconds: float) -> EvalRow:
    """The row of each query's ranking (texts, best first) fused with its known-query documents."""
    return _ranked_row(name, groups, [weight.combine(r, k) for r, k in zip(rankings, known)], seconds)


def format_table(rows: Sequence[EvalRow], title: str | None = None) -> str:
    """A Markdown table: one row per system, the four metrics and the time it took."""
    lines = [f"**{title}**", ""] if title else []
    lines += ["| system | " + " | ".join(METRICS) + " | time (s) |",
              "|---|" + "---:|" * (len(METRICS) + 1)]
    for row in rows:
        lines.append(f"| {row.name} | " + " | ".join(f"{row.metrics[m]:.4f}" for m in METRICS)
                     + f" | {row.seconds:.1f} |")
    return "\n".join(lines)


def reranking_samples(groups: Sequence[Group], candidates: Sequence[Sequence[str]] | None = None) -> list[dict]:
    """Samples for sentence-transformers' CrossEncoderRerankingEvaluator (used during training)."""
    samples = []
    for i, g in enumerate(groups):
        if candidates is not None:
            samples.append({"query": g.query, "positive": g.positives, "documents": list(candidates[i])})
        elif g.negatives:
            samples.append({"query": g.query, "positive": g.positives, "negative": g.negatives})
    return samples
