"""(query, document) pairs as cross-encoder inputs, without the tokenizer's per-pair work.

A pair's input is the tokenizer's template around the query's and a document window's token ids
(``<s> query </s></s> passage </s>`` for XLM-R, ``[CLS] query [SEP] passage [SEP]`` for ALBERT).
Calling the tokenizer on pairs encodes the query once per pair and a passage once per query that
retrieved it, and builds Python lists per pair. Here each distinct query and document of a chunk
is encoded once, in one batched call of the Rust tokenizer (a batch of RAG queries repeats
passages: 120 KorQuAD questions x their top 50 name ~600 distinct paragraphs), and a pair is put
together from id arrays only when its padded batch is filled. The ids are the tokenizer's own:
each sequence of a pair is encoded on its own by the tokenizer too (tests check the equality).

A document's ids may also come from a :class:`TokenCache` that outlives the call: a RAG corpus's
passages come back query after query, and a passage seen before need not be tokenised again.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

__all__ = ["PairEncoder", "TokenCache", "Windows"]


class TokenCache:
    """Documents' token ids kept between calls: at most ``max_tokens`` ids in all (int32, 4 bytes
    each), the least recently used document dropped first; a document longer than that is not kept.

    Why: tokenising one question's 50 KorQuAD passages on the host is as long as scoring them on an
    H200 (BENCHMARKS.md, session 14), and a first stage over one corpus returns its popular passages
    again and again. Keyed by the text itself (a hash would let two texts share ids). Shared by the
    threads of one reranker (the ids are the tokenizer's whichever thread's copy made them), so every
    access takes a lock.
    """

    def __init__(self, max_tokens: int) -> None:
        if max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
        self.max_tokens = max_tokens
        self._ids: OrderedDict[str, np.ndarray] = OrderedDict()
        self._tokens = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def tokens(self) -> int:
        """Ids held now."""
        return self._tokens

    def missing(self, texts: Iterable[str]) -> int:
        """How many distinct ``texts`` are not held (the recency order left as it is)."""
        with self._lock:
            return sum(1 for t in set(texts) if t not in self._ids)

    def get(self, texts: Sequence[str]) -> list[np.ndarray | None]:
        """Each text's ids, None where not held; those found count as just used."""
        out = []
        with self._lock:
            for t in texts:
                ids = self._ids.get(t)
                if ids is not None:
                    self._ids.move_to_end(t)
                out.append(ids)
        return out

    def put(self, texts: Sequence[str], ids: Sequence[np.ndarray]) -> None:
        if not self.max_tokens:
            return
        with self._lock:
            for t, a in zip(texts, ids):
                if len(a) > self.max_tokens or t in self._ids:
                    continue
                self._ids[t] = a
                self._tokens += len(a)
            while self._tokens > self.max_tokens:
                _, dropped = self._ids.popitem(last=False)
                self._tokens -= len(dropped)

    def clear(self) -> None:
        with self._lock:
            self._ids.clear()
            self._tokens = 0


@dataclass
class Windows:
    """A chunk's windows: window ``w`` is ``queries[query[w]]`` with ``docs[doc[w]][start[w]:end[w]]``."""

    queries: list[np.ndarray] = field(default_factory=list)
    docs: list[np.ndarray] = field(default_factory=list)
    query: list[int] = field(default_factory=list)
    doc: list[int] = field(default_factory=list)
    start: list[int] = field(default_factory=list)
    end: list[int] = field(default_factory=list)
    owners: list[tuple[int, int]] = field(default_factory=list)  # (group, document index) of each window

    def __len__(self) -> int:
        return len(self.owners)


