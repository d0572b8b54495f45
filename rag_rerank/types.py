"""Plain data types and input checks shared by every stage (no torch, no framework types).

Everything that validates user input lives here so that the first stage, the reranker and
the adapters raise the same typed errors, and so that importing any of them for a check
does not pull in a model runtime.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Iterator


@dataclass(frozen=True)
class Document:
    """A document to store: text, flat metadata, optional id (content hash when None)."""

    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    id: str | None = None


@dataclass(frozen=True)
class Hit:
    """One retrieved document.

    ``score`` is the score the hit was ranked by at the last stage that ran:
    the reranker's [0, 1] relevance when reranked, the fused score when the
    reranker's ranking was fused with the first stage's or with the known queries'
    documents (weighted reciprocal-rank fusion scaled into [0, 1], 1 = first in both
    rankings: :meth:`rag_rerank.fusion.Fusion.fuse`), else the first-stage score. ``first_stage_rank`` 0 marks a document found only through a known query
    (its ``first_stage_score`` is then 0 and ``rerank_score`` None).
    ``first_stage_score`` meaning depends on the mode: dense = cosine similarity
    mapped to [0, 1] as ``(1 + cos) / 2``; bm25 = Okapi BM25 (unbounded, >= 0);
    hybrid = weighted reciprocal-rank fusion ``(rrf_k + 1) sum w / (rrf_k + rank)``, in [0, 1].
    """

    id: str
    text: str
    metadata: dict[str, Any]
    score: float
    first_stage_score: float
    first_stage_rank: int
    rerank_score: float | None = None

    def with_rerank(self, score: float, ranked_by: float | None = None) -> "Hit":
        return replace(self, score=score if ranked_by is None else ranked_by, rerank_score=score)


@dataclass(frozen=True)
class RankedDoc:
    """One reranked document: its position in the input, its score and text."""

    index: int
    score: float
    text: str


def check_query(query) -> str:
    if query is None or not isinstance(query, str):
        raise ValueError(f"query must be a non-empty string, got {type(query).__name__}")
    if not query.strip():
        raise ValueError("query must be a non-empty string, got an empty or whitespace-only query")
    check_unicode(query, "query")
    return query


def _listed(value, name: str) -> list:
    """``value`` as a list, read once (an iterator or generator here), where it is an ordered collection of
    items: one string was read as its characters ('서울' as two queries), a dict by its keys, a set in no order
    that results could be mapped back by."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of strings, not a single string")
    if isinstance(value, dict):
        raise TypeError(f"{name} must be a sequence of strings, not a dict (pass its values or keys explicitly)")
    if isinstance(value, (set, frozenset)):
        # scores and a ranking's indexes come back in the order given: a set has none to map them back by
        raise TypeError(f"{name} must be a sequence of strings, not a set (it has no order to return results "
                        f"in; pass a list, e.g. sorted({name}))")
    try:
        return list(value)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of strings, got {type(value).__name__}") from None


def check_docs(docs, name: str = "docs") -> list[str]:
    """The documents as a list (an iterator or generator is read once, here), each a string."""
    docs = _listed(docs, name)
    for i, doc in enumerate(docs):
        if doc is None:
            raise TypeError(f"{name}[{i}] is None; each of {name} must be a string")
        if not isinstance(doc, str):
            raise TypeError(f"{name}[{i}] is {type(doc).__name__}; each of {name} must be a string")
        check_unicode(doc, f"{name}[{i}]")
    return docs


def check_queries(queries) -> list[str]:
    """Queries of a batch call as a list, each a non-empty string."""
    return [check_query(q) for q in _listed(queries, "queries")]


def activate(logit: float, activation: str) -> float:
    """A reranker's raw score through its activation: ``"identity"``, else a numerically stable sigmoid."""
    if activation == "identity":
        return float(logit)
    return 1.0 / (1.0 + math.exp(-logit)) if logit >= 0 else math.exp(logit) / (1.0 + math.exp(logit))


def check_groups(queries, docs_per_query) -> list[tuple[str, list[str]]]:
    """(query, documents) pairs of a batch call (``score_many`` and kin), each checked; iterators read once."""
    if isinstance(docs_per_query, (str, bytes)):
        raise TypeError("docs_per_query must be a sequence of document lists")
    queries, docs_per_query = _listed(queries, "queries"), list(docs_per_query)
    if len(queries) != len(docs_per_query):
        raise ValueError(f"{len(queries)} queries but {len(docs_per_query)} document lists")
    return [(check_query(q), check_docs(d)) for q, d in zip(queries, docs_per_query)]


def check_unicode(text: str, name: str) -> None:
    """Lone surrogates (from bad decoding, or JSON's "\\ud800") are not text a tokenizer can encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{name} holds a lone surrogate at character {exc.start} (not valid Unicode text; "
                         "decode its source with errors='replace')") from None


def check_k(k: int, name: str = "k") -> int:
    try:
        return check_int(k, name, minimum=1)  # numpy integers too
    except ValueError:
        raise ValueError(f"{name} must be a positive integer, got {k!r}") from None


def check_int(value, name: str, minimum: int | None = None) -> int:
    """``value`` as an int (numpy integers too; never a bool, a float or a string), at least ``minimum``;
    ValueError naming ``name`` otherwise."""
    import operator

    if isinstance(value, (bool, float, str, bytes)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_number(value, name: str, low: float, high: float, *, low_open: bool = False,
                 high_open: bool = False) -> float:
    """``value`` as a float in the range [low, high] (ends open as asked); ValueError naming ``name``
    for a string, a bool, NaN or a value outside."""
    import math

    if isinstance(value, (bool, str, bytes)) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    inside = (low < value if low_open else low <= value) and (value < high if high_open else value <= high)
    if math.isnan(value) or not inside:
        raise ValueError(f"{name} must be in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}, "
                         f"got {value}")
    return value


def json_lines(lines: Iterable[str], path, error: type[ValueError] = ValueError) -> Iterator[tuple[str, dict]]:
    """(``path:line``, object) for each non-blank line of a JSON-lines file; a line that is not a JSON
    object raises ``error`` naming it (every reader of .jsonl files: documents, training data)."""
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"{where}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise error(f"{where}: each line must be a JSON object")
        yield where, row


def in_chunks(call, total: int, size: int, desc: str, progress: bool) -> list:
    """``call(start, stop)`` over ``total`` items: once for all of them, or - with ``progress`` and more than
    ``size`` items - in consecutive chunks of ``size`` under a progress bar on stderr. Returns the results of
    the calls, in order (one for a single call)."""
    if not (progress and total > size):
        return [call(0, total)]
    from tqdm.auto import tqdm

    out = []
    with tqdm(total=total, desc=desc, unit="query") as bar:
        for start in range(0, total, size):
            out.append(call(start, min(start + size, total)))
            bar.update(min(start + size, total) - start)
    return out


# ------------------------------------------------------------- queries with relevance
@dataclass
class Group:
    """A query, its relevant documents, negatives, and optionally the first stage's
    ranked candidates for it (what the reranker will see at query time)."""

    query: str
    positives: list[str]
    negatives: list[str] = field(default_factory=list)
    candidates: list[str] = field(default_factory=list)
    # a hybrid first stage's two rankings before fusion ({"dense": [...], "bm25": [...]}): kept so
    # the hybrid can be re-weighted later (rag-rerank train tunes it) without the store
    sides: dict[str, list[str]] = field(default_factory=dict)
    # what the query is about (an article, a source, a customer): validation holds whole topics out
    topic: str | None = None


@dataclass(frozen=True)
class ScoredPair:
    query: str
    document: str
    label: float
    topic: str | None = None
