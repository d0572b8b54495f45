"""Korean BM25: Kiwi morphemes + Okapi BM25 over a sparse matrix.

Whitespace BM25 loses badly on Korean because particles glue onto words
(서울은 / 서울의 / 서울에서 are three different "words"); Kiwi splits them
into the content morpheme 서울 plus particles, which we drop.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import unicodedata
from itertools import chain
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from ..types import check_docs

# Content morphemes: nouns, numerals, pronouns, verb/adjective stems, roots,
# adverbs, foreign words, hanja and numbers. Particles and endings carry no topic.
CONTENT_TAGS = frozenset({"NNG", "NNP", "NNB", "NR", "NP", "VV", "VA", "XR", "MAG", "SL", "SH", "SN",
                          "VV-R", "VV-I", "VA-R", "VA-I"})


# One Kiwi for the process: loading its model takes seconds (about 5 s on 2 cores), and a service
# that opens several stores, or a CLI that opens one per command, should pay that once. Kiwi is
# not safe to call from several threads at once, so calls take turns.
_kiwi = None
_kiwi_lock = threading.Lock()


def _tokenize_kiwi(texts: list[str]):
    global _kiwi
    with _kiwi_lock:
        if _kiwi is None:
            from kiwipiepy import Kiwi

            # Kiwi's own worker threads tokenise a list in parallel (the GIL released): ingest uses
            # every core, a one-line query pays nothing for it.
            _kiwi = Kiwi(num_workers=max(1, min(os.cpu_count() or 1, 32)))
        return [_kiwi.tokenize(texts[0])] if len(texts) == 1 else list(_kiwi.tokenize(texts))


def warm_up() -> None:
    """Load Kiwi's model on a background thread (seconds), so a store's first BM25 search does not pay it."""
    if _kiwi is None:
        threading.Thread(target=lambda: _tokenize_kiwi(["가"]), name="rag-rerank-kiwi-load", daemon=True).start()


# Latin-script words are taken whole, not from Kiwi: it splits some where a sentence ends on them
# ('PayPal.' -> 'P' + 'ayPal.'), so a brand or product name would never match its own query.
_LATIN = re.compile(r"[A-Za-z][A-Za-z0-9]*")
# Kiwi's time grows faster than linearly on one huge string (a 1 MB document did not finish in 12
# minutes): long texts are tokenised in pieces of about this many characters, cut at whitespace.
PIECE_CHARS = 4000


# full-width ASCII (Ｆ, ２, ％: documents converted from HWP and older word processors, some OCR output) as
# the ASCII it stands for, and the ideographic space as a space; invisible format characters dropped (zero-width
# space and joiners, word joiner, a BOM inside text, soft hyphen: web pages and blog exports carry them)
_HALF_WIDTH = ({cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}
               | dict.fromkeys((0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF, 0x00AD)))


def searchable(text: str) -> str:
    """``text`` as both sides of a lexical match read it: Unicode's composed form (NFC), full-width ASCII
    as ASCII, and no invisible format characters. Hangul stored decomposed - a syllable as its letters
    (서 = ᄉ + ᅥ), as macOS writes file names and some PDF and HWP extractors write text - matched nothing at
    all; "２０２４년" never matched "2024년" (full-width Latin words were dropped); a zero-width space or soft
    hyphen inside a word ("서울\u200b특별시") split it into other tokens. Compatibility jamo (ㅋㅋ) and symbols
    (㈜, ①) are left as they are."""
    if text.isascii():
        return text
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    return text.translate(_HALF_WIDTH)


class KiwiTokenizer:
    """Texts -> lists of content-morpheme tokens; Latin-script words whole and lower-cased."""

    name = "kiwi"

    def __call__(self, texts: Sequence[str]) -> list[list[str]]:
        owner, pieces = [], []
        for i, text in enumerate(texts):
            for piece in _pieces(searchable(text), PIECE_CHARS):
                owner.append(i)
                pieces.append(piece)
        out: list[list[str]] = [[] for _ in texts]
        for i, piece, tokens in zip(owner, pieces, _tokenize_kiwi(pieces)):
            out[i] += _content(piece, tokens)
        return out


def _content(text: str, tokens) -> list[str]:
    latin = [(m.start(), m.end()) for m in _LATIN.finditer(text)]
    if not latin:
        return [t.form.lower() for t in tokens if t.tag in CONTENT_TAGS]
    covered = bytearray(len(text) + 1)
    for start, end in latin:
        covered[start:end] = b"\x01" * (end - start)
    kept = [t.form.lower() for t in tokens if t.tag in CONTENT_TAGS and not any(covered[t.start : t.start + t.len])]
    return kept + [text[start:end].lower() for start, end in latin]


def _pieces(text: str, size: int) -> list[str]:
    """``text`` cut into pieces of at most about ``size`` characters, at whitespace where there is some."""
    if len(text) <= size:
        return [text]
    out, start = [], 0
    while start < len(text):
        end = min(start + size, len(text))
        if end < len(text):
            space = max(text.rfind(" ", start + size // 2, end), text.rfind("\n", start + size // 2, end))
            end = space + 1 if space > start else end
        out.append(text[start:end])
        start = end
    return out


class WhitespaceTokenizer:
    """The naive baseline: lower-case and split on whitespace."""

    name = "whitespace"

    def __call__(self, texts: Sequence[str]) -> list[list[str]]:
        return [searchable(t).lower().split() for t in texts]


def make_tokenizer(kind: str | Callable) -> Callable[[Sequence[str]], list[list[str]]]:
    if callable(kind):
        return kind
    if kind == "kiwi":
        return KiwiTokenizer()
    if kind == "whitespace":
        return WhitespaceTokenizer()
    raise ValueError(f"unknown tokenizer {kind!r}: use 'kiwi', 'whitespace' or a callable")


def term_keys(terms) -> np.ndarray:
    """Each term's 64-bit key (BLAKE2b of its UTF-8 bytes): the index stores keys, never strings, so a
    segment opens as a few memory-mapped arrays. Two different terms sharing a key would be scored as
    one; at 64 bits that takes billions of distinct terms to become likely."""
    digest = hashlib.blake2b
    return np.frombuffer(b"".join(digest(t.encode("utf-8", "surrogatepass"), digest_size=8).digest() for t in terms),
                         dtype="<u8").astype(np.uint64, copy=False)


def text_key(text: str) -> int:
    """A document text's 64-bit key: how a sync tells a changed text from an unchanged one."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def postings(token_lists: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
    """Documents' tokens -> a term-major posting block: ``terms`` (sorted keys), ``indptr``, ``docs``
    (row within the block, ascending per term), ``tfs`` and per-row ``lengths``. Vectorised: a Python
    step per distinct term and per token lookup only."""
    n = len(token_lists)
    lengths = np.fromiter(map(len, token_lists), dtype=np.int64, count=n)
    flat = list(chain.from_iterable(token_lists))
    if not flat:
        return {"terms": np.zeros(0, np.uint64), "indptr": np.zeros(1, np.int64), "docs": np.zeros(0, np.int32),
                "tfs": np.zeros(0, np.uint16), "lengths": lengths.astype(np.uint32)}
    vocab = {t: i for i, t in enumerate(dict.fromkeys(flat))}
    local = np.fromiter(map(vocab.__getitem__, flat), dtype=np.int64, count=len(flat))
    keys = term_keys(vocab)[local]
    rows = np.repeat(np.arange(n, dtype=np.int64), lengths)
    order = np.lexsort((rows, keys))
    keys, rows = keys[order], rows[order]
    new_pair = np.ones(len(keys), bool)
    new_pair[1:] = (keys[1:] != keys[:-1]) | (rows[1:] != rows[:-1])
    starts = np.flatnonzero(new_pair)
    tfs = np.diff(np.append(starts, len(keys)))
    keys, rows = keys[starts], rows[starts]
    new_term = np.ones(len(keys), bool)
    new_term[1:] = keys[1:] != keys[:-1]
    term_starts = np.flatnonzero(new_term)
    return {"terms": keys[term_starts], "indptr": np.append(term_starts, len(keys)).astype(np.int64),
            "docs": rows.astype(np.int32), "tfs": np.minimum(tfs, 65535).astype(np.uint16),
            "lengths": lengths.astype(np.uint32)}


