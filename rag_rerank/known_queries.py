"""Known queries: rank documents by how similar the query is to questions already answered.

Training data pairs queries with the documents that answer them. On Q->A data
(chatbots, FAQs) a new question is often a rephrasing of a known one whose
answer sits in the same corpus; matching question to question is then a far
stronger signal than matching question to answer (on a validation part of the
Korean chatbot set: MRR@10 0.22 from known questions alone vs 0.08 for the
hybrid first stage). ``rag-rerank train`` keeps its training pairs with the
model and decides on validation whether, and how strongly, to use them:

    final(d) = (1 - w) / (k + rank_pipeline(d)) + w / (k + rank_known(d))

``w = 0`` switches them off. The weight is chosen on validation queries taken
as they are *and* as if their documents were new to training (:func:`tune`), so
a weight that only pays when queries repeat known documents is held back. Only
documents the corpus holds count: over a corpus that shares no documents with
the training data (a new collection), the pipeline's ranking is left exactly
as it was.

Question similarity is BM25 over character bigrams: no model and no
dictionary (it runs wherever the reranker runs), and robust to Korean
spacing and particles.
"""
from __future__ import annotations

import gzip
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Hashable, Sequence, TypeVar

from . import fusion as fusion_config
from .lexical import KoreanBM25

DATA_FILE = "known_queries.jsonl.gz"
CONFIG_KEY = "known_queries"
K = TypeVar("K", bound=Hashable)


def char_bigrams(texts: Sequence[str]) -> list[list[str]]:
    """Character bigrams of each text with spaces removed (Korean spacing varies)."""
    out = []
    for text in texts:
        t = "".join(text.lower().split())
        out.append([t[i:i + 2] for i in range(len(t) - 1)] or ([t] if t else []))
    return out


@dataclass(frozen=True)
class KnownWeight:
    """How known queries join the ranking: ``weight`` 0 = not at all."""

    weight: float = 0.0
    rrf_k: float = 10.0
    depth: int = 20  # documents taken from the known queries per query
    tuned_on: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"known-queries weight must be in [0, 1], got {self.weight}")
        if self.rrf_k < 0 or self.depth < 1:
            raise ValueError("rrf_k must be >= 0 and depth >= 1")

    def scores(self, ranking: Sequence[K], known: Sequence[K]) -> dict[K, float]:
        """Fused score of every key in either list, in first-seen order (pipeline first)."""
        known = list(dict.fromkeys(known))[: self.depth] if self.weight else []
        score: dict[K, float] = {}
        for r, key in enumerate(ranking, 1):
            score.setdefault(key, (1 - self.weight) / (self.rrf_k + r))
        for r, key in enumerate(known, 1):
            score[key] = score.get(key, 0.0) + self.weight / (self.rrf_k + r)
        return score

    def ranked(self, ranking: Sequence[K], known: Sequence[K]) -> list[tuple[K, float]]:
        """(key, fused score), best first; ties keep pipeline order, then known order."""
        score = self.scores(ranking, known)
        first = {key: i for i, key in enumerate(score)}
        return sorted(score.items(), key=lambda item: (-item[1], first[item[0]]))

    def combine(self, ranking: Sequence[K], known: Sequence[K]) -> list[K]:
        """Fuse the pipeline's ranking with the known queries' (ties keep pipeline order)."""
        if self.weight == 0.0 or not known:
            return list(dict.fromkeys(ranking))
        return [key for key, _ in self.ranked(ranking, known)]

    def describe(self) -> str:
        return "off" if self.weight == 0.0 else f"w={self.weight:g} k={self.rrf_k:g} top {self.depth}"


