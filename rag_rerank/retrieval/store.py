"""ChromaStore: one Chroma collection of documents, metadata and our vectors.

Embedded ``chromadb.PersistentClient`` by default; :meth:`ChromaStore.connect`
talks to a Chroma server through ``HttpClient`` with the same API. We embed
(the collection has no embedding function) so the query-side prompt of the
bi-encoder is always right. A Kiwi BM25 index (:class:`~rag_rerank.lexical_index.LexicalIndex`,
segments on disk) is kept next to the collection and in step with it, for lexical and hybrid search.

One truth for every process: a store notices at each search what another process wrote (the BM25
manifest's ``stat``; in embedded mode Chroma's own change counter) and catches up - BM25 at once,
dense search by reopening its Chroma client in the background. Writers hold the store's write lock
for their whole ingest; readers never take it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import sqlite3
import threading
import time
import warnings
import weakref
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .encoder import BiEncoder, as_bi_encoder
from .lexical import text_key
from .lexical_index import LexicalIndex, _stamp, migrate_json, prepare
from ..models import DEFAULT_ENCODER
from ..types import Document, Hit, check_docs, check_int, check_k, check_query, json_lines

DEFAULT_COLLECTION = "rag_rerank"
_VALID_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]$")
_SCALARS = (str, int, float, bool)
_PAGE = 5000


def collection_name(name: str) -> str:
    """Chroma accepts only ASCII names; map anything else deterministically."""
    if _VALID_NAME.match(name) and ".." not in name:
        return name
    slug = re.sub(r"[^a-zA-Z0-9]+", "-", name).strip("-")[:40]
    digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:16]
    return f"c-{slug}-{digest}" if slug else f"c-{digest}"


def content_id(text: str, metadata: Mapping[str, Any] | None) -> str:
    """Same text and metadata -> same id, so re-adding a document is a no-op."""
    canonical = json.dumps([text, dict(sorted((metadata or {}).items()))], ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


def lexical_dir(directory: str | Path, collection: str) -> Path:
    """Where a collection's BM25 index lives under ``directory``: named by the collection's Chroma
    name (ASCII, no path separators), so no collection name can point outside ``directory``."""
    return Path(directory) / "bm25" / collection_name(collection)


def lexical_file(directory: str | Path, collection: str) -> Path:
    """Where stores before the segment index kept a collection's BM25 (one JSON file): read once, to migrate."""
    folder = lexical_dir(directory, collection)
    return folder.with_name(folder.name + ".json")


def sanitize_metadata(metadata: Mapping[str, Any] | None, position: int, *,
                      label: str | None = None) -> dict[str, Any] | None:
    """Drop None values; reject nested values; return None instead of an empty dict. Errors name
    ``label`` (default ``metadata[position]``)."""
    if metadata is None:
        return None
    label = label or f"metadata[{position}]"
    if not isinstance(metadata, Mapping):
        raise TypeError(f"{label} must be a mapping, got {type(metadata).__name__}")
    clean = {}
    for key, value in metadata.items():
        if value is None:
            continue
        if not isinstance(key, str):
            raise TypeError(f"{label} has a non-string key {key!r}")
        if not key or key[0] in "$#" or key == "chroma:document":
            # Chroma refuses these with "Invalid metadata at index 0", naming neither key nor rule
            raise ValueError(f"{label} key {key!r}: Chroma refuses an empty key, one starting with "
                             "'$' or '#' (its operators) and 'chroma:document'")
        if type(value).__module__ == "numpy" and hasattr(value, "item"):
            value = value.item()  # numpy scalars (pandas rows): the same value as a Python one
        if not isinstance(value, _SCALARS):
            raise ValueError(f"{label}[{key!r}] is a {type(value).__name__}; Chroma stores only "
                             "str, int, float and bool values (flatten or JSON-encode nested data)")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{label}[{key!r}] is {value}; Chroma cannot store inf or NaN "
                             "(it would keep another number)")
        clean[key] = value
    return clean or None


def _one_each(value, name: str) -> list | None:
    """``metadatas`` / ``ids`` of add() as a list, one per document. A string was read as its characters (ids
    'ab' for two documents became 'a' and 'b'), a dict by its keys (a KeyError), a generator not at all."""
    if value is None:
        return None
    if isinstance(value, (str, bytes, Mapping, set, frozenset)):
        raise TypeError(f"{name} must be a list with one item per document, not a {type(value).__name__}")
    try:
        return list(value)
    except TypeError:
        raise TypeError(f"{name} must be a list with one item per document, got {type(value).__name__}") from None


def _as_documents(items, metadatas, ids) -> list[Document]:
    if isinstance(items, (str, bytes)):
        raise TypeError("add() takes a sequence of texts or documents, not a single string")
    if isinstance(items, (set, frozenset)):
        raise TypeError("add() takes a sequence of texts or documents, not a set (the ids it returns, and any "
                        "metadatas or ids given, pair with the documents by position; pass a list)")
    items = list(items)
    metadatas, ids = _one_each(metadatas, "metadatas"), _one_each(ids, "ids")
    if metadatas is not None and len(metadatas) != len(items):
        raise ValueError(f"{len(items)} documents but {len(metadatas)} metadatas")
    if ids is not None and len(ids) != len(items):
        raise ValueError(f"{len(items)} documents but {len(ids)} ids")
    docs = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            text, meta, doc_id = item, None, None
        elif isinstance(item, Document):
            text, meta, doc_id = item.text, item.metadata, item.id
        elif isinstance(item, Mapping) and "text" in item:
            text, meta, doc_id = item["text"], item.get("metadata"), item.get("id")
            other = sorted(map(str, set(item) - {"text", "metadata", "id"}))
            if other:  # they were dropped in silence
                raise TypeError(f"documents[{i}] has key(s) {', '.join(map(repr, other))} besides 'text', 'metadata' "
                                "and 'id': put them in its 'metadata'")
        else:
            raise TypeError(f"documents[{i}] is {type(item).__name__}; give str, Document or "
                            "{'text': ..., 'metadata': ..., 'id': ...}")
        if not isinstance(text, str):
            raise TypeError(f"documents[{i}] text is {type(text).__name__}, not str")
        if metadatas is not None:
            meta = metadatas[i]
        meta = sanitize_metadata(meta, i)
        if ids is not None:
            doc_id = ids[i]
        if doc_id is not None and (not isinstance(doc_id, (str, int)) or isinstance(doc_id, bool) or doc_id == ""):
            raise TypeError(f"ids[{i}] is {doc_id!r}; an id is a non-empty string")
        docs.append(Document(text, meta or {}, str(doc_id) if doc_id is not None else content_id(text, meta)))
    first: dict[str, int] = {}
    for i, doc in enumerate(docs):  # one id twice with other content: which one to keep is not ours to guess
        j = first.setdefault(doc.id, i)
        if j != i and (docs[j].text, docs[j].metadata) != (doc.text, doc.metadata):
            raise ValueError(f"id {doc.id!r} is given twice in one call (documents[{j}] and documents[{i}]) with "
                             "different text or metadata; give each document its own id")
    return docs