class Block:
    """One posting block as the scorer reads it: arrays (in memory or memory-mapped), the rows
    deleted from it (None: none) and its first row's number among all blocks searched together."""

    __slots__ = ("terms", "indptr", "docs", "tfs", "lengths", "deleted", "base")

    def __init__(self, arrays: Mapping[str, np.ndarray], deleted: np.ndarray | None = None, base: int = 0) -> None:
        self.terms, self.indptr, self.docs = arrays["terms"], arrays["indptr"], arrays["docs"]
        self.tfs, self.lengths = arrays["tfs"], arrays["lengths"]
        self.deleted, self.base = deleted, base

    def __len__(self) -> int:
        return len(self.lengths)

    def find(self, key: np.uint64) -> tuple[np.ndarray, np.ndarray] | None:
        """The live (rows, tfs) of one term key in this block, or None."""
        j = int(np.searchsorted(self.terms, key))
        if j >= len(self.terms) or self.terms[j] != key:
            return None
        lo, hi = int(self.indptr[j]), int(self.indptr[j + 1])
        docs, tfs = np.asarray(self.docs[lo:hi]), np.asarray(self.tfs[lo:hi])
        if self.deleted is not None:
            live = ~self.deleted[docs]
            docs, tfs = docs[live], tfs[live]
        return (docs, tfs) if len(docs) else None