class PairEncoder:
    """Encodes chunks of (query, documents) groups into :class:`Windows` and pads them into batches.

    ``tokenizer`` is a Hugging Face fast tokenizer owned by the calling thread (its Rust backend
    keeps truncation state: not safe to share). A query keeps ``max_query_fraction`` of
    ``max_length`` tokens; ``window_overlap`` of a window (``max_length`` less the special tokens) is
    repeated in the next window of a long document. ``cache``: where documents' ids are looked up
    before tokenising them and kept after (queries are always tokenised: they seldom come back).
    """

    def __init__(self, tokenizer, max_length: int, max_query_fraction: float, window_overlap: float,
                 cache: TokenCache | None = None) -> None:
        self.backend = tokenizer.backend_tokenizer
        self.cache = cache
        self.backend.no_truncation()
        self.backend.no_padding()
        self.max_length = max_length
        self.pad_id = tokenizer.pad_token_id or 0
        self.with_types = "token_type_ids" in tokenizer.model_input_names
        self._template()
        self.query_limit = max(1, int(max_length * max_query_fraction))
        smallest_budget = max_length - self.query_limit - self.specials  # document tokens beside a longest query
        if smallest_budget < 1:
            raise ValueError(f"max_length={max_length} leaves no room for a document beside a query of "
                             f"{self.query_limit} tokens and {self.specials} special tokens: raise max_length or "
                             "lower max_query_fraction")
        # One overlap for every query, so a document's windows (and score) never depend on which
        # other queries share a call; below the smallest document budget, so windows always advance.
        self.stride = max(0, min(int((max_length - self.specials) * window_overlap), smallest_budget - 1))

    def _template(self) -> None:
        """prefix / mid / suffix special tokens and each part's token types, read off the tokenizer's
        post-processor on a sample pair (``sequence_ids``: None for a special token, 0 / 1 for the pair)."""
        pair = self.backend.encode("가", "나", add_special_tokens=True)
        seq, ids, types = pair.sequence_ids, pair.ids, pair.type_ids
        first = [i for i, s in enumerate(seq) if s == 0]
        second = [i for i, s in enumerate(seq) if s == 1]
        if not first or not second or first[-1] >= second[0]:
            raise ValueError("the tokenizer's pair template is not 'specials, query, specials, document, specials'")
        cut = lambda a, b: (np.asarray(ids[a:b], dtype=np.int64), np.asarray(types[a:b], dtype=np.int64))  # noqa: E731
        self.prefix, self.mid, self.suffix = cut(0, first[0]), cut(first[-1] + 1, second[0]), cut(second[-1] + 1, None)
        self.query_type, self.doc_type = types[first[0]], types[second[0]]
        self.specials = len(self.prefix[0]) + len(self.mid[0]) + len(self.suffix[0])

    def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Each text's ids (int32: a vocabulary fits, and a cache holds half the bytes of int64)."""
        return [np.asarray(e.ids, dtype=np.int32)
                for e in self.backend.encode_batch_fast(list(texts), add_special_tokens=False)]

    def _encode(self, queries: list[str], docs: list[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(queries' ids, documents' ids): the documents the cache lacks are tokenised with the queries,
        in one call of the tokenizer (one dispatch to its threads), and kept."""
        found = self.cache.get(docs) if self.cache is not None else [None] * len(docs)
        missing = [d for d, ids in zip(docs, found) if ids is None]
        encoded = self.encode([*queries, *missing])
        new = encoded[len(queries) :]
        if self.cache is not None:
            self.cache.put(missing, new)
        fresh = iter(new)
        return encoded[: len(queries)], [ids if ids is not None else next(fresh) for ids in found]

    def windows(self, chunk: Sequence[tuple[int, int, str, Sequence[str]]]) -> Windows:
        """``chunk``: (group, index of its first document, query, documents) entries."""
        out = Windows()
        query_row: dict[str, int] = {}
        doc_row: dict[str, int] = {}
        for _, _, query, docs in chunk:
            query_row.setdefault(query, len(query_row))
            for d in docs:
                doc_row.setdefault(d, len(doc_row))
        queries, out.docs = self._encode(list(query_row), list(doc_row))
        out.queries = [ids[: self.query_limit] for ids in queries]
        for g, first, query, docs in chunk:
            q = query_row[query]
            budget = self.max_length - self.specials - len(out.queries[q])
            for i, text in enumerate(docs):
                d = doc_row[text]
                for start, end in _spans(len(out.docs[d]), budget, self.stride):
                    out.query.append(q)
                    out.doc.append(d)
                    out.start.append(start)
                    out.end.append(end)
                    out.owners.append((g, first + i))
        return out

    def lengths(self, w: Windows) -> list[int]:
        return [self.length(w, k) for k in range(len(w))]

    def length(self, w: Windows, k: int) -> int:
        """Window ``k``'s input length, special tokens included."""
        return self.specials + len(w.queries[w.query[k]]) + w.end[k] - w.start[k]

    def ids(self, w: Windows, k: int) -> np.ndarray:
        """Window ``k``'s input ids, special tokens included."""
        return np.concatenate([self.prefix[0], w.queries[w.query[k]], self.mid[0],
                               w.docs[w.doc[k]][w.start[k] : w.end[k]], self.suffix[0]])

    def types(self, w: Windows, k: int) -> np.ndarray:
        """Window ``k``'s token types, special tokens included."""
        q, d = len(w.queries[w.query[k]]), w.end[k] - w.start[k]
        return np.concatenate([self.prefix[1], np.full(q, self.query_type), self.mid[1],
                               np.full(d, self.doc_type), self.suffix[1]])

    def pad(self, w: Windows, idx: Sequence[int]) -> dict[str, np.ndarray]:
        """Windows ``idx`` (longest first) as one right-padded int64 batch."""
        lengths = [self.length(w, k) for k in idx]
        width = max(lengths)
        input_ids = np.full((len(idx), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(idx), width), dtype=np.int64)
        types = np.zeros((len(idx), width), dtype=np.int64) if self.with_types else None
        for row, (k, n) in enumerate(zip(idx, lengths)):
            input_ids[row, :n] = self.ids(w, k)
            mask[row, :n] = 1
            if types is not None:
                types[row, :n] = self.types(w, k)
        batch = {"input_ids": input_ids, "attention_mask": mask}
        if types is not None:
            batch["token_type_ids"] = types
        return batch

    def pack(self, w: Windows, idx: Sequence[int], position_offset: int, spans: bool) -> dict:
        """Windows ``idx`` as one padding-free row (:func:`rag_rerank.packed.inputs`)."""
        from .packed import inputs

        types = [self.types(w, k) for k in idx] if self.with_types else None
        return inputs([self.ids(w, k) for k in idx], types, position_offset, spans)


def _spans(n: int, budget: int, stride: int) -> list[tuple[int, int]]:
    """Token spans of a document of ``n`` tokens: ``budget`` tokens a window, ``stride`` of them
    repeated in the next, the last window ending at the document's end (the tokenizer's overflow rule)."""
    spans, start = [], 0
    while True:
        end = min(start + budget, n)
        spans.append((start, end))
        if end >= n:
            return spans
        start += budget - stride