def _model_stem(name: str) -> str:
    """A model name's last part ('intfloat/multilingual-e5-small', '/models/multilingual-e5-small/' and
    'offline:multilingual-e5-small' all give 'multilingual-e5-small')."""
    return str(name).rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1].rsplit(":", 1)[-1].lower()


def _unless_empty(where):
    """A search's filter: ``{}`` filters nothing (as BM25 read it; Chroma refused it in dense search and get, so
    a hybrid search with ``where={}`` failed on one side). Never for delete: there ``{}`` names no documents."""
    return None if isinstance(where, dict) and not where else where


@contextlib.contextmanager
def _where_errors(where):
    """Chroma's refusals of a ``where`` filter (its InvalidArgumentError, or a bare ValueError deep in its
    validation) as one ValueError that names the filter."""
    if where is not None and not isinstance(where, dict):
        raise ValueError(f"where must be a dict (a Chroma metadata filter, e.g. {{'source': 'faq'}}), got {where!r}")
    try:
        yield
    except Exception as exc:
        from chromadb.errors import ChromaError, InvalidArgumentError

        if where is not None and (isinstance(exc, (InvalidArgumentError, ValueError, TypeError))
                                  or (isinstance(exc, ChromaError) and "where" in str(exc).lower())):
            raise ValueError(f"where {json.dumps(where, ensure_ascii=False, default=str)}: {exc}") from None
        raise


def _id_list(ids, name: str = "ids") -> list[str]:
    """``ids`` as a list of strings; one string is one id (as Chroma reads it), never its characters."""
    if isinstance(ids, str):
        return [ids]
    if isinstance(ids, (bytes, Mapping)):
        raise TypeError(f"{name} must be a string or a sequence of strings, got {type(ids).__name__}")
    try:
        out = list(ids)
    except TypeError:
        raise TypeError(f"{name} must be a string or a sequence of strings, got {type(ids).__name__}") from None
    for i, value in enumerate(out):
        if not isinstance(value, str):
            raise TypeError(f"{name}[{i}] is {type(value).__name__}; ids are strings")
    return out


