"""Weighted reciprocal-rank fusion: the one way rankings are combined in this package.

Three places combine two rankings of the same documents, and all three use
:func:`weighted_rrf`:

* the hybrid first stage: dense ranking + Kiwi BM25 ranking;
* the reranker with the first stage: a cross-encoder fine-tuned on a few thousand queries is
  strong but not infallible, and on lexical Korean data the first stage is strong too; their
  errors differ, so a confident first stage may break the reranker's mistakes;
* the pipeline with the documents of the most similar known (training) queries
  (:mod:`rag_rerank.known_queries`).

A :class:`Fusion` says how an *added* ranking joins a *base* ranking::

    fused(d) = (1 - weight) / (rrf_k + rank_base(d)) + weight / (rrf_k + rank_added(d))

``weight`` 0 leaves the base ranking as it is; ``weight`` 1 is the added ranking alone (for the
reranker: plain reranking). Only the top ``depth`` of the added ranking join (the reranker
scores only that many candidates; the rest keep first-stage order after them). Ranks, not
scores, because the scores live on different scales (cosine, BM25, RRF, logits).

For the reranker there is a second method, ``method="score"``: normalised interpolation of the
reranker's *score* with the first stage's rank::

    fused(d) = weight * p(d) + (1 - weight) * (rrf_k + 1) / (rrf_k + rank_base(d))

where ``p(d)`` is the reranker's relevance in [0, 1] (its sigmoid; raw logits are put through
one). Rank fusion throws the reranker's confidence away: a reranker that is sure (0.98 against
0.05) and one that is guessing (0.31 against 0.29) move a document by the same ranks. Out of its
domain a reranker mostly guesses, its scores bunch together, and the interpolation then leaves
the first stage's order as it was; where it is sure it overrides a strong first stage. That is
what keeps the default pipeline from falling below its own first stage on data the reranker
never saw (BENCHMARKS.md, issue 35).

The knobs are chosen on a validation split by :func:`tune` and saved next to the model by
:mod:`rag_rerank.model_settings`, so retrievers apply them with no tuning by the user. This module
is arithmetic only: it never calls a model (the second stage that scores and then fuses is
:func:`rag_rerank.pipeline.rerank_fused`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Hashable, Iterable, Sequence, TypeVar

K = TypeVar("K", bound=Hashable)


def weighted_rrf(rankings: Sequence[Sequence[K]], weights: Sequence[float], rrf_k: float = 60.0) -> list[tuple[K, float]]:
    """``score(d) = sum_i weights[i] / (rrf_k + rank_i(d))`` over the rankings that hold ``d``.

    Keys are document ids (any hashable); a key repeated within one ranking counts at its first
    rank. Returns ``(key, score)`` best first; ties keep the order in which keys were first seen
    (earlier rankings first), so a zero-weight ranking still orders what the others leave tied.
    """
    if len(rankings) != len(weights):
        raise ValueError(f"{len(rankings)} rankings but {len(weights)} weights")
    score: dict[K, float] = {}
    for ranking, weight in zip(rankings, weights):
        for rank, key in enumerate(dict.fromkeys(ranking), 1):
            score[key] = score.get(key, 0.0) + weight / (rrf_k + rank)
    seen = {key: i for i, key in enumerate(score)}
    return sorted(score.items(), key=lambda item: (-item[1], seen[item[0]]))


@dataclass(frozen=True)
class Fusion:
    """How an added ranking joins a base ranking. ``weight`` is the added ranking's share:
    0 = the base alone, 1 = the added ranking alone (the base then only orders the rest)."""

    weight: float = 1.0
    rrf_k: float = 60.0
    depth: int | None = None  # keys of the added ranking that join; None: all of them
    tuned_on: str | None = None  # what the knobs were chosen on, for the record
    method: str = "rank"  # "rank": weighted RRF of the two rankings; "score": the reranker's score (see above)

    def __post_init__(self) -> None:
        for name in ("weight", "rrf_k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                raise ValueError(f"fusion {name} must be a number, got {value!r}")
        if self.depth is not None and (isinstance(self.depth, bool) or not isinstance(self.depth, int)):
            raise ValueError(f"fusion depth must be a whole number or None, got {self.depth!r}")
        if self.method not in METHODS:
            raise ValueError(f"fusion method must be one of {METHODS}, got {self.method!r}")
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"fusion weight must be in [0, 1], got {self.weight}")
        if self.rrf_k < 0:
            raise ValueError(f"rrf_k must be >= 0, got {self.rrf_k}")
        if self.depth is not None and self.depth < 1:
            raise ValueError(f"depth must be >= 1 or None, got {self.depth}")

    def fuse(self, base: Sequence[K], added: Sequence[K]) -> list[tuple[K, float]]:
        """``(key, fused score)`` of every key in either ranking, best first; with ``weight`` 0 the
        base ranking alone (the added one neither moves nor adds a key).

        Scores are :func:`weighted_rrf`'s scaled by ``rrf_k + 1`` into [0, 1]: 1 is first in both
        rankings, whatever ``rrf_k`` is, so a fused score reads on the same scale as a reranker's
        relevance and a threshold on it does not depend on the fusion's knobs."""
        if self.weight == 0.0:
            fused = weighted_rrf([base], [1.0], self.rrf_k)
        else:
            added = list(dict.fromkeys(added))
            fused = weighted_rrf([base, added[: self.head(len(added))]], [1.0 - self.weight, self.weight], self.rrf_k)
        return [(key, score * (self.rrf_k + 1)) for key, score in fused]

    def head(self, available: int) -> int:
        """How many of ``available`` keys of the added ranking join (the reranker scores these)."""
        return available if self.depth is None else min(self.depth, available)

    # ---- the reranker's case: the added ranking is the reranker's order of the base's head
    def order(self, scores: Sequence[float], total: int | None = None) -> list[int]:
        """Candidate indices best first, given the reranker's scores of the first candidates
        (first-stage order); ties keep first-stage order."""
        return [i for i, _ in self._fuse_scores(scores, total)]

    def fused_scores(self, scores: Sequence[float], total: int | None = None) -> list[float]:
        """One fused score per candidate (first-stage order). With ``weight`` 1 the reranked
        candidates keep the reranker's own scores (the rest 0): plain reranking."""
        total = len(scores) if total is None else total
        if self.weight == 1.0:
            n = min(self.head(len(scores)), total)
            return list(scores[:n]) + [0.0] * (total - n)
        fused = dict(self._fuse_scores(scores, total))
        return [fused[i] for i in range(total)]

    def _fuse_scores(self, scores: Sequence[float], total: int | None) -> list[tuple[int, float]]:
        total = len(scores) if total is None else total
        n = min(self.head(len(scores)), total)
        if self.method == "score" and self.weight != 0.0:
            prob = probabilities(scores[:n])
            prior = [(self.rrf_k + 1) / (self.rrf_k + rank) for rank in range(1, total + 1)]
            fused = [(i, self.weight * (prob[i] if i < n else 0.0) + (1 - self.weight) * prior[i]) for i in range(total)]
            # the scored head first (a head member's fused value is never below an unscored one's)
            return sorted(fused, key=lambda item: (item[0] >= n, -item[1], item[0]))
        by_rerank = sorted(range(n), key=lambda i: (-scores[i], i))
        return self.fuse(range(total), by_rerank)

    @property
    def is_plain(self) -> bool:
        """The added ranking alone, all of it (for the reranker: plain reranking)."""
        return self.weight == 1.0 and self.depth is None

    @property
    def is_off(self) -> bool:
        """The base ranking alone: the added ranking changes nothing."""
        return self.weight == 0.0

    def describe(self) -> str:
        return (("score " if self.method == "score" else "") + f"w={self.weight:g} k={self.rrf_k:g}"
                + (f" top {self.depth}" if self.depth else ""))

    def to_dict(self) -> dict:
        data = asdict(self)
        if self.method == "rank":  # files written before the score method read the same
            data.pop("method")
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Fusion":
        return cls(**{k: data[k] for k in ("weight", "rrf_k", "depth", "tuned_on", "method") if k in data})