class KnownQueries:
    """Queries with the documents (texts) that answered them, searchable by query similarity.

    Args:
        pairs: ``(query, [document text, ...])`` items, e.g. a training set's groups.
        weight: how the retrievers fuse them with the pipeline (see :class:`KnownWeight`).
    """

    def __init__(self, pairs: Sequence[tuple[str, Sequence[str]]], weight: KnownWeight | None = None) -> None:
        merged: dict[str, list[str]] = {}
        for query, docs in pairs:
            if query and docs:
                merged.setdefault(query, [])
                merged[query] += [d for d in docs if d not in merged[query]]
        self.queries = list(merged)
        self.answers = [merged[q] for q in self.queries]
        self.weight = weight or KnownWeight()
        self._built: KoreanBM25 | None = None
        self._lock = threading.Lock()

    @property
    def _index(self) -> KoreanBM25:
        """Built on the first search: saving, or loading a model that only scores, needs none."""
        with self._lock:
            if self._built is None:
                index = KoreanBM25(char_bigrams)
                index.add([str(i) for i in range(len(self.queries))], self.queries)
                self._built = index
            return self._built

    def __len__(self) -> int:
        return len(self.queries)

    def search(self, query: str, depth: int | None = None, *, exclude_self: bool = False,
               exclude_docs: set[str] | frozenset[str] = frozenset(),
               allowed: Callable[[list[str]], list[bool]] | None = None) -> list[str]:
        """Answers of the most similar known queries, best first, at most ``depth`` (default: the
        weight's). ``exclude_self`` skips a known query identical to ``query`` (scoring the training
        queries themselves); ``exclude_docs`` skips every known query answered by one of these
        documents (as if they had never been seen in training); ``allowed`` keeps only documents the
        corpus holds."""
        depth = depth or self.weight.depth
        docs: list[str] = []
        # more known queries than documents wanted: answers are shared, excluded or not in the corpus
        pool = max(depth * 2, 10) * (10 if exclude_docs else 1)
        for i, _ in self._index.search(query, pool):
            answers = self.answers[int(i)]
            if (exclude_self and self.queries[int(i)] == query) or exclude_docs.intersection(answers):
                continue
            docs += [d for d in answers if d not in docs]
            if len(docs) >= depth * 2:
                break
        if allowed is not None and docs:
            docs = [d for d, ok in zip(docs, allowed(docs)) if ok]
        return docs[:depth]

    # --------------------------------------------------------------- persistence
    def save(self, model_dir: str | Path) -> Path:
        path = Path(model_dir) / DATA_FILE
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            for q, docs in zip(self.queries, self.answers):
                fh.write(json.dumps({"query": q, "positives": docs}, ensure_ascii=False) + "\n")
        config = {**self.weight.__dict__, "queries": len(self)}
        fusion_config.save_extra(model_dir, {CONFIG_KEY: config})
        return path

    @classmethod
    def load(cls, model_dir: str | Path) -> "KnownQueries | None":
        """The known queries saved with a model, or None (none saved, or switched off)."""
        config = fusion_config.read_config(model_dir).get(CONFIG_KEY)
        path = Path(model_dir) / DATA_FILE
        if not config or not path.exists():
            return None
        weight = KnownWeight(**{k: config[k] for k in ("weight", "rrf_k", "depth", "tuned_on") if k in config})
        if weight.weight == 0.0:
            return None
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh if line.strip()]
        return cls([(r["query"], r["positives"]) for r in rows], weight)

    def __repr__(self) -> str:
        return f"KnownQueries({len(self)} queries, {self.weight.describe()})"


def resolve(value, auto: Callable[[], "KnownQueries | None"]) -> "KnownQueries | None":
    """A ``known_queries=`` argument: ``"auto"`` -> ``auto()``, None -> off, or a KnownQueries."""
    if value == "auto":
        return auto()
    if value is not None and not isinstance(value, KnownQueries):
        raise ValueError(f"known_queries must be 'auto', None or a KnownQueries, got {value!r}")
    return value


# Coarse for the same reason as fusion.WEIGHTS: a few hundred validation queries.
WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
RRF_KS = (60.0, 10.0, 2.0)


def tune(rankings: Sequence[Sequence[str]], known: Sequence[Sequence[str]], relevant: Sequence[set[str]],
         metric: Callable[[list[list[str]], list[set[str]]], float], *,
         known_unseen: Sequence[Sequence[str]] | None = None, depth: int = 20, weights=WEIGHTS,
         rrf_ks=RRF_KS, min_gain: float = 0.002, tuned_on: str | None = None) -> tuple[KnownWeight, dict]:
    """Choose (weight, rrf_k) on validation rankings.

    ``rankings[q]`` is the pipeline's final ranking of validation query q (texts), ``known[q]``
    the known queries' documents for it (from queries *other* than the validation ones).
    ``known_unseen[q]``, when given, is the same search with every known query about q's own
    documents left out: what a query about a document training never saw would get. Validation
    cannot tell which kind of query the deployment will see, so the objective weighs both equally:
    ``(metric(seen) + metric(unseen)) / 2``. A weight that wins big on queries like the training
    ones but buries new documents' answers loses to a milder one. Known queries are switched on
    only when they gain at least ``min_gain`` over the pipeline alone.
    """
    rankings, relevant = [list(r) for r in rankings], list(relevant)

    def value(w: KnownWeight) -> tuple[float, float, float]:
        seen = metric([w.combine(r, kn) for r, kn in zip(rankings, known)], relevant)
        if known_unseen is None:
            return seen, seen, seen
        unseen = metric([w.combine(r, kn) for r, kn in zip(rankings, known_unseen)], relevant)
        return (seen + unseen) / 2, seen, unseen

    off = KnownWeight(0.0, 10.0, depth, tuned_on)
    best, (best_value, best_seen, best_unseen) = off, value(off)
    baseline = best_value
    for k in rrf_ks:
        for w in weights:
            if w == 0.0:
                continue
            candidate = KnownWeight(w, k, depth, tuned_on)
            v = value(candidate)
            if v[0] > best_value + (min_gain if best is off else 1e-12):
                best, (best_value, best_seen, best_unseen) = candidate, v
    alone = metric([list(dict.fromkeys(kn))[:depth] for kn in known], relevant)
    return best, {"best": best.__dict__, "best_value": best_value, "pipeline_value": baseline,
                  "seen_value": best_seen, "unseen_value": best_unseen, "known_alone_value": alone,
                  "queries_with_known": sum(bool(kn) for kn in known),
                  "objective": "mean of seen and unseen" if known_unseen is not None else "seen"}