class ChromaStore:
    """Documents + vectors in one Chroma collection, with an optional Kiwi BM25 beside it.

    Args:
        path: directory of the embedded store (``PersistentClient``); None with ``client``.
        collection: any name, Korean included (mapped to a valid ASCII name).
        encoder: a :class:`BiEncoder` or a model name; default: the one the
            collection was built with, else ``intfloat/multilingual-e5-small``.
        encoder_options: keyword arguments for the :class:`BiEncoder` loaded by name (``backend``,
            ``threads``, ``device``, ...): the collection names its model, the caller how to run it.
        lexical: keep a BM25 index (persisted under ``path``/bm25 in embedded mode).
        lexical_path: where to persist it in server mode (kept in memory otherwise).
    """

    def __init__(self, path: str | Path | None = None, collection: str = DEFAULT_COLLECTION, *,
                 encoder: BiEncoder | str | None = None, encoder_options: dict | None = None, client=None,
                 lexical: bool = True,
                 lexical_path: str | Path | None = None, bm25_tokenizer: str = "kiwi", create: bool = True) -> None:
        import chromadb

        if client is None:
            if path is None:
                raise ValueError("give a directory path (embedded store) or use ChromaStore.connect()")
            if not create and not (Path(path) / "chroma.sqlite3").exists():
                raise FileNotFoundError(f"{path}: no store there (create one with rag-rerank index, or "
                                        "ChromaStore(path) in Python)")
            Path(path).mkdir(parents=True, exist_ok=True)
            client = chromadb.PersistentClient(path=str(path))
        self.client = client
        self.path = Path(path) if path is not None else None
        self.name = collection
        self.collection_name = collection_name(collection)
        existing = self._existing_metadata()
        if existing is None and not create:
            names = sorted(c.name if hasattr(c, "name") else str(c) for c in client.list_collections())
            raise ValueError(f"no collection {collection!r} in this store; it holds: {', '.join(names) or 'none'}")
        if encoder is None:
            encoder = (existing or {}).get("rag_rerank_encoder", DEFAULT_ENCODER)
        self.encoder = as_bi_encoder(encoder, encoder_options)
        self._check_encoder(existing)
        self.collection = client.get_or_create_collection(
            self.collection_name, embedding_function=None,
            configuration={"hnsw": {"space": "cosine"}},
            metadata={"rag_rerank_name": collection, "rag_rerank_encoder": self.encoder.model_name,
                      "rag_rerank_dim": self.encoder.dimension})
        self._max_batch = int(client.get_max_batch_size())
        self._feed = _ChromaFeed.open(self.path, self.collection.id) if self.path is not None else None
        if self._feed is not None:
            _views(client).setdefault(self._feed.segment, self._feed.seq())
        self._refresher: threading.Thread | None = None
        self._marker_stamp, self._marker = None, None
        self._holding = 0  # > 0 while this store holds its write lock
        self._write_mutex = threading.RLock()  # this store's own writers, one at a time
        self.last_ingest: dict[str, float] = {}
        self.lexical: LexicalIndex | None = None
        self._write_lock_file = None
        if lexical:
            self.lexical = self._open_lexical(lexical_path, bm25_tokenizer)
        if self.path is not None and self.lexical is None:
            from .lexical_index import _FileLock

            self._write_lock_file = _FileLock(self.path / "rag_rerank.lock")

    @classmethod
    def connect(cls, host: str = "localhost", port: int = 8000, collection: str = DEFAULT_COLLECTION,
                **kwargs) -> "ChromaStore":
        """Use a Chroma server (``chroma run``) through ``HttpClient``; same API as embedded."""
        import chromadb

        return cls(None, collection, client=chromadb.HttpClient(host=host, port=port), **kwargs)

    # ----------------------------------------------------------- writing
    def add(self, documents: Sequence[str | Document | Mapping], metadatas: Sequence[Mapping | None] | None = None,
            ids: Sequence[str] | None = None, *, show_progress: bool | None = None,
            on_conflict: str = "error") -> list[str]:
        """Add documents; returns their ids. A document already stored (same id, same text and
        metadata) is skipped. An id stored with other text or metadata is a conflict: ``"error"``
        (default) raises naming it, ``"replace"`` replaces the stored one, ``"skip"`` keeps it."""
        if on_conflict not in ("error", "replace", "skip"):
            raise ValueError(f"on_conflict must be 'error', 'replace' or 'skip', got {on_conflict!r}")
        docs = _as_documents(documents, metadatas, ids)
        with self._writing():
            self._put(docs, on_conflict, show_progress)
        return [d.id for d in docs]

    def _put(self, docs: list[Document], on_conflict: str, show_progress: bool | None) -> tuple[int, int]:
        """Store ``docs`` (under the write lock): (added, already stored as they are)."""
        unique = list({d.id: d for d in docs}.values())
        stored = {d.id: d for d in self._stored([d.id for d in unique])}
        changed = {d.id for d in unique if d.id in stored and (stored[d.id].text, stored[d.id].metadata)
                   != (d.text, d.metadata or {})}
        if changed and on_conflict == "error":
            raise ValueError(f"id {sorted(changed)[0]!r} is stored with other text or metadata ({len(changed)} such "
                             "ids); pass on_conflict='replace' to replace them or 'skip' to keep the stored ones")
        if changed and on_conflict == "replace":
            self._delete_ids(sorted(changed))
            stored = {i: d for i, d in stored.items() if i not in changed}
        new = [d for d in unique if d.id not in stored]
        self._add_new(new, show_progress)
        return len(new), len(stored)

    def _add_new(self, new: list[Document], show_progress: bool | None) -> None:
        """Store ``new`` batch by batch through a pipeline: while batch i is written (Chroma, then BM25),
        batch i+1 is Kiwi-tokenised and embedded on other threads (Kiwi spreads over every core, the
        encoder over its device), so the slowest stage sets the rate. Each batch's ids are noted before
        its Chroma write and cleared after its BM25 commit: a process killed between the two leaves a
        note the next writer reads to put the batch into BM25 (Chroma keeps what it stored)."""
        if show_progress is None:
            show_progress = len(new) >= 2000
        # busy seconds per stage (tokenise and embed run beside the writes), and the writer's waits on them
        stats = {"documents": len(new), "tokenize_s": 0.0, "embed_s": 0.0, "chroma_s": 0.0, "bm25_s": 0.0,
                 "wait_embed_s": 0.0, "wait_tokenize_s": 0.0, "truncated": 0}
        count_truncated = getattr(self.encoder, "count_truncated", None)  # a custom encoder may not say
        start = time.perf_counter()
        if not new:
            self.last_ingest = {**stats, "wall_s": 0.0}
            return
        size = self._max_batch
        batches = [new[i : i + size] for i in range(0, len(new), size)]
        lexical = self.lexical

        def tokenize(batch):
            t = time.perf_counter()
            out = prepare([d.id for d in batch], [d.text for d in batch], lexical.tokenizer)
            stats["tokenize_s"] += time.perf_counter() - t
            return out

        def embed(batch):
            t = time.perf_counter()
            texts = [d.text for d in batch]
            out = self.encoder.embed_passages(texts)
            if count_truncated is not None:
                stats["truncated"] += count_truncated(texts)
            stats["embed_s"] += time.perf_counter() - t
            return out

        bar = _progress(len(new), show_progress, "indexing")
        tok_pool = ThreadPoolExecutor(1, thread_name_prefix="rag-rerank-kiwi")
        emb_pool = ThreadPoolExecutor(1, thread_name_prefix="rag-rerank-embed")
        ahead: deque = deque()
        try:
            for i, batch in enumerate(batches):
                while len(ahead) < 2 and i + len(ahead) < len(batches):  # up to two batches in flight ahead
                    b = batches[i + len(ahead)]
                    ahead.append((tok_pool.submit(tokenize, b) if lexical is not None else None, emb_pool.submit(embed, b)))
                tokens, vectors = ahead.popleft()
                t = time.perf_counter()
                vectors = vectors.result()
                stats["wait_embed_s"] += time.perf_counter() - t
                t = time.perf_counter()
                tokens = tokens.result() if tokens is not None else None
                stats["wait_tokenize_s"] += time.perf_counter() - t
                self._write_batch(batch, vectors, tokens, stats)
                bar.update(len(batch))
        finally:
            for tokens, vectors in ahead:
                for future in (tokens, vectors):
                    if future is not None:
                        future.cancel()
            tok_pool.shutdown(wait=True)
            emb_pool.shutdown(wait=True)
            bar.close()
            self.last_ingest = {**stats, "wall_s": time.perf_counter() - start}
        if stats["truncated"]:
            warnings.warn(f"{stats['truncated']} of {len(new)} documents are longer than the encoder's "
                          f"{self.encoder.max_length} tokens: their vectors are made from the start only, so dense "
                          "search does not see the rest (BM25 and the reranker read all of it). Split long texts "
                          "into passages (pages, sections) to retrieve every part by meaning", stacklevel=4)

    def _write_batch(self, batch: list[Document], vectors, prepared, stats: dict) -> None:
        ids = [d.id for d in batch]
        t = time.perf_counter()
        self._note_pending(ids)
        before = self._feed.seq() if self._feed is not None else None
        self.collection.add(ids=ids, documents=[d.text for d in batch], embeddings=vectors,
                            metadatas=[d.metadata or None for d in batch])
        seq = self._after_write(before)
        stats["chroma_s"] += time.perf_counter() - t
        if prepared is not None:
            t = time.perf_counter()
            self.lexical.commit(prepared, chroma_seq=seq)
            self._note_pending(None)
            stats["bm25_s"] += time.perf_counter() - t

    def _after_write(self, before: int | None):
        """After our own Chroma write: our client's view includes it; BM25's change mark may advance
        if it was in step before (returns the mark for the BM25 commit, or "keep")."""
        if self._feed is None:
            return "keep"
        seq = self._feed.seq(force=True)
        # Under the write lock our system is current (reopened at the lock if another process wrote):
        # it holds this write too. Other processes learn of it from the marker.
        _views(self.client)[self._feed.segment] = seq
        self._mark_write(seq)
        if self.lexical is not None and self.lexical.chroma_seq == before:
            return seq
        return "keep"

    def delete(self, ids: Sequence[str] | None = None, where: dict | None = None) -> None:
        if ids is None and where is None:
            raise ValueError("delete() needs ids or a where filter")
        with self._writing():
            doomed = _id_list(ids) if ids is not None else []
            if where is not None:
                with _where_errors(where):
                    doomed += self.collection.get(where=where, include=[])["ids"]
            self._delete_ids(doomed)

    def _delete_ids(self, doomed: list[str]) -> None:
        if not doomed:
            return
        for start in range(0, len(doomed), self._max_batch):
            chunk = doomed[start : start + self._max_batch]
            self._note_pending(chunk)
            before = self._feed.seq() if self._feed is not None else None
            self.collection.delete(ids=chunk)
            seq = self._after_write(before)
            if self.lexical is not None:
                self.lexical.commit(None, delete=chunk, chroma_seq=seq)
                self._note_pending(None)

    def index_sources(self, documents: Iterable[Document], *, sync: bool = False,
                      show_progress: bool | None = None) -> dict[str, int]:
        """Add ``documents`` as the current version of their sources (``metadata["source"]``): a
        source's stored documents that are not among them (an edited file's old chunks) are removed.
        ``sync=True`` also removes every stored document whose source is not among them (files that
        are gone). Documents without a source are only added. A given id stored with other text (a row
        of an edited file that keeps its id) is replaced: the file is the current version. Returns
        counts: added, removed, kept."""
        docs = _as_documents(documents, None, None)
        sources = {d.metadata.get("source") for d in docs} - {None}
        with self._writing():
            current = {d.id for d in docs}
            doomed = []
            for page in self._pages(sources=None if sync else sources):
                doomed += [i for i, m in page if (m or {}).get("source") is not None and i not in current]
            self._delete_ids(doomed)
            added, kept = self._put(docs, "replace", show_progress)
        return {"added": added, "removed": len(doomed), "kept": kept}

    def _pages(self, sources: set | None = None):
        """(id, metadata) pages of every stored document, or of those of ``sources``."""
        if sources is not None:
            for source in sorted(sources):
                res = self.collection.get(where={"source": source}, include=["metadatas"])
                yield list(zip(res["ids"], res["metadatas"]))
            return
        offset = 0
        while True:
            res = self.collection.get(include=["metadatas"], limit=_PAGE, offset=offset)
            yield list(zip(res["ids"], res["metadatas"]))
            if len(res["ids"]) < _PAGE:
                return
            offset += _PAGE

    # ----------------------------------------------------------- reading
    def count(self) -> int:
        return self.collection.count()

    def get(self, ids: Sequence[str] | None = None, where: dict | None = None,
            limit: int | None = None, offset: int | None = None) -> list[Document]:
        ids = _id_list(ids) if ids is not None else None
        # checked here: Chroma's binding answered -1 with an OverflowError and 1.5 with a TypeError of its own
        limit = None if limit is None else check_int(limit, "limit", minimum=0)
        offset = None if offset is None else check_int(offset, "offset", minimum=0)
        if ids is not None and len(ids) == 0:
            return []
        where = _unless_empty(where)
        with _where_errors(where):
            res = self.collection.get(ids=ids, where=where, limit=limit, offset=offset,
                                      include=["documents", "metadatas"])
        by_id = {i: Document(t, m or {}, i) for i, t, m in zip(res["ids"], res["documents"], res["metadatas"])}
        order = list(ids) if ids is not None else res["ids"]
        return [by_id[i] for i in order if i in by_id]

    def find_texts(self, texts: Sequence[str], where: dict | None = None) -> list[Document | None]:
        """The stored document whose text is exactly each of ``texts`` (None where there is none)."""
        found: list[Document | None] = []
        where = _unless_empty(where)
        for text in check_docs(texts, "texts"):
            with _where_errors(where):
                res = self.collection.get(where_document={"$contains": text}, where=where,
                                          include=["documents", "metadatas"])
            match = next(((i, m) for i, t, m in zip(res["ids"], res["documents"], res["metadatas"]) if t == text),
                         None)
            found.append(Document(text, match[1] or {}, match[0]) if match else None)
        return found

    def search(self, query: str, k: int = 10, where: dict | None = None) -> list[Hit]:
        """Dense search. ``score`` = (1 + cosine) / 2 in [0, 1]; 1 is identical direction."""
        return self.search_vector(self.encoder.embed_query(check_query(query)), k, where)

    def search_vector(self, vector, k: int = 10, where: dict | None = None) -> list[Hit]:
        k = check_k(k)
        vector = self._check_vector(vector)
        self._fresh()
        # no count() first: Chroma answers fewer than k (or none) by itself, and the count cost a query
        where = _unless_empty(where)
        with _where_errors(where):
            res = self.collection.query(query_embeddings=[vector], n_results=k, where=where,
                                        include=["documents", "metadatas", "distances"])
        hits, space = [], _space(self.collection)
        for rank, (i, t, m, d) in enumerate(zip(res["ids"][0], res["documents"][0], res["metadatas"][0],
                                                res["distances"][0]), 1):
            score = _similarity(float(d), space)
            hits.append(Hit(i, t, m or {}, score, score, rank))
        return hits

    def _check_vector(self, vector) -> list[float]:
        """``vector`` as a list of finite floats of the collection's dimension; ValueError naming ``vector``
        otherwise (Chroma would answer a NaN query with every distance NaN, scored 0, ranked as stored)."""
        import numpy as np

        try:
            values = np.asarray(vector, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"vector must be a sequence of numbers, got {type(vector).__name__}") from None
        if values.ndim != 1:
            raise ValueError(f"vector must be one vector (1-d), got shape {values.shape}")
        if values.size != self.encoder.dimension:
            raise ValueError(f"vector has {values.size} values; collection {self.name!r} holds "
                             f"{self.encoder.dimension}-d vectors")
        if not np.isfinite(values).all():
            raise ValueError(f"vector holds NaN or inf at index {int(np.flatnonzero(~np.isfinite(values))[0])}")
        return values.tolist()

    def search_lexical(self, query: str, k: int = 10, where: dict | None = None) -> list[Hit]:
        """BM25 (Kiwi) search; ``score`` is the raw BM25 score."""
        check_query(query)
        k = check_k(k)
        if self.lexical is None:
            raise ValueError("this store was opened with lexical=False")
        self._fresh()
        with _where_errors(where):
            allowed = self.collection.get(where=where, include=[])["ids"] if where else None
        ranked = self.lexical.search(query, k, allowed)
        docs = {d.id: d for d in self.get([i for i, _ in ranked])}
        return [Hit(i, docs[i].text, docs[i].metadata, s, s, r)
                for r, (i, s) in enumerate(ranked, 1) if i in docs]

    def all_ids(self) -> set[str]:
        ids: set[str] = set()
        offset = 0
        while True:
            page = self.collection.get(include=[], limit=_PAGE, offset=offset)["ids"]
            ids.update(page)
            if len(page) < _PAGE:
                return ids
            offset += _PAGE

    def refresh(self) -> None:
        """Catch up now with what other processes and Chroma clients wrote, waiting for it (searches
        do this by themselves: BM25 at once, dense search within one client reopen)."""
        if self._feed is not None and self._other_process_wrote() and not self._holding:
            self._reopen()
        if self.lexical is not None:
            if self._feed is None or self._lexical_lagging(force=True):
                with self._writing():
                    pass  # taking the lock catches BM25 up (server mode: ids compared when counts differ)
            self.lexical.refresh()

    def optimize(self) -> None:
        """Merge the BM25 index's segments into one (it merges in the background as it grows, too)."""
        if self.lexical is not None:
            self.lexical.optimize()

    def close(self) -> None:
        """Release the client (embedded stores free the directory for another process)."""
        refresher = self._refresher
        if refresher is not None:
            refresher.join()
        if self.lexical is not None:
            self.lexical.close()
        if self._feed is not None:
            self._feed.close()
        closer = getattr(self.client, "close", None) or getattr(getattr(self.client, "_system", None), "stop", None)
        if callable(closer):
            closer()

    def __enter__(self) -> "ChromaStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ChromaStore(collection={self.name!r}, count={self.count()}, encoder={self.encoder.model_name!r})"

    # --------------------------------------------------------- internals
    def _existing_metadata(self) -> dict | None:
        try:
            return self.client.get_collection(self.collection_name).metadata
        except Exception:  # noqa: BLE001 - Chroma raises different types for "not found" by client kind
            return None

    def _check_encoder(self, existing: dict | None) -> None:
        if not existing:
            return
        dim, built_with = existing.get("rag_rerank_dim"), existing.get("rag_rerank_encoder")
        if dim is not None and int(dim) != self.encoder.dimension:
            raise ValueError(f"collection {self.name!r} holds {dim}-d vectors from "
                             f"{built_with!r}; encoder {self.encoder.model_name!r} "
                             f"makes {self.encoder.dimension}-d vectors")
        if built_with and _model_stem(built_with) != _model_stem(self.encoder.model_name):
            # vectors of two models share no space: dense search (and anything added) would be garbage in silence.
            # Compared by the name's last part, so a hub name and a local copy of it ('intfloat/X', '/models/X')
            # agree; a renamed copy of the same model is warned about needlessly
            warnings.warn(f"collection {self.name!r} was built with encoder {built_with!r}; this store embeds with "
                          f"{self.encoder.model_name!r}. Vectors of different models are not comparable: dense "
                          "search finds nothing meaningful, and documents added now mix with the old ones. Open it "
                          "with the encoder it was built with (leave encoder unset)", stacklevel=3)

    def _stored(self, ids: list[str]) -> list[Document]:
        """The stored documents among ``ids`` (ids looked up first: a fresh ingest fetches no texts)."""
        out: list[Document] = []
        for start in range(0, len(ids), self._max_batch):
            found = self.collection.get(ids=ids[start : start + self._max_batch], include=[])["ids"]
            if found:
                out += self.get(found)
        return out

    def _open_lexical(self, lexical_path, tokenizer: str) -> LexicalIndex:
        """The BM25 index: under the store (embedded), at ``lexical_path`` (server mode; a folder every
        replica shares), else in this process's memory (built from the collection at open). An index
        of the old one-JSON-file format is migrated; a damaged one is rebuilt from the collection."""
        old_json = None
        if lexical_path is not None:
            directory = Path(lexical_path)
            if directory.suffix == ".json":  # the old flag value named the JSON file
                old_json, directory = directory, directory.with_suffix("")
            else:
                old_json = directory.with_name(directory.name + ".json")
        elif self.path is not None:
            directory, old_json = lexical_dir(self.path, self.name), lexical_file(self.path, self.name)
        else:
            directory = None
            warnings.warn("server mode without lexical_path: this process builds BM25 in memory from the whole "
                          "collection (Kiwi over every document); give lexical_path (a folder shared by every "
                          "replica) so it is built once", stacklevel=3)
        try:
            index = LexicalIndex(directory, tokenizer)
        except ValueError as exc:
            if "tokenizer" in str(exc):
                raise
            warnings.warn(f"{exc}; rebuilding the BM25 index from the collection", stacklevel=3)
            _retire(directory)
            index = LexicalIndex(directory, tokenizer)
        self.lexical = index
        lock = contextlib.nullcontext() if directory is None else _try_lock(index)
        if lock is None:
            return index  # a writer holds the store: it catches BM25 up itself; readers do not wait for it
        with lock:
            self._holding += 1
            try:
                if old_json is not None and old_json.exists() and not index.snapshot().manifest["segments"]:
                    try:
                        migrate_json(old_json, index)
                    except (ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
                        warnings.warn(f"{old_json}: BM25 index unreadable ({exc!r}); rebuilding it from the "
                                      "collection", stacklevel=3)
                        os.replace(old_json, old_json.with_name(old_json.name + ".damaged"))
                    index.set_state(chroma_seq=None)
                self._catch_up()
            finally:
                self._holding -= 1
        return index

    @contextlib.contextmanager
    def _writing(self):
        """One writer at a time per store (an exclusive lock beside the BM25 index, held by the process
        while it writes). Inside, our Chroma client is first reopened if another process wrote since
        it opened (writing from a stale client would lose their vectors) and BM25 caught up."""
        lock = self.lexical.write_lock() if self.lexical is not None else (self._write_lock_file or
                                                                            contextlib.nullcontext())
        with self._write_mutex, lock:
            self._holding += 1
            try:
                if self._holding == 1:
                    if self._feed is not None and self._other_process_wrote():
                        self._reopen()
                    if self.lexical is not None:
                        self._catch_up()
                yield
            finally:
                self._holding -= 1

    # ------------------------------------------------------ keeping in step
    def _catch_up(self) -> None:
        """Under the write lock: make BM25 hold exactly the collection. In embedded mode Chroma's change
        counter names what changed since BM25's mark (a writer killed between Chroma and BM25, another
        Chroma client's upsert); a killed writer's note names its batch; with neither (first open over a
        collection, server mode) ids are compared. Only new or changed texts are tokenised."""
        index = self.lexical
        index._remove_unreferenced()  # a killed writer's half-written segment
        pending = self._read_pending()
        mark = index.chroma_seq
        if self._feed is not None:
            seq = self._feed.seq(force=True)
            if mark is None or mark > seq:
                self._reconcile_all()
            elif seq > mark:
                self._reconcile(self._feed.changed_since(mark) + pending)
                if len(index) != self._feed.count():
                    self._reconcile_all()
            elif pending:
                self._reconcile(pending)
            if index.chroma_seq != seq:
                index.set_state(chroma_seq=seq)
        else:
            if mark is None:
                self._reconcile_all()
                index.set_state(chroma_seq=0)  # reconciled once; later, writers' notes and counts
            elif pending:
                self._reconcile(pending)
            if len(index) != self.collection.count():
                self._reconcile_all()
        if pending:
            self._note_pending(None)

    def _lexical_lagging(self, force: bool = False) -> bool:
        if self._feed is None or self.lexical is None:
            return False
        mark = self.lexical.chroma_seq
        return mark is not None and self._feed.seq(force=force) > mark

    def _reconcile_all(self) -> None:
        index = self.lexical
        stored = set(self._feed.ids()) if self._feed is not None else self.all_ids()
        held = index.ids
        stale = held - stored
        if stale:
            index.commit(None, delete=sorted(stale))
        missing = sorted(stored - held)
        self._reconcile(missing, progress=len(missing) >= 2000)

    def _reconcile(self, ids: list[str], progress: bool = False) -> None:
        """Bring ``ids`` in BM25 to what Chroma holds for them: tokenise new and changed texts, drop gone ids."""
        ids = list(dict.fromkeys(ids))
        if not ids:
            return
        index = self.lexical
        bar = _progress(len(ids), progress, "BM25 catching up")
        for start in range(0, len(ids), self._max_batch):
            chunk = ids[start : start + self._max_batch]
            docs = self.get(chunk)
            known = index.snapshot().texthashes(chunk)
            changed = [d for d in docs if known.get(d.id) != text_key(d.text)]
            gone = sorted(set(known) - {d.id for d in docs})
            if changed or gone:
                batch = prepare([d.id for d in changed], [d.text for d in changed], index.tokenizer) if changed else None
                index.commit(batch, delete=gone)
            bar.update(len(chunk))
        bar.close()

    def _pending_path(self) -> Path | None:
        return self.lexical.directory / "pending.json" if self.lexical is not None and self.lexical.directory else None

    def _note_pending(self, ids: list[str] | None) -> None:
        path = self._pending_path()
        if path is None:
            return
        if ids is None:
            path.unlink(missing_ok=True)
            return
        tmp = path.with_name(f"pending.json.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(ids, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)

    def _read_pending(self) -> list[str]:
        path = self._pending_path()
        if path is None or not path.exists():
            return []
        try:
            ids = json.loads(path.read_text(encoding="utf-8"))
            return [str(i) for i in ids] if isinstance(ids, list) else []
        except (ValueError, OSError):
            return []  # a note cut short by a kill: the change counter / the id comparison still catch up

    def _fresh(self) -> None:
        """Before a search: BM25 at the newest manifest (one stat); if another process changed the
        collection, reopen our Chroma client (and catch BM25 up) in the background - this search
        answers from what we had, the next ones from the new view."""
        if self.lexical is not None:
            self.lexical.refresh()
        if self._feed is None or self._holding:
            return
        if self._other_process_wrote() or self._lexical_lagging():
            with _REFRESH_GUARD:
                if self._refresher is None or not self._refresher.is_alive():
                    self._refresher = threading.Thread(target=self._refresh_in_background, daemon=True,
                                                       name="rag-rerank-store-refresh")
                    self._refresher.start()

    def _refresh_in_background(self) -> None:
        try:
            if (self._other_process_wrote() or self._unseen_foreign_add()) and not self._holding:
                self._reopen()
            if self._lexical_lagging(force=True):
                lock = _try_lock(self.lexical)
                if lock is not None:  # else a writer holds the store, and catches BM25 up itself
                    with lock:
                        self._holding += 1
                        try:
                            self._catch_up()
                        finally:
                            self._holding -= 1
        except Exception as exc:  # noqa: BLE001 - searches go on from the view we have; say why it is old
            warnings.warn(f"could not catch up with other writers ({exc!r}); searching what was loaded",
                          stacklevel=1)

    def _unseen_foreign_add(self) -> bool:
        """Whether another Chroma client (LangChain, LlamaIndex, chromadb itself) added documents our
        Chroma view does not hold. No rag-rerank marker tells of those; a client of this process shares
        our view and needs no reopen, one of another process does not. Up to three of the changed ids
        are probed: our view can read their vectors only if it holds them. (A foreign in-place update
        or delete is not detected this way: dense search sees it after the next reopen.)"""
        known, seq = self._known_seq, self._feed.seq(force=True)
        if known is None or seq <= known:
            return False
        probe = self._feed.changed_since(known)[:3]
        if not probe:
            return False
        try:
            got = self.collection.get(ids=probe, include=["embeddings"])
            held = all(self.collection.query(query_embeddings=[list(map(float, e))], n_results=1,
                                             include=[])["ids"][0][:1] == [i]
                       for i, e in zip(got["ids"], got["embeddings"]))
        except Exception:  # noqa: BLE001 - our view lacks them (Chroma: "Error finding id")
            held = False
        if held and len(got["ids"]) == len(probe):
            _views(self.client)[self._feed.segment] = seq  # a client of this process: our view has it
            return False
        now = time.monotonic()
        if now - getattr(self, "_last_foreign_reopen", 0.0) < 1.0:  # at most one such reopen a second
            return False
        self._last_foreign_reopen = now
        return True

    def _marker_path(self) -> Path:
        return self.path / ".rag_rerank" / f"writes-{self.collection_name}.json"

    def _mark_write(self, seq: int) -> None:
        """Note (process id, change count) of our write beside the store: other processes' stores read
        it to know their Chroma view is old. Writes by another client in this process share our Chroma
        system and need no reopen (BM25 still catches up with them, by the change count)."""
        path = self._marker_path()
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"pid": os.getpid(), "seq": seq}), encoding="utf-8")
        os.replace(tmp, path)

    def _other_process_wrote(self) -> bool:
        """Whether another process's rag-rerank store wrote this collection beyond what our Chroma
        system holds (one stat when nothing changed)."""
        path = self._marker_path()
        stamp = _stamp(path)
        if stamp != self._marker_stamp:
            try:
                mark = json.loads(path.read_text(encoding="utf-8"))
                self._marker = (int(mark["pid"]), int(mark["seq"]))
            except (OSError, ValueError, KeyError, TypeError):
                self._marker = None
            self._marker_stamp = stamp
        if self._marker is None:
            return False
        pid, seq = self._marker
        known = self._known_seq
        return pid != os.getpid() and (known is None or seq > known)

    @property
    def _known_seq(self) -> int | None:
        """The change count our Chroma system's view holds (stores of one process on one directory
        share one system, and so see each other's writes; only other processes' writes make it old)."""
        return _views(self.client).get(self._feed.segment)

    def _reopen(self) -> None:
        """A Chroma client that sees other processes' writes (Chroma's caches do not; a new system
        does). Another store of this process may have made one already: then it is shared, never a
        second system per directory beside a current one. Searches in flight finish on the old one."""
        import chromadb
        from chromadb.api.shared_system_client import SharedSystemClient

        key = str(self.path)
        with _REFRESH_GUARD:
            seq = self._feed.seq(force=True)
            current = SharedSystemClient._identifier_to_system.get(key)
            if current is None or _SYSTEM_SEQ.get(current, {}).get(self._feed.segment) != seq:
                SharedSystemClient._identifier_to_system.pop(key, None)
                client = chromadb.PersistentClient(path=key)
                _views(client)[self._feed.segment] = seq
            else:
                client = chromadb.PersistentClient(path=key)
            collection = client.get_collection(self.collection_name)
            self.client, self.collection = client, collection


