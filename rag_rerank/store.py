"""ChromaStore: one Chroma collection of documents, metadata and our vectors.

Embedded ``chromadb.PersistentClient`` by default; :meth:`ChromaStore.connect`
talks to a Chroma server through ``HttpClient`` with the same API. We embed
(the collection has no embedding function) so the query-side prompt of the
bi-encoder is always right. A Kiwi BM25 index is kept next to the collection
and in step with it, for lexical and hybrid search.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .encoder import BiEncoder, as_bi_encoder
from .lexical import KoreanBM25
from .models import DEFAULT_ENCODER
from .types import Document, Hit, check_k, check_query, json_lines

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


def lexical_file(directory: str | Path, collection: str) -> Path:
    """Where a collection's BM25 index lives under ``directory``: named by the collection's Chroma
    name (ASCII, no path separators), so no collection name can point outside ``directory``."""
    return Path(directory) / "bm25" / f"{collection_name(collection)}.json"


def sanitize_metadata(metadata: Mapping[str, Any] | None, position: int) -> dict[str, Any] | None:
    """Drop None values; reject nested values; return None instead of an empty dict."""
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata[{position}] must be a mapping, got {type(metadata).__name__}")
    clean = {}
    for key, value in metadata.items():
        if value is None:
            continue
        if not isinstance(key, str):
            raise TypeError(f"metadata[{position}] has a non-string key {key!r}")
        if not isinstance(value, _SCALARS):
            raise ValueError(f"metadata[{position}][{key!r}] is a {type(value).__name__}; Chroma stores only "
                             "str, int, float and bool values (flatten or JSON-encode nested data)")
        clean[key] = value
    return clean or None


def _as_documents(items, metadatas, ids) -> list[Document]:
    if isinstance(items, (str, bytes)):
        raise TypeError("add() takes a sequence of texts or documents, not a single string")
    items = list(items)
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
        docs.append(Document(text, meta or {}, str(doc_id) if doc_id is not None else content_id(text, meta)))
    return docs


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
        self.lexical: KoreanBM25 | None = None
        self._lexical_path, self._lexical_seen = None, None
        if lexical:
            if lexical_path is None and self.path is not None:
                lexical_path = lexical_file(self.path, collection)
            self._lexical_path = Path(lexical_path) if lexical_path else None
            self._bm25_tokenizer = bm25_tokenizer
            with self._writing():
                self.lexical = self._open_lexical()

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
        """Chroma and BM25 batch by batch, so a failure part-way leaves both holding the same batches."""
        if show_progress is None:
            show_progress = len(new) >= 2000
        bar = _progress(len(new), show_progress, "indexing")
        try:
            for start in range(0, len(new), self._max_batch):
                batch = new[start : start + self._max_batch]
                vectors = self.encoder.embed_passages([d.text for d in batch])
                self.collection.add(ids=[d.id for d in batch], documents=[d.text for d in batch],
                                    embeddings=vectors, metadatas=[d.metadata or None for d in batch])
                if self.lexical is not None:
                    self.lexical.add([d.id for d in batch], [d.text for d in batch])
                bar.update(len(batch))
        finally:
            bar.close()
            if new and self.lexical is not None:
                self._save_lexical()

    def delete(self, ids: Sequence[str] | None = None, where: dict | None = None) -> None:
        if ids is None and where is None:
            raise ValueError("delete() needs ids or a where filter")
        with self._writing():
            doomed = list(ids or [])
            if where is not None:
                doomed += self.collection.get(where=where, include=[])["ids"]
            self._delete_ids(doomed)

    def _delete_ids(self, doomed: list[str]) -> None:
        for start in range(0, len(doomed), self._max_batch):
            self.collection.delete(ids=doomed[start : start + self._max_batch])
        if self.lexical is not None and doomed:
            self.lexical.delete(doomed)
            self._save_lexical()

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
        if ids is not None and len(ids) == 0:
            return []
        res = self.collection.get(ids=list(ids) if ids is not None else None, where=where, limit=limit,
                                  offset=offset, include=["documents", "metadatas"])
        by_id = {i: Document(t, m or {}, i) for i, t, m in zip(res["ids"], res["documents"], res["metadatas"])}
        order = list(ids) if ids is not None else res["ids"]
        return [by_id[i] for i in order if i in by_id]

    def find_texts(self, texts: Sequence[str], where: dict | None = None) -> list[Document | None]:
        """The stored document whose text is exactly each of ``texts`` (None where there is none)."""
        found: list[Document | None] = []
        for text in texts:
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
        check_k(k)
        n = self.count()
        if n == 0:
            return []
        res = self.collection.query(query_embeddings=[list(map(float, vector))], n_results=min(k, n), where=where,
                                    include=["documents", "metadatas", "distances"])
        hits, space = [], _space(self.collection)
        for rank, (i, t, m, d) in enumerate(zip(res["ids"][0], res["documents"][0], res["metadatas"][0],
                                                res["distances"][0]), 1):
            score = _similarity(float(d), space)
            hits.append(Hit(i, t, m or {}, score, score, rank))
        return hits

    def search_lexical(self, query: str, k: int = 10, where: dict | None = None) -> list[Hit]:
        """BM25 (Kiwi) search; ``score`` is the raw BM25 score."""
        check_query(query)
        check_k(k)
        if self.lexical is None:
            raise ValueError("this store was opened with lexical=False")
        allowed = set(self.collection.get(where=where, include=[])["ids"]) if where else None
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

    def close(self) -> None:
        """Release the client (embedded stores free the directory for another process)."""
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
        dim = existing.get("rag_rerank_dim")
        if dim is not None and int(dim) != self.encoder.dimension:
            raise ValueError(f"collection {self.name!r} holds {dim}-d vectors from "
                             f"{existing.get('rag_rerank_encoder')!r}; encoder {self.encoder.model_name!r} "
                             f"makes {self.encoder.dimension}-d vectors")

    def _stored(self, ids: list[str]) -> list[Document]:
        out: list[Document] = []
        for start in range(0, len(ids), self._max_batch):
            out += self.get(ids[start : start + self._max_batch])
        return out

    def _open_lexical(self) -> KoreanBM25:
        """The BM25 index as saved, caught up with the collection (another writer, a crash between
        the two, an older version); a damaged file is rebuilt from the collection, not fatal."""
        path = self._lexical_path
        index, damaged = None, False
        self._lexical_seen = _stamp(path)
        if path is not None and path.exists():
            try:
                index = KoreanBM25.load(path)
            except (ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
                warnings.warn(f"{path}: BM25 index unreadable ({exc!r}); rebuilding it from the collection",
                              stacklevel=3)
                damaged = True
        index = index or KoreanBM25(self._bm25_tokenizer)
        if index.sync(self.all_ids(), lambda ids: [d.text for d in self.get(ids)]) or damaged:
            self._save_lexical(index)
        return index

    def _save_lexical(self, index: KoreanBM25 | None = None) -> None:
        if self._lexical_path is not None:
            (index or self.lexical).save(self._lexical_path)
            self._lexical_seen = _stamp(self._lexical_path)

    @contextlib.contextmanager
    def _writing(self):
        """One writer at a time per store (an exclusive lock on a file beside the BM25 index, held by
        the process while it writes): two processes indexing into one store used to keep only the
        last writer's BM25 entries. Inside, the BM25 index is first caught up with what another
        writer saved since we read it."""
        lock = self._lock_path()
        if lock is None:
            yield
            return
        with _exclusive(lock):
            if self.lexical is not None and self._lexical_seen != _stamp(self._lexical_path):
                self.lexical = self._open_lexical()
            yield

    def _lock_path(self) -> Path | None:
        if self._lexical_path is not None:
            return self._lexical_path.with_suffix(".lock")
        return self.path / "rag_rerank.lock" if self.path is not None else None


def _stamp(path: Path | None):
    try:
        st = os.stat(path)
    except (OSError, TypeError):
        return None
    return st.st_mtime_ns, st.st_size


@contextlib.contextmanager
def _exclusive(lock: Path):
    """Hold an exclusive advisory lock on ``lock`` (made if missing) for the block."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here; one writer per store is then the caller's rule
        yield
        return
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


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
    "id"?}``, a ``.json`` array of such rows or strings, ``.txt`` / ``.md`` lines, or a folder of
    ``.txt`` / ``.md`` files (one document each). Suffixes in any case. Every document's
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
    return Document(row["text"], {"source": source, **metadata}, row.get("id"))


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
