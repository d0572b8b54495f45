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

import json
import os
import re
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
                a.flags.writeable = False  # shared by every later call and thread
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
        self.cut_chars = self.CUT_CHARS if _cuts_exactly(self.backend) else 0
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

    # A long text is cut before single spaces into parts of about this many characters (~330 KorQuAD tokens),
    # encoded side by side and joined: one call of the tokenizer spreads its texts over its threads a text
    # to a thread, so one 1,300-token passage among 17 short ones is the call's longest task. H200 host,
    # 1 x 50 KorQuAD calls cold, A/B interleaved: p50 8.5-8.9 ms cut vs 9.3-9.6 for the call with such a
    # passage, -0.2 ms over 60 questions' calls (bench/results/speed_h200_s14/call3/probe3.log). Only for
    # tokenizers whose parts are then exactly their whole (:func:`_cuts_exactly`); 0: never cut.
    CUT_CHARS = 600

    def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Each text's ids (int32: a vocabulary fits, and a cache holds half the bytes of int64)."""
        parts, counts = [], []
        for text in texts:
            cuts = _cut_points(text, self.cut_chars) if self.cut_chars else []
            bounds = [0, *cuts, len(text)]
            parts += [text[a:b] for a, b in zip(bounds, bounds[1:])]
            counts.append(len(bounds) - 1)
        ids = [np.asarray(e.ids, dtype=np.int32) for e in encode_parts(self.backend, parts)]
        out, i = [], 0
        for n in counts:
            out.append(ids[i] if n == 1 else np.concatenate(ids[i : i + n]))
            i += n
        return out

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


# ---------------------------------------------------------------- the tokenizer's threads
# A call's texts go to the Rust tokenizer in one ``encode_batch_fast``, which spreads them over its own
# (rayon) threads - unless its parallelism is off: TOKENIZERS_PARALLELISM=false, which users and
# frameworks set to silence its fork warning, and which the tokenizers library itself sets in a process
# forked after it ran (a server's workers, a DataLoader's). Then one 1 x 50 KorQuAD call tokenises on one
# core: ~30 ms on a slow-cored GPU host, six times the H100's forward (issue 39). So then the texts are
# cut into contiguous slices of about equal characters, one call each on this module's threads: the
# Rust call releases the GIL and encodes with shared, read-only state (rayon calls it from many threads
# the same way), so the ids are exactly one call's (tested). Calls of fewer characters stay one call.
PARALLEL_MIN_CHARS = 4000  # ~1,400 XLM-R tokens: below it a thread hand-off costs more than it saves
_pool = None
_pool_lock = threading.Lock()


def tokenizer_threads() -> int:
    """Threads for one call's texts when the tokenizer's own parallelism is off (0: it is on)."""
    if os.environ.get("TOKENIZERS_PARALLELISM", "").strip().lower() not in ("false", "0", "off", "no", "f", "n"):
        return 0
    return min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def encode_parts(backend, parts: Sequence[str]) -> list:
    """``backend.encode_batch_fast(parts)`` (no special tokens), on several threads where the tokenizer's
    own are off and the call is long enough to gain."""
    global _pool
    threads = tokenizer_threads()
    if threads < 2 or len(parts) < 2 or sum(map(len, parts)) < PARALLEL_MIN_CHARS:
        return backend.encode_batch_fast(list(parts), add_special_tokens=False)
    with _pool_lock:
        if _pool is None:
            from concurrent.futures import ThreadPoolExecutor

            _pool = ThreadPoolExecutor(threads, thread_name_prefix="rag-rerank-tokenizer")
    bounds = _slices([len(t) for t in parts], min(threads, len(parts)))
    futures = [_pool.submit(backend.encode_batch_fast, list(parts[a:b]), add_special_tokens=False)
               for a, b in zip(bounds, bounds[1:])]
    return [e for f in futures for e in f.result()]


def _slices(sizes: Sequence[int], n: int) -> list[int]:
    """Bounds of ``n`` contiguous slices of about equal total size (every slice non-empty): slice k ends at
    the first item where the running total reaches k/n of the whole."""
    import bisect
    import itertools

    running = list(itertools.accumulate(sizes))
    bounds = [0]
    for k in range(1, n):
        end = bisect.bisect_left(running, running[-1] * k / n) + 1
        bounds.append(min(max(end, bounds[-1] + 1), len(sizes) - (n - k)))
    return bounds + [len(sizes)]


