"""The store's BM25 index on disk: immutable segments of posting arrays, delete masks, one manifest.

Layout of a collection's index directory (``<store>/bm25/<collection>/``)::

    manifest.json            what is live: segments in row order, each with its delete file
    seg-00000007/            one immutable segment (numpy .npy files, opened memory-mapped)
        terms.npy            sorted 64-bit term keys          indptr.npy  postings of term j
        docs.npy  tfs.npy    row within the segment, term count   lengths.npy  tokens a row
        ids.bin  idoff.npy   the rows' ids (UTF-8, offsets)   idkeys.npy idrows.npy  id -> row
        texthash.npy         each row's text key (a sync tells changed texts from unchanged)
        del-00000012.npy     rows deleted as of manifest generation 12 (bool), when any are
    write.lock               one writer at a time (the store's write lock)

A write costs what its batch costs: a batch becomes a new segment, and a replaced or deleted
document flips a bit in its segment's delete mask (a new small file). The manifest is replaced
atomically (``os.replace``), so a reader sees the index before or after a commit, never between;
files a manifest names are never changed, only created and, once no manifest names them, removed.
Segments are merged in a background thread (tiered: ten adjacent segments of one size class make
one), or all at once on demand (:meth:`LexicalIndex.optimize`).

Readers take no lock. Every search first compares the manifest's ``stat`` with the one it read
(one system call): another process's commit is seen at the next query.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import threading
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from .lexical import Block, bm25_top, make_tokenizer, postings, query_terms, term_keys, text_key
from ..types import check_docs

FORMAT = 2
MANIFEST = "manifest.json"
MERGE_FACTOR = 10  # segments of one size class (a power of ten of live rows) merged into one
EXPUNGE_FRACTION = 0.5  # a segment with more rows deleted than this is rewritten alone
_ARRAYS = ("terms", "indptr", "docs", "tfs", "lengths", "texthash", "idoff", "idkeys", "idrows")


@dataclass
class Prepared:
    """A batch tokenised and turned into a segment's arrays, ready to commit (the slow part of a
    write - Kiwi and the posting sort - done outside the write lock, in the ingest pipeline)."""

    ids: list[str]
    arrays: dict[str, np.ndarray]


def id_keys(ids: Sequence[str]) -> np.ndarray:
    return term_keys(ids)


def prepare(ids: Sequence[str], texts: Sequence[str] | None = None, tokenizer: Callable | None = None, *,
            tokens: Sequence[Sequence[str]] | None = None, texthash: Sequence[int] | None = None) -> Prepared:
    """``ids`` with their ``texts`` (tokenised with ``tokenizer``) or their ``tokens`` -> a segment's arrays.
    Ids must be unique within a batch (the last of a repeated id would be kept by a store; here it is an error)."""
    ids = [str(i) for i in ids]
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))
        raise ValueError(f"id {dup!r} appears twice in one batch")
    if tokens is None:
        if texts is None or tokenizer is None:
            raise ValueError("prepare() needs texts and a tokenizer, or tokens")
        if len(texts) != len(ids):
            raise ValueError(f"{len(ids)} ids but {len(texts)} texts")
        tokens = tokenizer(list(texts))
    if len(tokens) != len(ids):
        raise ValueError(f"{len(ids)} ids but {len(tokens)} token lists")
    arrays = postings(tokens)
    if texthash is None:
        texthash = [text_key(t) for t in texts] if texts is not None else [0] * len(ids)
    arrays["texthash"] = np.asarray(texthash, dtype=np.uint64).reshape(len(ids))
    encoded = [i.encode("utf-8", "surrogatepass") for i in ids]
    arrays["idoff"] = np.concatenate([[0], np.cumsum([len(e) for e in encoded], dtype=np.int64)]).astype(np.int64)
    arrays["ids.bin"] = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    keys = id_keys(ids)
    order = np.argsort(keys, kind="stable")
    arrays["idkeys"], arrays["idrows"] = keys[order], order.astype(np.int32)
    return Prepared(ids, arrays)


class Segment:
    """One immutable segment: its arrays (memory-mapped from disk, or held in memory)."""

    def __init__(self, name: str, arrays: dict[str, np.ndarray], path: Path | None = None) -> None:
        self.name, self.arrays, self.path = name, arrays, path
        self.rows = len(arrays["lengths"])
        self.block = Block(arrays)
        self._blob = arrays["ids.bin"]

    @classmethod
    def open(cls, path: Path) -> "Segment":
        arrays = {n: _load(path / f"{n}.npy") for n in _ARRAYS}
        arrays["ids.bin"] = _load(path / "ids.bin.npy")
        return cls(path.name, arrays, path)

    @classmethod
    def write(cls, path: Path, arrays: dict[str, np.ndarray]) -> None:
        path.mkdir(parents=True)
        for name, arr in arrays.items():
            np.save(path / f"{name}.npy", np.ascontiguousarray(arr))

    def id_at(self, row: int) -> str:
        off = self.arrays["idoff"]
        return bytes(self._blob[int(off[row]) : int(off[row + 1])]).decode("utf-8", "surrogatepass")

    def rows_of(self, keys: np.ndarray, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(positions in ``ids``, rows here) of the ids this segment holds (deleted rows included). An id
        is matched by its 64-bit key; where two stored ids share one, their strings decide."""
        idkeys, idrows = self.arrays["idkeys"], self.arrays["idrows"]
        if not len(idkeys) or not len(keys):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        lo = np.searchsorted(idkeys, keys, "left")
        hi = np.searchsorted(idkeys, keys, "right")
        single = np.flatnonzero(hi - lo == 1)
        pos, rows = [single], [np.asarray(idrows[lo[single]], np.int64)]
        for p in np.flatnonzero(hi - lo > 1):
            for j in range(lo[p], hi[p]):
                row = int(idrows[j])
                if self.id_at(row) == ids[p]:
                    pos.append(np.array([p]))
                    rows.append(np.array([row]))
        return np.concatenate(pos).astype(np.int64), np.concatenate(rows).astype(np.int64)