METHODS = ("rank", "score")
PLAIN = Fusion()


def probabilities(scores: Sequence[float]) -> list[float]:
    """Reranker scores as relevance in [0, 1]: as they are when every one lies there (the package's
    rerankers put their logit through a sigmoid), else each through a sigmoid (raw logits)."""
    import math

    values = [float(x) for x in scores]
    if all(0.0 <= x <= 1.0 for x in values):
        return values
    return [1.0 / (1.0 + math.exp(-max(min(x, 60.0), -60.0))) for x in values]


def resolve(value: Fusion | str | None, auto: Callable[[], Fusion | None]) -> Fusion | None:
    """A ``fusion=`` style argument: ``"auto"`` -> ``auto()``, ``None`` -> none, or a Fusion."""
    if value == "auto":
        return auto()
    if value is not None and not isinstance(value, Fusion):
        raise ValueError(f"expected 'auto', None or a Fusion, got {value!r}")
    return value


# ------------------------------------------------------------------------ tuning
def tune(evaluate: Callable[[Fusion], float], grid: Iterable[Fusion], baseline: Fusion, *,
         min_gain: float = 0.002) -> tuple[Fusion, dict]:
    """The setting of ``grid`` that maximises ``evaluate`` on validation data.

    ``baseline`` (the simplest setting) is kept unless another gains at least ``min_gain``:
    validation splits are a few hundred queries and a small gain is noise. Ties go to the
    earlier setting of the grid.
    """
    best, best_value = baseline, evaluate(baseline)
    report = {"baseline": baseline.to_dict(), "baseline_value": best_value, "tried": 1}
    for candidate in grid:
        value = evaluate(candidate)
        report["tried"] += 1
        if value > best_value + (min_gain if best is baseline else 1e-12):
            best, best_value = candidate, value
    return best, {**report, "best": best.to_dict(), "best_value": best_value}