_REFRESH_GUARD = threading.RLock()
# Chroma system -> {collection's metadata segment: the change count the system's view holds}
_SYSTEM_SEQ: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _views(client) -> dict:
    system = getattr(client, "_system", client)
    with _REFRESH_GUARD:
        if system not in _SYSTEM_SEQ:
            _SYSTEM_SEQ[system] = {}
        return _SYSTEM_SEQ[system]


def _try_lock(index: LexicalIndex):
    """The index's write lock as a context, if free now; else None."""
    return index.try_write_lock()


def _retire(directory: Path | None) -> None:
    if directory is not None and directory.exists():
        os.replace(directory, directory.with_name(f"{directory.name}.damaged-{int(time.time())}"))


class _ChromaFeed:
    """What changed in an embedded collection, read from Chroma's own SQLite file (read-only): its
    metadata segment's sequence number (every add, upsert and delete advances it) and which ids
    carry a number above a mark. A stat of the file first, so an idle check costs one system call."""

    def __init__(self, db: Path, segment: str, conn: sqlite3.Connection) -> None:
        self.db, self.segment, self._conn = db, segment, conn
        self._lock = threading.Lock()
        self._stamp, self._seq = None, 0

    @classmethod
    def open(cls, path: Path, collection_id) -> "_ChromaFeed | None":
        db = path / "chroma.sqlite3"
        try:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, check_same_thread=False, timeout=30)
            row = conn.execute("SELECT id FROM segments WHERE collection = ? AND scope = 'METADATA'",
                               (str(collection_id),)).fetchone()
        except sqlite3.Error as exc:
            warnings.warn(f"{db}: cannot read Chroma's change counter ({exc}); other processes' writes are "
                          "seen when this store is reopened", stacklevel=3)
            return None
        return cls(db, row[0], conn) if row else None

    def seq(self, force: bool = False) -> int:
        try:
            st = os.stat(self.db)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            stamp = None
        if not force and stamp is not None and stamp == self._stamp:
            return self._seq
        with self._lock:
            row = self._conn.execute("SELECT seq_id FROM max_seq_id WHERE segment_id = ?", (self.segment,)).fetchone()
        self._stamp, self._seq = stamp, int(row[0]) if row else 0
        return self._seq

    def changed_since(self, seq: int) -> list[str]:
        with self._lock:
            return [r[0] for r in self._conn.execute(
                "SELECT embedding_id FROM embeddings WHERE segment_id = ? AND seq_id > ?", (self.segment, seq))]

    def ids(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._conn.execute("SELECT embedding_id FROM embeddings WHERE segment_id = ?",
                                                     (self.segment,))]

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT count(*) FROM embeddings WHERE segment_id = ?",
                                          (self.segment,)).fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _similarity(distance: float, space: str) -> float:
    """Chroma distance -> (1 + cos) / 2, whatever space the collection was made with.

    Our collections use cosine; collections written by other tools (LangChain's
    Chroma defaults to l2) hold the same unit vectors, so the mapping is exact.
    """
    cos = {"cosine": 1.0 - distance, "l2": 1.0 - distance / 2.0, "ip": 1.0 - distance}[space]
    return min(1.0, max(0.0, (1.0 + cos) / 2.0))


