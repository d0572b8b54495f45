"""Known queries: rank documents by how similar the query is to questions already answered.

Training data pairs queries with the documents that answer them. On Q->A data
(chatbots, FAQs) a new question is often a rephrasing of a known one whose
answer sits in the same corpus; matching question to question is then a far
stronger signal than matching question to answer (on a validation part of the
Korean chatbot set: MRR@10 0.22 from known questions alone vs 0.08 for the
hybrid first stage). ``rag-rerank train`` keeps its training pairs with the
model and decides on validation whether, and how strongly, to use them:

    final(d) = (1 - w) / (k + rank_pipeline(d)) + w / (k + rank_known(d))

(a :class:`~rag_rerank.fusion.Fusion` whose added ranking is the known queries' documents);
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
from pathlib import Path
from typing import Callable, Sequence

from ..models import settings as model_settings
from .fusion import Fusion, tune as tune_fusion
from .lexical import KoreanBM25, searchable

DATA_FILE = "known_queries.jsonl.gz"
OFF = Fusion(weight=0.0, rrf_k=10.0, depth=20)  # the known queries' top 20 documents, weight 0: off


def char_bigrams(texts: Sequence[str]) -> list[list[str]]:
    """Character bigrams of each text with spaces removed (Korean spacing varies), as BM25 reads the text
    (:func:`~rag_rerank.retrieval.lexical.searchable`: a decomposed syllable's letters made other bigrams)."""
    out = []
    for text in texts:
        t = "".join(searchable(text).lower().split())
        out.append([t[i:i + 2] for i in range(len(t) - 1)] or ([t] if t else []))
    return out


def combine(fusion: Fusion, ranking: Sequence[str], known: Sequence[str]) -> list[str]:
    """The pipeline's ranking with the known queries' documents fused in (ties: pipeline order)."""
    return [key for key, _ in fusion.fuse(ranking, known)]


class KnownQueries:
    """Queries with the documents (texts) that answered them, searchable by query similarity.

    Args:
        pairs: ``(query, [document text, ...])`` items, e.g. a training set's groups.
        fusion: how the retrievers fuse them with the pipeline (default :data:`OFF`).
    """

    def __init__(self, pairs: Sequence[tuple[str, Sequence[str]]], fusion: Fusion | None = None) -> None:
        merged: dict[str, list[str]] = {}
        for query, docs in pairs:
            if query and docs:
                merged.setdefault(query, [])
                merged[query] += [d for d in docs if d not in merged[query]]
        self.queries = list(merged)
        self.answers = [merged[q] for q in self.queries]
        self.fusion = fusion or OFF
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
        fusion's). ``exclude_self`` skips a known query identical to ``query`` (scoring the training
        queries themselves); ``exclude_docs`` skips every known query answered by one of these
        documents (as if they had never been seen in training); ``allowed`` keeps only documents the
        corpus holds."""
        depth = depth or self.fusion.depth or 20
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

    def documents(self, queries: Sequence[str], held: Callable[[list[str]], list[bool]] | None = None,
                  candidates: Sequence[Sequence[str]] | None = None,
                  exclude: Sequence[set[str]] | None = None, exclude_self: bool = False) -> list[list[str]]:
        """Each query's known-query documents that the corpus holds.

        ``held(texts)`` says which texts the corpus holds (a first stage's ``find_texts``; answers
        are memoised, they repeat across queries); without it only the query's own
        ``candidates`` count as held. ``exclude[q]``: documents whose known queries query q must
        not use; ``exclude_self``: a known query identical to the query is skipped (see :meth:`search`)."""
        memo: dict[str, bool] = {}

        def in_corpus(texts: list[str]) -> list[bool]:
            new = [t for t in dict.fromkeys(texts) if t not in memo]
            if new:
                memo.update(zip(new, held(new)))
            return [memo[t] for t in texts]

        out = []
        for i, query in enumerate(queries):
            if held is not None:
                allowed = in_corpus
            else:
                own = set(candidates[i]) if candidates is not None else set()
                allowed = lambda ts, own=own: [t in own for t in ts]  # noqa: E731
            banned = frozenset(exclude[i]) if exclude is not None else frozenset()
            out.append(self.search(query, exclude_self=exclude_self, exclude_docs=banned, allowed=allowed))
        return out

    # --------------------------------------------------------------- persistence
    def save(self, model_dir: str | Path) -> Path:
        """Write the queries and their documents; the fusion goes to the model's settings file."""
        path = Path(model_dir) / DATA_FILE
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            for q, docs in zip(self.queries, self.answers):
                fh.write(json.dumps({"query": q, "positives": docs}, ensure_ascii=False) + "\n")
        settings = model_settings.load(model_dir)
        settings.replace(known_queries=self.fusion, known_query_count=len(self)).save(model_dir)
        return path

    @classmethod
    def load(cls, model_dir: str | Path) -> "KnownQueries | None":
        """The known queries saved with a model, or None (none saved, or switched off)."""
        fusion = model_settings.load(model_dir).known_queries
        path = Path(model_dir) / DATA_FILE
        if fusion is None or fusion.is_off or not path.exists():
            return None
        rows, n = [], 0
        try:
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                for n, line in enumerate(fh, 1):
                    if line.strip():
                        row = json.loads(line)
                        rows.append((row["query"], row["positives"]))
        except (OSError, EOFError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{n + 1 if isinstance(exc, (OSError, EOFError)) else n}: the model's known "
                             f"queries are damaged ({type(exc).__name__}: {exc}); restore the file, or delete it to "
                             "run the model without them") from None
        return cls(rows, fusion)

    @staticmethod
    def seen_queries(model_dir: str | Path) -> set[str]:
        """Every query a model trained with ``rag-rerank train`` saw (its training and validation queries, kept
        whether or not their fusion is on); empty where none were saved or the file cannot be read."""
        path = Path(model_dir) / DATA_FILE
        try:
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                return {json.loads(line)["query"] for line in fh if line.strip()}
        except (OSError, EOFError, UnicodeDecodeError, ValueError, KeyError, TypeError):
            return set()

    def __repr__(self) -> str:
        return f"KnownQueries({len(self)} queries, {'off' if self.fusion.is_off else self.fusion.describe()})"