def _load(path: Path) -> np.ndarray:
    arr = np.load(path, mmap_mode="r", allow_pickle=False)
    return np.asarray(arr) if arr.size == 0 else arr  # numpy cannot map an empty file


class Snapshot:
    """What one manifest generation makes searchable: segments in row order, their delete masks."""

    def __init__(self, manifest: dict, segments: list[Segment], deleted: list[np.ndarray | None]) -> None:
        self.manifest, self.segments, self.deleted = manifest, segments, deleted
        self.bases = np.cumsum([0] + [s.rows for s in segments]).astype(np.int64)
        self.blocks = [Block(s.arrays, d, int(base)) for s, d, base in zip(segments, deleted, self.bases)]
        entries = manifest["segments"]
        self.live = sum(e["live"] for e in entries)
        length_sum = sum(e["length_sum"] for e in entries)
        self.avgdl = length_sum / self.live if self.live and length_sum > 0 else 1.0

    @property
    def total_rows(self) -> int:
        return int(self.bases[-1])

    def id_of(self, row: int) -> str:
        s = int(np.searchsorted(self.bases, row, "right")) - 1
        return self.segments[s].id_at(row - int(self.bases[s]))

    def live_rows(self, ids: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per segment: (positions in ``ids``, rows) of the ids live there."""
        ids = list(ids)
        keys = id_keys(ids)
        out = []
        for seg, dead in zip(self.segments, self.deleted):
            pos, rows = seg.rows_of(keys, ids)
            if dead is not None and len(rows):
                live = ~np.asarray(dead)[rows]
                pos, rows = pos[live], rows[live]
            out.append((pos, rows))
        return out

    def texthashes(self, ids: Sequence[str]) -> dict[str, int]:
        ids = list(ids)
        out = {}
        for seg, (pos, rows) in zip(self.segments, self.live_rows(ids)):
            for p, h in zip(pos.tolist(), np.asarray(seg.arrays["texthash"])[rows].tolist()):
                out[ids[p]] = int(h)
        return out

    def all_ids(self) -> Iterable[str]:
        for seg, dead in zip(self.segments, self.deleted):
            for r in range(seg.rows):
                if dead is None or not dead[r]:
                    yield seg.id_at(r)


class LexicalIndex:
    """A collection's BM25 over string ids, persisted as segments under ``directory`` (None: kept in
    this process's memory only). ``tokenizer`` must match the one the index was built with."""

    def __init__(self, directory: str | os.PathLike | None, tokenizer: str | Callable = "kiwi", *, k1: float = 1.2,
                 b: float = 0.75, background_merge: bool = True) -> None:
        self.tokenizer = make_tokenizer(tokenizer)
        self.tokenizer_name = getattr(self.tokenizer, "name", "custom")
        self.k1, self.b = k1, b
        self.directory = Path(directory) if directory is not None else None
        self.background_merge = background_merge
        self._segments: dict[str, Segment] = {}  # opened segments by name (immutable: reused across snapshots)
        self._snapshot: Snapshot | None = None
        self._stamp = None
        self._refresh_lock = threading.Lock()
        self._commit_lock = threading.Lock()
        self._merge_guard = threading.Lock()
        self._file_lock = _FileLock(self.directory / "write.lock") if self.directory is not None else None
        self._merger: threading.Thread | None = None
        self._closed = False
        if self.directory is None:
            self._install(self._empty_manifest(), check=False)
        else:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.refresh()
            if self._snapshot is None:
                with self.write_lock():  # the first opener writes an empty manifest
                    if self._read_manifest() is None:
                        self._write_manifest(self._empty_manifest())
                    self.refresh()

    # ------------------------------------------------------------ reading
    def refresh(self) -> bool:
        """Load the newest manifest if it changed (one ``stat`` when it did not). True if it did."""
        if self.directory is None:
            return False
        path = self.directory / MANIFEST
        for attempt in range(50):
            stamp = _stamp(path)
            if stamp is not None and stamp == self._stamp:
                return False
            with self._refresh_lock:
                if stamp is not None and stamp == self._stamp:
                    return False
                manifest = self._read_manifest()
                if manifest is None:
                    return False
                try:
                    self._install(manifest)
                except FileNotFoundError:  # a merge retired a segment after we read the manifest: read again
                    time.sleep(0.001 * (attempt + 1))
                    continue
                self._stamp = stamp
                return True
        raise RuntimeError(f"{self.directory}: the index kept changing while it was read (50 tries)")

    def snapshot(self) -> Snapshot:
        self.refresh()
        return self._snapshot

    def __len__(self) -> int:
        return self.snapshot().live

    @property
    def ids(self) -> set[str]:
        return set(self.snapshot().all_ids())

    @property
    def chroma_seq(self) -> int | None:
        return self.snapshot().manifest.get("chroma_seq")

    @property
    def pending(self) -> list[str]:
        return list(self.snapshot().manifest.get("pending") or [])

    def search(self, query: str, k: int, allowed: Iterable[str] | None = None) -> list[tuple[str, float]]:
        """Top ``k`` (id, score) pairs with score > 0, best first; ties by insertion order.
        ``allowed``: only these ids (a metadata filter's result)."""
        terms = query_terms(self.tokenizer, query, k)
        snap = self.snapshot()
        if snap.live == 0 or not terms:
            return []
        mask = None
        if allowed is not None:
            mask = np.zeros(snap.total_rows, bool)
            for base, (_, rows) in zip(snap.bases, snap.live_rows(list(allowed))):
                mask[int(base) + rows] = True
        top = bm25_top(snap.blocks, term_keys(dict.fromkeys(terms)), k, k1=self.k1, b=self.b, n_live=snap.live,
                       avgdl=snap.avgdl, total_rows=snap.total_rows, allowed=mask)
        return [(snap.id_of(r), s) for r, s in top]

    # ------------------------------------------------------------ writing
    @contextlib.contextmanager
    def write_lock(self):
        """The index's writer lock: a file lock, so across processes; held by this process while any of
        its threads holds it (a store serialises its own writers)."""
        if self._file_lock is None:
            yield
            return
        with self._file_lock:
            self.refresh()
            yield

    def try_write_lock(self):
        """The writer lock as a context if nobody holds it now, else None."""
        if self._file_lock is None or not self._file_lock.try_acquire():
            return None

        @contextlib.contextmanager
        def held():
            try:
                self.refresh()
                yield
            finally:
                self._file_lock.__exit__(None, None, None)

        return held()

    @contextlib.contextmanager
    def _committing(self):
        with self._commit_lock, self.write_lock():
            yield

    def add(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        """Tokenise and add (an id already live is replaced)."""
        ids, texts = check_docs(ids, "ids"), check_docs(texts, "texts")  # one string was read as its characters
        if len(ids) != len(texts):
            raise ValueError(f"{len(ids)} ids but {len(texts)} texts")
        if ids:
            self.commit(prepare(ids, texts, self.tokenizer))

    def delete(self, ids: Iterable[str]) -> None:
        self.commit(None, delete=ids)

    def commit(self, batch: Prepared | None, delete: Iterable[str] = (), *, chroma_seq: int | None | str = "keep",
               pending: Sequence[str] | None | str = "keep") -> None:
        """One atomic change: ``batch`` added (its ids' older rows deleted), ``delete`` ids deleted.
        ``chroma_seq`` / ``pending``: the store's bookkeeping kept in the manifest ("keep": unchanged)."""
        delete = list(dict.fromkeys(str(i) for i in delete))
        with self._committing():
            snap = self._snapshot
            manifest = _copy(snap.manifest)
            doomed = delete + (batch.ids if batch is not None else [])
            new_deleted = [None if d is None else d for d in snap.deleted]
            touched = []
            for s, (_, rows) in enumerate(snap.live_rows(doomed) if doomed else ()):
                if len(rows):
                    base = snap.deleted[s]
                    new_deleted[s] = np.zeros(snap.segments[s].rows, bool) if base is None else np.array(base)
                    new_deleted[s][rows] = True
                    touched.append(s)
            manifest["generation"] += 1
            gen = manifest["generation"]
            for s in touched:
                seg, entry = snap.segments[s], manifest["segments"][s]
                self._store_deletes(seg, entry, new_deleted[s], gen)
            if batch is not None and batch.ids:
                name = f"seg-{manifest['next_segment']:08d}"
                manifest["next_segment"] += 1
                self._store_segment(name, batch.arrays)
                manifest["segments"].append({"name": name, "rows": len(batch.ids), "live": len(batch.ids),
                                             "length_sum": int(np.asarray(batch.arrays["lengths"]).sum()),
                                             "deletes": None})
            if chroma_seq != "keep":
                manifest["chroma_seq"] = chroma_seq
            if pending != "keep":
                manifest["pending"] = list(pending or [])
            manifest["segments"] = [e for e in manifest["segments"] if e["rows"] > 0]
            self._publish(manifest)
        self._maybe_merge()

    def set_state(self, *, chroma_seq: int | None | str = "keep", pending: Sequence[str] | None | str = "keep") -> None:
        """Update only the store's bookkeeping (an empty commit)."""
        self.commit(None, chroma_seq=chroma_seq, pending=pending)

    def optimize(self) -> None:
        """Merge every segment into one, dropping deleted rows (on demand; searches go on meanwhile)."""
        self.wait_merges()
        while True:
            snap = self.snapshot()
            entries = snap.manifest["segments"]
            if len(entries) <= 1 and not any(e["live"] < e["rows"] for e in entries):
                return
            self._merge([e["name"] for e in entries])

    def wait_merges(self) -> None:
        merger = self._merger
        if merger is not None:
            merger.join()

    def close(self) -> None:
        self._closed = True
        self.wait_merges()

    # ------------------------------------------------------------ merging
    def _merge_candidate(self, snap: Snapshot) -> list[str] | None:
        entries = snap.manifest["segments"]
        for e in entries:
            if e["rows"] >= 1000 and e["rows"] - e["live"] > EXPUNGE_FRACTION * e["rows"]:
                return [e["name"]]
        # Size classes are powers of ten of live rows. A run of adjacent segments no bigger than class L
        # that holds MERGE_FACTOR segments of class L is merged whole (smaller ones inside it come along),
        # so each row is rewritten about once per class: amortised write cost grows with log(corpus).
        levels = [int(math.log10(max(e["live"], 1))) for e in entries]
        for level in sorted(set(levels)):
            start, count = 0, 0
            for i, lv in enumerate(levels + [level + 1]):
                if lv > level:
                    if count >= MERGE_FACTOR:
                        return [e["name"] for e in entries[start:i]]
                    start, count = i + 1, 0
                elif lv == level:
                    count += 1
        return None

    def _maybe_merge(self) -> None:
        if self._closed or self._merge_candidate(self._snapshot) is None:
            return
        if not self.background_merge or self.directory is None:
            self._merge_all_candidates()
            return
        with self._merge_guard:
            if self._merger is not None and self._merger.is_alive():
                return
            self._merger = threading.Thread(target=self._merge_all_candidates, name="rag-rerank-bm25-merge",
                                            daemon=True)
            self._merger.start()

    def _merge_all_candidates(self) -> None:
        try:
            while not self._closed:
                names = self._merge_candidate(self.snapshot())
                if names is None or not self._merge(names):
                    return
        except Exception as exc:  # noqa: BLE001 - a failed merge leaves the index as it was; say so
            warnings.warn(f"{self.directory}: BM25 segment merge failed ({exc!r}); the index is unchanged",
                          stacklevel=1)

    def _merge(self, names: list[str]) -> bool:
        """Merge adjacent segments ``names`` into one (built without the lock; committed under it with
        the deletes that landed meanwhile carried over). False if another writer changed them first."""
        snap = self.snapshot()
        index = {s.name: i for i, s in enumerate(snap.segments)}
        if any(n not in index for n in names):
            return False
        picked = [index[n] for n in names]
        parts, start_deleted, rowmaps, ids = [], [], [], []
        offset = 0
        for s in picked:
            seg, dead = snap.segments[s], snap.deleted[s]
            live = np.ones(seg.rows, bool) if dead is None else ~np.asarray(dead)
            rowmap = np.full(seg.rows, -1, np.int64)
            rowmap[live] = np.arange(offset, offset + int(live.sum()))
            offset += int(live.sum())
            parts.append((seg, live, rowmap))
            start_deleted.append(None if dead is None else np.array(dead))
            rowmaps.append(rowmap)
            ids += [seg.id_at(r) for r in np.flatnonzero(live)]
        arrays = _merge_arrays(parts, ids)
        with self._committing():
            now = self._snapshot
            index = {s.name: i for i, s in enumerate(now.segments)}
            if any(n not in index for n in names) or [index[n] for n in names] != list(
                    range(index[names[0]], index[names[0]] + len(names))):
                return False
            deleted = np.zeros(offset, bool)
            for name, start, rowmap in zip(names, start_deleted, rowmaps):
                cur = now.deleted[index[name]]
                if cur is not None:
                    fresh = np.asarray(cur) & (~start if start is not None else True)
                    deleted[rowmap[np.flatnonzero(fresh)]] = True
            manifest = _copy(now.manifest)
            manifest["generation"] += 1
            name = f"seg-{manifest['next_segment']:08d}"
            manifest["next_segment"] += 1
            self._store_segment(name, arrays)
            entry = {"name": name, "rows": offset, "live": offset,
                     "length_sum": int(np.asarray(arrays["lengths"]).sum()), "deletes": None}
            if deleted.any():
                self._store_deletes(None, entry, deleted, manifest["generation"], segment_name=name,
                                    lengths=arrays["lengths"])
            first = index[names[0]]
            manifest["segments"][first : first + len(names)] = [entry] if offset else []
            self._publish(manifest)
            self._remove_unreferenced()
        return True

    # ------------------------------------------------------------ storage
    def _store_segment(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        if self.directory is None:
            self._segments[name] = Segment(name, arrays)
            return
        tmp = self.directory / f"tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        Segment.write(tmp, arrays)
        os.replace(tmp, self.directory / name)

    def _store_deletes(self, seg: Segment | None, entry: dict, deleted: np.ndarray, gen: int, *,
                       segment_name: str | None = None, lengths=None) -> None:
        lengths = seg.arrays["lengths"] if seg is not None else lengths
        live = ~deleted
        entry["live"] = int(live.sum())
        entry["length_sum"] = int(np.asarray(lengths, dtype=np.int64)[live].sum())
        file = f"del-{gen:08d}.npy"
        entry["deletes"] = file
        name = segment_name or seg.name
        if self.directory is None:
            self._deletes_mem[(name, file)] = deleted
            return
        tmp = self.directory / name / f"{file}.tmp-{os.getpid()}"
        with open(tmp, "wb") as fh:
            np.save(fh, deleted)
        os.replace(tmp, self.directory / name / file)

    _deletes_mem: dict  # in-memory indexes keep delete masks here

    def _empty_manifest(self) -> dict:
        return {"format": FORMAT, "tokenizer": self.tokenizer_name, "k1": self.k1, "b": self.b, "generation": 0,
                "next_segment": 1, "segments": [], "chroma_seq": None, "pending": []}

    def _read_manifest(self) -> dict | None:
        path = self.directory / MANIFEST
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            manifest = json.loads(text)
            if manifest.get("format") != FORMAT or not isinstance(manifest.get("segments"), list):
                raise ValueError(f"format {manifest.get('format')!r}")
        except (ValueError, AttributeError) as exc:
            raise ValueError(f"{path}: not a rag-rerank BM25 manifest ({exc}); move the folder away and the "
                             "store rebuilds it from the collection") from None
        if manifest["tokenizer"] != self.tokenizer_name:
            raise ValueError(f"{self.directory}: this BM25 index was built with tokenizer {manifest['tokenizer']!r}, "
                             f"not {self.tokenizer_name!r}; open it with bm25_tokenizer={manifest['tokenizer']!r}")
        return manifest

    def _install(self, manifest: dict, check: bool = True) -> None:
        if self.directory is None and not hasattr(self, "_deletes_mem"):
            self._deletes_mem = {}
        segments, deleted = [], []
        for e in manifest["segments"]:
            seg = self._segments.get(e["name"])
            if seg is None:
                seg = Segment.open(self.directory / e["name"])
                self._segments[e["name"]] = seg
            segments.append(seg)
            if e["deletes"] is None:
                deleted.append(None)
            elif self.directory is None:
                deleted.append(self._deletes_mem[(e["name"], e["deletes"])])
            else:
                deleted.append(np.load(self.directory / e["name"] / e["deletes"], allow_pickle=False))
        live = {e["name"] for e in manifest["segments"]}
        for name in [n for n in self._segments if n not in live]:
            del self._segments[name]
        self._snapshot = Snapshot(manifest, segments, deleted)

    def _write_manifest(self, manifest: dict) -> None:
        tmp = self.directory / f"{MANIFEST}.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(manifest, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, self.directory / MANIFEST)

    def _publish(self, manifest: dict) -> None:
        if self.directory is None:
            self._install(manifest)
            return
        self._write_manifest(manifest)
        self.refresh()

    def _remove_unreferenced(self) -> None:
        """Delete segment folders and delete files no manifest names any more, and temporary files of
        writers that are gone (a killed commit's leftovers). Under the write lock."""
        if self.directory is None:
            live = {(e["name"], e["deletes"]) for e in self._snapshot.manifest["segments"]}
            self._deletes_mem = {k: v for k, v in self._deletes_mem.items() if k in live}
            return
        manifest = self._snapshot.manifest
        named = {e["name"]: e["deletes"] for e in manifest["segments"]}
        for entry in self.directory.iterdir():
            if entry.name.startswith("seg-") and entry.is_dir():
                if entry.name not in named:
                    shutil.rmtree(entry, ignore_errors=True)
                    continue
                for f in entry.glob("del-*"):
                    if f.name != named[entry.name]:
                        f.unlink(missing_ok=True)
            elif entry.name.startswith(("tmp-", f"{MANIFEST}.tmp-")):
                pid = entry.name.split("-")[1]
                if pid.isdigit() and not _alive(int(pid)):
                    shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)

    def cleanup(self) -> None:
        with self._committing():
            self._remove_unreferenced()


def _merge_arrays(parts: list[tuple[Segment, np.ndarray, np.ndarray]], ids: list[str]) -> dict[str, np.ndarray]:
    """The live rows of several segments as one segment's arrays, postings re-sorted by (term, row)."""
    keys, rows, tfs, lengths, hashes = [], [], [], [], []
    for seg, live, rowmap in parts:
        a = seg.arrays
        counts = np.diff(np.asarray(a["indptr"]))
        k = np.repeat(np.asarray(a["terms"]), counts)
        d = np.asarray(a["docs"])
        keep = live[d]
        keys.append(k[keep])
        rows.append(rowmap[d[keep]])
        tfs.append(np.asarray(a["tfs"])[keep])
        lengths.append(np.asarray(a["lengths"])[live])
        hashes.append(np.asarray(a["texthash"])[live])
    keys_a, rows_a, tfs_a = np.concatenate(keys), np.concatenate(rows), np.concatenate(tfs)
    order = np.lexsort((rows_a, keys_a))
    keys_a, rows_a, tfs_a = keys_a[order], rows_a[order], tfs_a[order]
    new_term = np.ones(len(keys_a), bool)
    new_term[1:] = keys_a[1:] != keys_a[:-1]
    starts = np.flatnonzero(new_term)
    arrays = {"terms": keys_a[starts], "indptr": np.append(starts, len(keys_a)).astype(np.int64),
              "docs": rows_a.astype(np.int32), "tfs": tfs_a.astype(np.uint16),
              "lengths": np.concatenate(lengths).astype(np.uint32) if lengths else np.zeros(0, np.uint32)}
    base = prepare(ids, tokens=[[]] * len(ids))  # the id arrays
    for name in ("idoff", "ids.bin", "idkeys", "idrows"):
        arrays[name] = base.arrays[name]
    arrays["texthash"] = np.concatenate(hashes).astype(np.uint64) if hashes else np.zeros(0, np.uint64)
    return arrays


def migrate_json(json_path: Path, index: LexicalIndex) -> int:
    """Move a version-1 JSON index (every document's tokens) into ``index``: its tokens are reused, not
    recomputed; texts are unknown (a sync compares ids only for these rows). The JSON file is kept,
    renamed ``*.json.migrated``. Returns the number of documents moved."""
    from .lexical import KoreanBM25

    old = KoreanBM25.load(json_path)
    ids = list(old._tokens)
    for start in range(0, len(ids), 50_000):
        chunk = ids[start : start + 50_000]
        index.commit(prepare(chunk, tokens=[old._tokens[i] for i in chunk]))
    os.replace(json_path, json_path.with_name(json_path.name + ".migrated"))
    return len(ids)


class _FileLock:
    """An exclusive ``flock`` on a file, held by the process: taken by a first user, released by the last
    (one descriptor and a count - two descriptors of one process would block each other), so a merge
    thread may commit while this process's writer holds the lock for its whole ingest."""

    def __init__(self, path: Path) -> None:
        self.path, self._fh, self._depth = path, None, 0
        self._mutex = threading.Lock()

    def __enter__(self):
        with self._mutex:
            if self._depth == 0:
                self._fh = self._open()
                _lock(self._fh, blocking=True)
            self._depth += 1
        return self

    def __exit__(self, *exc):
        with self._mutex:
            self._depth -= 1
            if self._depth == 0:
                self._fh.close()  # closing the descriptor releases the lock
                self._fh = None

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it - no other process, and no one in this one; False otherwise."""
        if not self._mutex.acquire(blocking=False):
            return False
        try:
            if self._depth > 0:
                return False
            try:
                fh = self._open()
            except OSError:  # a read-only mount (a serve replica): never a writer
                return False
            try:
                _lock(fh, blocking=False)
            except OSError:
                fh.close()
                return False
            self._fh, self._depth = fh, 1
            return True
        finally:
            self._mutex.release()

    def _open(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return open(self.path, "a+")


try:
    import fcntl as _fcntl
except ImportError:  # Windows
    _fcntl = None


def _lock(fh, blocking: bool) -> None:
    """An exclusive lock on the open file ``fh``, released when it is closed: ``flock`` on POSIX,
    ``msvcrt.locking`` of its first byte on Windows (polled while ``blocking``: msvcrt gives up after
    ten seconds of its own). OSError when ``blocking`` is False and another holds it."""
    if _fcntl is not None:
        _fcntl.flock(fh.fileno(), _fcntl.LOCK_EX | (0 if blocking else _fcntl.LOCK_NB))
        return
    import msvcrt

    fh.seek(0)
    while True:
        try:
            msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
            return
        except OSError:
            if not blocking:
                raise
            time.sleep(0.05)


def _stamp(path: Path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _copy(manifest: dict) -> dict:
    return json.loads(json.dumps(manifest))