# Pre-tokenizers that split a text at its whitespace before the model sees it, and ones that only split
# further (JSON "type" of the component; Metaspace only with split=True): the model never sees a token
# across a space, so a text cut before a space encodes as its parts do.
_SPLIT_AT_SPACES = {"BertPreTokenizer", "Whitespace", "WhitespaceSplit", "Metaspace"}
_SPLIT_FURTHER = {"Punctuation", "Digits"}
# Normalizers that map each character on its own, never a letter or digit to whitespace (a cut's two
# neighbours stay what separates it from other whitespace); and the rule that collapses runs of spaces,
# which never touches a single space between two letters or digits.
_PER_CHARACTER = {"NFC", "NFD", "NFKC", "NFKD", "Lowercase", "StripAccents", "BertNormalizer", "Precompiled", "Nmt"}
_SPACE_RUNS = ({"Regex": " {2,}"}, {"String": "  "})
_CLASS = re.compile(r"\[((?:\\x\{[0-9a-fA-F]+\}|[^\\\[\]\-^ ])+)\]")
_CLASS_MEMBER = re.compile(r"\\x\{([0-9a-fA-F]+)\}|(.)", re.S)


def _members(pattern: dict) -> list[str] | None:
    """The characters a Replace pattern matches where it is one character, or a class of single characters
    (literal or ``\\x{HEX}``); None for anything else (ranges, negation, categories, longer strings)."""
    if "String" in pattern:
        return [pattern["String"]] if len(pattern["String"]) == 1 else None
    match = _CLASS.fullmatch(pattern.get("Regex", ""))
    if match is None:
        return None
    return [chr(int(h, 16)) if h else c for h, c in _CLASS_MEMBER.findall(match.group(1))]


def _cuts_exactly(backend) -> bool:
    """Whether ``backend`` (a ``tokenizers.Tokenizer``) encodes a text cut before a single space between two
    letters or digits as the concatenation of its parts' encodings: a whitespace-splitting pre-tokenizer after
    normalisers that map characters on their own and leave letters, digits and that space as they are.
    Anything else (a Strip or Prepend normalizer, byte-level BPE, Metaspace without split, a Replace of a
    range or of letters, an unknown component) is never cut."""
    def state(component):
        return None if component is None else json.loads(component.__getstate__())

    def flat(component, key):
        return [m for c in component[key] for m in flat(c, key)] if component["type"] == "Sequence" else [component]

    def per_character(norm) -> bool:
        if norm["type"] == "Replace":
            if norm["pattern"] in _SPACE_RUNS:
                return True
            members = _members(norm["pattern"])
            return members is not None and not any(c.isalnum() or c == " " for c in members)
        return norm["type"] in _PER_CHARACTER

    try:
        pre, norm = state(backend.pre_tokenizer), state(backend.normalizer)
        if pre is None:
            return False
        pres, norms = flat(pre, "pretokenizers"), ([] if norm is None else flat(norm, "normalizers"))
        keeps_spaces = any(p["type"] == "Metaspace" for p in pres)  # spaces become "▁", not dropped
        # BertNormalizer's spaces around CJK characters would meet the cut's space under Metaspace
        padded = any(n["type"] == "BertNormalizer" and n.get("handle_chinese_chars", True) for n in norms)
        return (all(p["type"] in _SPLIT_AT_SPACES | _SPLIT_FURTHER and p.get("split", True) for p in pres)
                and any(p["type"] in _SPLIT_AT_SPACES for p in pres)
                and all(per_character(n) for n in norms) and not (keeps_spaces and padded))
    except (KeyError, TypeError, ValueError, AttributeError):  # a component this reading does not know
        return False


def _cut_points(text: str, size: int) -> list[int]:
    """Where ``text`` (longer than ``2 x size`` characters) is cut: before single spaces between two letters
    or digits (whitespace that normalisation would merge, or a zero-width character that it may turn into a
    space, is never beside a cut), about ``size`` characters apart, the last part ``size // 2`` at least."""
    cuts, start = [], 0
    while len(text) - start > 2 * size:
        k = text.find(" ", start + size)
        while k > 0 and k + 1 < len(text) and not (text[k - 1].isalnum() and text[k + 1].isalnum()):
            k = text.find(" ", k + 1)
        if k <= 0 or len(text) - k < size // 2:
            break
        cuts.append(k)
        start = k
    return cuts


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