def resolve(value, auto: Callable[[], "KnownQueries | None"]) -> "KnownQueries | None":
    """A ``known_queries=`` argument: ``"auto"`` -> ``auto()``, None -> off, or a KnownQueries."""
    if value == "auto":
        return auto()
    if value is not None and not isinstance(value, KnownQueries):
        raise ValueError(f"known_queries must be 'auto', None or a KnownQueries, got {value!r}")
    return value


# Coarse for the same reason as fusion.RERANKER_WEIGHTS: a few hundred validation queries.
WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
RRF_KS = (60.0, 10.0, 2.0)


def tune(rankings: Sequence[Sequence[str]], known: Sequence[Sequence[str]], relevant: Sequence[set[str]],
         metric: Callable[[list[list[str]], list[set[str]]], float], *,
         known_unseen: Sequence[Sequence[str]] | None = None, depth: int = 20, weights=WEIGHTS,
         rrf_ks=RRF_KS, min_gain: float = 0.002, tuned_on: str | None = None) -> tuple[Fusion, dict]:
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

    def seen_unseen(f: Fusion) -> tuple[float, float]:
        seen = metric([combine(f, r, kn) for r, kn in zip(rankings, known)], relevant)
        if known_unseen is None:
            return seen, seen
        return seen, metric([combine(f, r, kn) for r, kn in zip(rankings, known_unseen)], relevant)

    grid = [Fusion(w, k, depth, tuned_on) for k in rrf_ks for w in weights]
    best, report = tune_fusion(lambda f: sum(seen_unseen(f)) / 2, grid, Fusion(0.0, 10.0, depth, tuned_on),
                               min_gain=min_gain)
    seen, unseen = seen_unseen(best)
    alone = metric([list(dict.fromkeys(kn))[:depth] for kn in known], relevant)
    return best, {**report, "pipeline_value": report["baseline_value"], "seen_value": seen, "unseen_value": unseen,
                  "known_alone_value": alone, "queries_with_known": sum(bool(kn) for kn in known),
                  "objective": "mean of seen and unseen" if known_unseen is not None else "seen"}
