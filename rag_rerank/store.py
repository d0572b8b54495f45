"""ChromaStore: one Chroma collection of documents, metadata and our vectors.

Embedded ``chromadb.PersistentClient`` by default; :meth:`ChromaStore.connect`
talks to a Chroma server through ``HttpClient`` with the same API. We embed
(the collection has no embedding function) so the query-side prompt of the
bi-encoder is always right. A Kiwi BM25 index is kept next to the collection
and in step with it, for lexical and hybrid search.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .encoder import BiEncoder
from .lexical import KoreanBM25
from .models import DEFAULT_ENCODER
from .types import Document, Hit, check_k, check_query

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
        lexical: keep a BM25 index (persisted under ``path``/bm25 in embedded mode).
        lexical_path: where to persist it in server mode (kept in memory otherwise).
    """

    def __init__(self, path: str | Path | None = None, collection: str = DEFAULT_COLLECTION, *,
                 encoder: BiEncoder | str | None = None, client=None, lexical: bool = True,
                 lexical_path: str | Path | None = None, bm25_tokenizer: str = "kiwi") -> None:
        import chromadb

        if client is None:
            if path is None:
                raise ValueError("give a directory path (embedded store) or use ChromaStore.connect()")
            Path(path).mkdir(parents=True, exist_ok=True)
            client = chromadb.PersistentClient(path=str(path))
        self.client = client
        self.path = Path(path) if path is not None else None
        self.name = collection
        self.collection_name = collection_name(collection)
        existing = self._existing_metadata()
        if encoder is None:
            encoder = (existing or {}).get("rag_rerank_encoder", DEFAULT_ENCODER)
        self.encoder = encoder if isinstance(encoder, BiEncoder) else BiEncoder(encoder)
        self._check_encoder(existing)
        self.collection = client.get_or_create_collection(
            self.collection_name, embedding_function=None,
            configuration={"hnsw": {"space": "cosine"}},
            metadata={"rag_rerank_name": collection, "rag_rerank_encoder": self.encoder.model_name,
                      "rag_rerank_dim": self.encoder.dimension})
        self._max_batch = int(client.get_max_batch_size())
        self.lexical: KoreanBM25 | None = None
        if lexical:
            if lexical_path is None and self.path is not None:
                lexical_path = self.path / "bm25" / f"{self.collection_name}.json"
            self._lexical_path = Path(lexical_path) if lexical_path else None
            self.lexical = self._open_lexical(bm25_tokenizer)

    @classmethod
    def connect(cls, host: str = "localhost", port: int = 8000, collection: str = DEFAULT_COLLECTION,
                **kwargs) -> "ChromaStore":
        """Use a Chroma server (``chroma run``) through ``HttpClient``; same API as embedded."""
        import chromadb

        return cls(None, collection, client=chromadb.HttpClient(host=host, port=port), **kwargs)

    # ----------------------------------------------------------- writing
    def add(self, documents: Sequence[str | Document | Mapping], metadatas: Sequence[Mapping | None] | None = None,
            ids: Sequence[str] | None = None, *, show_progress: bool | None = None) -> list[str]:
        """Add documents; returns their ids. Documents already stored (same id) are skipped."""
        docs = _as_documents(documents, metadatas, ids)
        unique = list({d.id: d for d in docs}.values())
        new = self._not_stored(unique)
        if show_progress is None:
            show_progress = len(new) >= 2000
        bar = _progress(len(new), show_progress, "indexing")
        for start in range(0, len(new), self._max_batch):
            batch = new[start : start + self._max_batch]
            vectors = self.encoder.embed_passages([d.text for d in batch])
            self.collection.add(ids=[d.id for d in batch], documents=[d.text for d in batch],
                                embeddings=vectors, metadatas=[d.metadata or None for d in batch])
            bar.update(len(batch))
        bar.close()
        if new and self.lexical is not None:
            self.lexical.add([d.id for d in new], [d.text for d in new])
            self._save_lexical()
        return [d.id for d in docs]

    def delete(self, ids: Sequence[str] | None = None, where: dict | None = None) -> None:
        if ids is None and where is None:
            raise ValueError("delete() needs ids or a where filter")
        doomed = list(ids or [])
        if where is not None:
            doomed += self.collection.get(where=where, include=[])["ids"]
        for start in range(0, len(doomed), self._max_batch):
            self.collection.delete(ids=doomed[start : start + self._max_batch])
        if self.lexical is not None and doomed:
            self.lexical.delete(doomed)
            self._save_lexical()

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

    def _not_stored(self, docs: list[Document]) -> list[Document]:
        stored: set[str] = set()
        for start in range(0, len(docs), self._max_batch):
            chunk = [d.id for d in docs[start : start + self._max_batch]]
            stored.update(self.collection.get(ids=chunk, include=[])["ids"])
        return [d for d in docs if d.id not in stored]

    def _open_lexical(self, tokenizer: str) -> KoreanBM25:
        path = self._lexical_path
        index = KoreanBM25.load(path) if path is not None and path.exists() else KoreanBM25(tokenizer)
        # Another writer (or an older version) may have changed the collection: catch up.
        if index.sync(self.all_ids(), lambda ids: [d.text for d in self.get(ids)]):
            self._save_lexical(index)
        return index

    def _save_lexical(self, index: KoreanBM25 | None = None) -> None:
        if self._lexical_path is not None:
            (index or self.lexical).save(self._lexical_path)


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


def iter_documents(path: str | Path) -> Iterable[Document]:
    """Read documents for ``rag-rerank index``: .jsonl lines, .txt lines, or a folder of .txt/.md files."""
    path = Path(path)
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".md") and p.is_file()):
            text = f.read_text(encoding="utf-8").strip()
            if text:
                yield Document(text, {"source": str(f.relative_to(path))})
        return
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    with path.open(encoding="utf-8") as fh:
        if path.suffix == ".jsonl":
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
                if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                    raise ValueError(f"{path}:{n}: each line needs a string field 'text'")
                yield Document(row["text"], row.get("metadata") or {}, row.get("id"))
        else:
            for line in fh:
                if line.strip():
                    yield Document(line.strip())