def _space(collection) -> str:
    config = getattr(collection, "configuration", None) or {}
    space = (config.get("hnsw") or {}).get("space") or (config.get("spann") or {}).get("space")
    return space or (collection.metadata or {}).get("hnsw:space", "l2")


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, unit="doc")


_TEXT_FILES = (".txt", ".md")  # a file of them: a document a line; in a folder: a document a file


def iter_documents(path: str | Path) -> Iterable[Document]:
    """Read documents for ``rag-rerank index``: ``.jsonl`` (also ``.jsonl.gz``) rows ``{"text", "metadata"?,
    "id"?}`` (any other field of a row joins its metadata), a ``.json`` array of such rows or strings,
    ``.txt`` / ``.md`` lines, or a folder of ``.txt`` / ``.md`` files (one document each). Suffixes in any case. Every document's
    ``metadata["source"]`` is the absolute path of its file unless the row gives one (two files of
    one name never share a source): ``index`` replaces a source's old documents when it is indexed again."""
    path = Path(path)
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.suffix.lower() in _TEXT_FILES and p.is_file()):
            text = _read_text(f).strip()
            if text:
                yield Document(text, {"source": str(f.resolve())})
        return
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz")):
        yield from _jsonl_documents(path, str(path.resolve()))
    elif name.endswith(".json"):
        yield from _json_documents(path, str(path.resolve()))
    elif name.endswith(_TEXT_FILES):
        for line in _read_text(path).splitlines():
            if line.strip():
                yield Document(line.strip(), {"source": str(path.resolve())})
    else:
        raise ValueError(f"{path}: index reads .jsonl, .jsonl.gz, .json, .txt and .md files, or a folder of "
                         ".txt / .md files")


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if path.name.lower().endswith(".gz"):
        import gzip

        data = gzip.decompress(data)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