# Coarse on purpose: validation splits are a few hundred queries, and a fine grid would fit
# their noise. Low weights are the safety net: a reranker that did not learn the task (seen on
# a chatbot Q->A task) must not pull the pipeline below its first stage; weight 0 is the first
# stage itself.
RERANKER_WEIGHTS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.0)
SCORE_WEIGHTS = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)
RRF_KS = (60.0, 10.0, 2.0)
DEPTHS = (None, 30, 20, 10)


def reranker_grid(longest: int, tuned_on: str | None = None) -> list[Fusion]:
    """Settings tried for the reranker's fusion with the first stage (depths below ``longest``):
    rank fusion and score interpolation."""
    depths = [depth for depth in DEPTHS if depth is None or depth < longest]
    return ([Fusion(w, k, depth, tuned_on) for depth in depths for k in RRF_KS for w in RERANKER_WEIGHTS]
            + [Fusion(w, k, depth, tuned_on, "score") for depth in depths for k in RRF_KS for w in SCORE_WEIGHTS])


def reciprocal_ranks(rankings: Sequence[Sequence[K]], relevant: Sequence[set], cut: int = 10) -> list[float]:
    """Each query's 1/rank of its first relevant key in the top ``cut`` (0 if none): MRR@10 per query."""
    return [next((1.0 / (i + 1) for i, key in enumerate(r[:cut]) if key in rel), 0.0)
            for r, rel in zip(rankings, relevant)]


def win_rate(gains: Sequence[float], resamples: int = 1000, seed: int = 0) -> float:
    """Share of paired bootstrap resamples of per-query ``gains`` whose mean is above 0: how sure the
    validation set is that a setting beats the one it is compared with (0.5: a coin toss)."""
    import random

    gains = list(gains)
    if not gains:
        return 0.0
    rng = random.Random(seed)
    n, wins = len(gains), 0
    for _ in range(resamples):
        wins += sum(gains[rng.randrange(n)] for _ in range(n)) > 0
    return wins / resamples


def tune_reranker(candidates: Sequence[Sequence[K]], scores: Sequence[Sequence[float]], relevant: Sequence[set],
                  metric: Callable[[list[list[K]], list[set]], float], *, min_gain: float = 0.005,
                  min_win_rate: float = 0.9, tuned_on: str | None = None) -> tuple[Fusion, dict]:
    """Choose the reranker's fusion with the first stage on validation rankings.

    ``candidates[q]`` are query q's first-stage candidates in first-stage order and ``scores[q]``
    their reranker scores. Plain reranking stays unless the best setting gains ``min_gain`` MRR@10
    over it *and* wins ``min_win_rate`` of paired bootstrap resamples of the validation queries: a
    fusion that validation only half supports is noise fitted to a few hundred queries (the report
    says which test failed)."""
    relevant = list(relevant)

    def rankings(f: Fusion) -> list[list[K]]:
        return [[c[i] for i in f.order(s, len(c))] for c, s in zip(candidates, scores)]

    def evaluate(f: Fusion) -> float:
        return metric(rankings(f), relevant)

    longest = max((len(c) for c in candidates), default=0)
    plain = Fusion(tuned_on=tuned_on)
    best, report = tune(evaluate, reranker_grid(longest, tuned_on), plain, min_gain=0.0)
    report.update(plain_value=report["baseline_value"], first_stage_value=evaluate(Fusion(0.0)),
                  min_gain=min_gain, min_win_rate=min_win_rate)
    if best is not plain:
        gains = [a - b for a, b in zip(reciprocal_ranks(rankings(best), relevant),
                                       reciprocal_ranks(rankings(plain), relevant))]
        report.update(best_gain=report["best_value"] - report["plain_value"], best_win_rate=win_rate(gains),
                      best_tried=best.to_dict())
        if report["best_gain"] < min_gain or report["best_win_rate"] < min_win_rate:
            report.update(kept="plain reranking", why=(
                f"the best setting ({best.describe()}) gains {report['best_gain']:+.4f} MRR@10 over plain reranking "
                f"and wins {report['best_win_rate']:.0%} of bootstrap resamples; needed >= {min_gain:+.4f} and "
                f">= {min_win_rate:.0%}"))
            best = plain
            report.update(best=plain.to_dict(), best_value=report["plain_value"])
    return best, report
