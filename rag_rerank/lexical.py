"""Korean BM25: Kiwi morphemes + Okapi BM25 over a sparse matrix.

Whitespace BM25 loses badly on Korean because particles glue onto words
(서울은 / 서울의 / 서울에서 are three different "words"); Kiwi splits them
into the content morpheme 서울 plus particles, which we drop.
"""
from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

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

            _kiwi = Kiwi()
        return _kiwi.tokenize(texts)


# Latin-script words are taken whole, not from Kiwi: it splits some where a sentence ends on them
# ('PayPal.' -> 'P' + 'ayPal.'), so a brand or product name would never match its own query.
_LATIN = re.compile(r"[A-Za-z][A-Za-z0-9]*")
# Kiwi's time grows faster than linearly on one huge string (a 1 MB document did not finish in 12
# minutes): long texts are tokenised in pieces of about this many characters, cut at whitespace.
PIECE_CHARS = 4000


class KiwiTokenizer:
    """Texts -> lists of content-morpheme tokens; Latin-script words whole and lower-cased."""

    name = "kiwi"

    def __call__(self, texts: Sequence[str]) -> list[list[str]]:
        owner, pieces = [], []
        for i, text in enumerate(texts):
            for piece in _pieces(text, PIECE_CHARS):
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
        return [t.lower().split() for t in texts]


def make_tokenizer(kind: str | Callable) -> Callable[[Sequence[str]], list[list[str]]]:
    if callable(kind):
        return kind
    if kind == "kiwi":
        return KiwiTokenizer()
    if kind == "whitespace":
        return WhitespaceTokenizer()
    raise ValueError(f"unknown tokenizer {kind!r}: use 'kiwi', 'whitespace' or a callable")


class KoreanBM25:
    """BM25 over documents identified by string ids; incremental add/delete, persistable.

    Tokens are kept per document, so a change only tokenises the new documents;
    the score matrix is rebuilt lazily on the next search.
    """

    def __init__(self, tokenizer: str | Callable = "kiwi", k1: float = 1.2, b: float = 0.75) -> None:
        self.tokenizer = make_tokenizer(tokenizer)
        self.k1, self.b = k1, b
        self._tokens: dict[str, list[str]] = {}
        self._matrix = None  # (ids, vocab, csc weights) or None when stale
        self._lock = threading.Lock()

    # ------------------------------------------------------------- contents
    def __len__(self) -> int:
        return len(self._tokens)

    @property
    def ids(self) -> set[str]:
        return set(self._tokens)

    def add(self, ids: Sequence[str], texts: Sequence[str]) -> None:
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
        if k <= 0:
            raise ValueError("k must be >= 1")
        ids, vocab, weights = self._index()
        if not ids:
            return []
        cols = sorted({vocab[t] for t in self.tokenizer([query])[0] if t in vocab})
        if not cols:
            return []
        scores = np.asarray(weights[:, cols].sum(axis=1)).ravel()
        if allowed is not None:
            mask = np.fromiter((i in allowed for i in ids), bool, len(ids))
            scores = np.where(mask, scores, 0.0)
        top = np.flatnonzero(scores > 0)
        top = top[np.lexsort((top, -scores[top]))][:k]
        return [(ids[i], float(scores[i])) for i in top]

    def _index(self):
        with self._lock:
            if self._matrix is None:
                self._matrix = self._build()
            return self._matrix

    def _build(self):
        from scipy.sparse import csr_matrix

        ids = list(self._tokens)
        vocab: dict[str, int] = {}
        rows, cols, tfs = [], [], []
        lengths = np.zeros(len(ids), dtype=np.float64)
        for r, doc_id in enumerate(ids):
            toks = self._tokens[doc_id]
            lengths[r] = len(toks)
            counts: dict[int, int] = {}
            for t in toks:
                c = vocab.setdefault(t, len(vocab))
                counts[c] = counts.get(c, 0) + 1
            rows += [r] * len(counts)
            cols += list(counts)
            tfs += list(counts.values())
        tf = np.asarray(tfs, dtype=np.float64)
        rows_a = np.asarray(rows, dtype=np.int64)
        cols_a = np.asarray(cols, dtype=np.int64)
        n = len(ids)
        df = np.bincount(cols_a, minlength=len(vocab)) if len(vocab) else np.zeros(0)
        idf = np.log1p((n - df + 0.5) / (df + 0.5))  # Lucene's non-negative idf
        avgdl = lengths.mean() if n and lengths.mean() > 0 else 1.0
        norm = self.k1 * (1 - self.b + self.b * lengths[rows_a] / avgdl)
        w = idf[cols_a] * tf * (self.k1 + 1) / (tf + norm)
        weights = csr_matrix((w, (rows_a, cols_a)), shape=(n, len(vocab))).tocsc()
        return ids, vocab, weights

    # --------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"version": 1, "tokenizer": getattr(self.tokenizer, "name", "custom"),
                   "k1": self.k1, "b": self.b, "tokens": self._tokens}
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)  # readers never see a half-written file

    @classmethod
    def load(cls, path: str | os.PathLike, tokenizer: str | Callable | None = None) -> "KoreanBM25":
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
        index = cls(tokenizer or payload["tokenizer"], k1=payload["k1"], b=payload["b"])
        index._tokens = {k: list(v) for k, v in payload["tokens"].items()}
        return index

    def sync(self, known_ids: set[str], fetch_texts: Callable[[list[str]], list[str]]) -> bool:
        """Make the index hold exactly ``known_ids``, fetching texts only for ids it lacks.

        Returns True when something changed.
        """
        stale = self.ids - known_ids
        missing = sorted(known_ids - self.ids)
        if stale:
            self.delete(stale)
        if missing:
            self.add(missing, fetch_texts(missing))
        return bool(stale or missing)