def _row_document(row, where: str, source: str) -> Document:
    if isinstance(row, str) and row.strip():
        return Document(row, {"source": source})
    if not isinstance(row, dict) or not isinstance(row.get("text"), str) or not row["text"].strip():
        raise ValueError(f"{where}: each row needs a non-empty string field 'text'")
    metadata = row.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ValueError(f"{where}: 'metadata' must be an object")
    # the row's other fields ({"text", "title", "url"}, a common corpus shape) are metadata too: they were
    # dropped in silence
    fields = {k: v for k, v in row.items() if k not in ("text", "metadata", "id")}
    both = sorted(k for k in fields.keys() & metadata.keys() if fields[k] != metadata[k])
    if both:
        raise ValueError(f"{where}: {both[0]!r} is both a field of the row and a key of its 'metadata', with "
                         "different values: keep one")
    # checked here, where an error can name the file and line (not a position in a write batch)
    metadata = sanitize_metadata({"source": source, **fields, **metadata}, 0, label=f"{where}: metadata")
    return Document(row["text"], metadata, row.get("id"))


def _jsonl_documents(path: Path, source: str) -> Iterable[Document]:
    for where, row in json_lines(_read_text(path).splitlines(), path):
        yield _row_document(row, where, source)


def _json_documents(path: Path, source: str) -> Iterable[Document]:
    try:
        rows = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(rows, list):
        raise ValueError(f"{path}: a .json file must hold an array of documents (strings or {{\"text\": ...}} "
                         "objects); one document per line is .jsonl")
    for i, row in enumerate(rows):
        yield _row_document(row, f"{path}[{i}]", source)