def query_terms(tokenizer, query: str, k: int) -> list[str]:
    """A search's query terms (``k`` checked first: a bad ``k`` is an error even on an empty index)."""
    if k <= 0:
        raise ValueError("k must be >= 1")
    return tokenizer([query])[0]


def bm25_top(blocks: Sequence[Block], keys: np.ndarray, k: int, *, k1: float, b: float, n_live: int,
             avgdl: float, total_rows: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
    """Okapi BM25 (Lucene's non-negative idf) of the query term ``keys`` over ``blocks``: the top ``k``
    (global row, score) with score > 0, best first, ties by row. Document frequency counts live rows
    only, so a block layout (one block or many, with deletes) scores exactly as one rebuilt block.
    ``allowed``: a bool mask over global rows (a metadata filter)."""
    found = []
    for key in np.unique(keys):
        hits = [(blk, h) for blk in blocks if (h := blk.find(key)) is not None]
        if hits:
            found.append((sum(len(h[0]) for _, h in hits), hits))
    if not found or n_live == 0:
        return []
    rows, weights = [], []
    for df, hits in found:
        idf = np.log1p((n_live - df + 0.5) / (df + 0.5))
        for blk, (docs, tfs) in hits:
            tf = tfs.astype(np.float64)
            norm = k1 * (1 - b + b * blk.lengths[docs].astype(np.float64) / avgdl)
            rows.append(docs.astype(np.int64) + blk.base)
            weights.append(idf * tf * (k1 + 1) / (tf + norm))
    rows_a, w = np.concatenate(rows), np.concatenate(weights)
    if len(rows_a) * 32 > total_rows:
        scores = np.bincount(rows_a, w, minlength=total_rows)
        cand = np.flatnonzero(scores > 0)
        cand_scores = scores[cand]
    else:
        cand, inverse = np.unique(rows_a, return_inverse=True)
        cand_scores = np.bincount(inverse, w)
        keep = cand_scores > 0
        cand, cand_scores = cand[keep], cand_scores[keep]
    if allowed is not None:
        keep = allowed[cand]
        cand, cand_scores = cand[keep], cand_scores[keep]
    if len(cand) > k:
        part = np.argpartition(-cand_scores, k - 1)[:k]
        threshold = cand_scores[part].min()
        keep = cand_scores >= threshold  # every row tied at the cut, so ties break by row below
        cand, cand_scores = cand[keep], cand_scores[keep]
    order = np.lexsort((cand, -cand_scores))[:k]
    return [(int(cand[i]), float(cand_scores[i])) for i in order]


class KoreanBM25:
    """BM25 held in memory over documents identified by string ids (an in-memory corpus, known
    queries); a store keeps its BM25 on disk in :class:`rag_rerank.lexical_index.LexicalIndex`.

    Tokens are kept per document, so a change only tokenises the new documents; the posting block
    is rebuilt (vectorised) on the next search after a change.
    """

    def __init__(self, tokenizer: str | Callable = "kiwi", k1: float = 1.2, b: float = 0.75) -> None:
        self.tokenizer = make_tokenizer(tokenizer)
        self.k1, self.b = k1, b
        self._tokens: dict[str, list[str]] = {}
        self._matrix = None  # (ids, Block, avgdl) or None when stale
        self._lock = threading.Lock()

    # ------------------------------------------------------------- contents
    def __len__(self) -> int:
        return len(self._tokens)

    @property
    def ids(self) -> set[str]:
        return set(self._tokens)

    def add(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        ids, texts = check_docs(ids, "ids"), check_docs(texts, "texts")  # one string was read as its characters
        if len(ids) != len(texts):
            raise ValueError(f"{len(ids)} ids but {len(texts)} texts")
        new = [(i, t) for i, t in zip(ids, texts) if i not in self._tokens]
        if not new:
            return
        tokens = self.tokenizer([t for _, t in new])
        with self._lock:
            for (doc_id, _), toks in zip(new, tokens):
                self._tokens[doc_id] = toks
            self._matrix = None

    def delete(self, ids: Iterable[str]) -> None:
        with self._lock:
            for doc_id in ids:
                self._tokens.pop(doc_id, None)
            self._matrix = None

    # -------------------------------------------------------------- search
    def search(self, query: str, k: int, allowed: set[str] | None = None) -> list[tuple[str, float]]:
        """Top ``k`` (id, score) pairs with score > 0, best first; ties by id order of insertion."""
        terms = query_terms(self.tokenizer, query, k)
        ids, block, avgdl = self._index()
        if not ids or not terms:
            return []
        mask = None
        if allowed is not None:
            mask = np.fromiter((i in allowed for i in ids), bool, len(ids))
        top = bm25_top([block], term_keys(dict.fromkeys(terms)), k, k1=self.k1, b=self.b, n_live=len(ids),
                       avgdl=avgdl, total_rows=len(ids), allowed=mask)
        return [(ids[r], s) for r, s in top]

    def _index(self):
        with self._lock:
            if self._matrix is None:
                ids = list(self._tokens)
                block = Block(postings([self._tokens[i] for i in ids]))
                mean = float(block.lengths.mean()) if ids else 0.0
                self._matrix = (ids, block, mean if mean > 0 else 1.0)
            return self._matrix

    # ------------------------------------------------------ the old format
    @classmethod
    def load(cls, path: str | os.PathLike, tokenizer: str | Callable | None = None) -> "KoreanBM25":
        """Read a version-1 index: one JSON file of every document's tokens, as stores wrote it
        before the segment index (:mod:`rag_rerank.lexical_index` migrates such files)."""
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(payload, dict) or not isinstance(payload.get("tokens"), dict):
            raise ValueError(f"{path}: not a rag-rerank BM25 index (no 'tokens' object)")
        index = cls(tokenizer or payload.get("tokenizer", "kiwi"), k1=float(payload.get("k1", 1.2)),
                    b=float(payload.get("b", 0.75)))
        index._tokens = {str(k): [str(t) for t in v] for k, v in payload["tokens"].items()}
        return index
