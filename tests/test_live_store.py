"""Issue 34's invariants at small scale: the segment BM25 index scores as one rebuilt index, writes
cost their batch, Kiwi runs once per document, other processes' writes are seen, readers do not wait
for writers, old JSON stores migrate."""
from __future__ import annotations

import collections
import json
import os
import random
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from rag_rerank import lexical
from rag_rerank.retrieval.lexical import KiwiTokenizer, KoreanBM25
from rag_rerank.retrieval.lexical_index import LexicalIndex, prepare
from rag_rerank.retrieval.store import ChromaStore, lexical_dir, lexical_file

WORDS = [f"w{i}" for i in range(120)]


def _doc(rng) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 25)))


@pytest.mark.parametrize("on_disk", [False, True])
def test_segments_score_as_one_rebuilt_index(tmp_path, on_disk):
    """Many segments, deletes, replaced ids and merges: the same ids, order and scores as KoreanBM25
    rebuilt over the live documents (document frequency counts live rows only)."""
    rng = random.Random(0)
    ref, index = KoreanBM25("whitespace"), LexicalIndex(tmp_path / "ix" if on_disk else None, "whitespace")
    texts = {}
    for step in range(60):
        batch = {f"d{step}-{i}": _doc(rng) for i in range(rng.randint(1, 30))}
        texts.update(batch)
        ref.add(list(batch), list(batch.values()))
        index.add(list(batch), list(batch.values()))
        if step % 4 == 3:
            gone = rng.sample(sorted(ref.ids), 5)
            ref.delete(gone)
            index.delete(gone)
            changed = rng.sample(sorted(ref.ids), 3)
            new = [_doc(rng) for _ in changed]
            ref.delete(changed)
            ref.add(changed, new)
            index.add(changed, new)  # an id added again replaces its row
    index.wait_merges()
    assert index.ids == ref.ids and len(index) == len(ref)
    assert len(index.snapshot().segments) < 30  # merged as it grew
    for _ in range(100):
        query = " ".join(rng.choice(WORDS) for _ in range(3))
        want, got = ref.search(query, 15), index.search(query, 15)
        assert [i for i, _ in got] == [i for i, _ in want] and np.allclose([s for _, s in got], [s for _, s in want])
    allowed = set(rng.sample(sorted(ref.ids), 40))
    assert index.search("w1 w2 w3", 10, allowed) == ref.search("w1 w2 w3", 10, allowed)
    index.optimize()
    assert len(index.snapshot().segments) == 1
    assert [i for i, _ in index.search("w5 w7", 20)] == [i for i, _ in ref.search("w5 w7", 20)]
    if on_disk:
        again = LexicalIndex(tmp_path / "ix", "whitespace")
        assert again.ids == ref.ids and again.search("w5 w7", 20) == index.search("w5 w7", 20)
        assert sorted(p.name for p in (tmp_path / "ix").iterdir() if p.is_dir()) == [again.snapshot().segments[0].name]


def _files(folder):
    return {p: (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*") if p.is_file()}


def test_write_cost_is_the_batch_not_the_corpus(tmp_path):
    """Each commit writes a segment of its batch (plus the small manifest); what was written before is
    never rewritten except by merges, which rewrite each row about once per size class."""
    rng = random.Random(1)
    folder = tmp_path / "ix"
    index = LexicalIndex(folder, "whitespace", background_merge=False)
    written, per_commit = 0, []
    for step in range(120):
        before = _files(folder)
        ids = [f"d{step}-{i}" for i in range(25)]
        index.add(ids, [_doc(rng) for _ in ids])
        after = _files(folder)
        new = sum(after[p][2] for p in after if before.get(p) != after[p] and p.name != "manifest.json")
        merged = len(index.snapshot().segments) < len([n for n in before if n.name == "terms.npy"]) + 1
        written += new
        if not merged:
            per_commit.append(new)
    assert max(per_commit[-20:]) <= 1.5 * max(per_commit[:5])  # flat: commit 120 costs what commit 1 did
    assert written <= 4 * sum(s for _, _, s in _files(folder).values())  # merges: a few rewrites per row
    assert (folder / "manifest.json").stat().st_size < 4000  # the manifest names segments, not documents


def test_a_merge_keeps_deletes_that_land_while_it_runs(tmp_path, monkeypatch):
    from rag_rerank import lexical_index

    index = LexicalIndex(tmp_path / "ix", "whitespace", background_merge=False)
    for s in range(3):
        index.add([f"s{s}-{i}" for i in range(5)], [f"공통 w{s} w{i}" for i in range(5)])
    real = lexical_index._merge_arrays

    def merge_while_deleting(parts, ids):
        out = real(parts, ids)
        index.delete(["s1-2", "s0-0"])  # another writer's delete, after the merge read its segments
        return out

    monkeypatch.setattr(lexical_index, "_merge_arrays", merge_while_deleting)
    index.optimize()
    assert len(index) == 13 and {"s1-2", "s0-0"}.isdisjoint(index.ids)
    assert not {"s1-2", "s0-0"} & {i for i, _ in index.search("공통", 20)}


def test_a_tokenizer_mismatch_is_named(tmp_path):
    LexicalIndex(tmp_path / "ix", "whitespace").add(["a"], ["x y"])
    with pytest.raises(ValueError, match="built with tokenizer 'whitespace', not 'kiwi'"):
        LexicalIndex(tmp_path / "ix", "kiwi")
    with pytest.raises(ValueError, match="appears twice in one batch"):
        prepare(["a", "a"], ["x", "y"], lexical.WhitespaceTokenizer())


@pytest.fixture
def kiwi_calls(monkeypatch):
    """Every text Kiwi tokenises, counted."""
    counts = collections.Counter()
    real = lexical._tokenize_kiwi

    def counting(texts):
        counts.update(texts)
        return real(texts)

    monkeypatch.setattr(lexical, "_tokenize_kiwi", counting)
    return counts


PASSAGES = [f"{i}번째 문서는 {city}의 {thing}에 관한 이야기이다." for i, (city, thing) in
            enumerate((c, t) for c in ("서울", "부산", "대구", "광주", "대전") for t in ("날씨", "음식", "역사", "교통"))]


def test_kiwi_runs_once_per_document(tmp_path, tiny_encoder, kiwi_calls):
    store = ChromaStore(tmp_path / "db", "once", encoder=str(tiny_encoder))
    store._max_batch = 6  # several batches through the pipeline
    store.add(PASSAGES)
    store.add(PASSAGES)  # already stored: skipped
    assert store.search_lexical("부산 음식", 3)[0].text.startswith("5번째")
    store.close()
    again = ChromaStore(tmp_path / "db", "once", encoder=str(tiny_encoder))
    assert again.search_lexical("대전 교통", 1)[0].text == PASSAGES[19]
    # server mode over the same folder: opens the shared index, tokenises nothing
    import chromadb

    served = ChromaStore(None, "once", client=chromadb.PersistentClient(str(tmp_path / "db")), encoder=str(tiny_encoder),
                         lexical_path=lexical_dir(tmp_path / "db", "once"))
    assert served.search_lexical("광주 역사", 1)[0].text == PASSAGES[14]
    assert max(kiwi_calls[p] for p in PASSAGES) == 1 and set(PASSAGES) <= set(kiwi_calls)
    stats = store.last_ingest
    assert stats["documents"] == 0 and set(stats) >= {"tokenize_s", "embed_s", "chroma_s", "bm25_s", "wall_s"}


WRITER = textwrap.dedent("""
    import sys, time
    path, encoder, what = sys.argv[1:4]
    if what != "upsert":
        from rag_rerank.retrieval.store import ChromaStore
    if what == "add":
        ChromaStore(path, "live", encoder=encoder).add(["제주도의 감귤은 겨울에 달다."], ids=["jeju"])
    elif what == "upsert":  # another Chroma client (LangChain, LlamaIndex) changes a text in place
        import chromadb
        col = chromadb.PersistentClient(path).get_collection("live")
        old = col.get(ids=["seoul"], include=["embeddings"])["embeddings"][0]
        col.upsert(ids=["seoul"], documents=["울릉도의 오징어는 가을에 잡힌다."], embeddings=[list(old)])
    elif what == "raw-add":  # another Chroma client in another process adds a document (no rag-rerank marker)
        import chromadb
        col = chromadb.PersistentClient(path).get_collection("live")
        old = col.get(ids=["seoul"], include=["embeddings"])["embeddings"][0]
        col.add(ids=["raw"], documents=["광주의 무등산은 가을 단풍이 곱다."], embeddings=[[-x for x in old]])
    elif what == "hold":  # a writer in the middle of a long ingest
        store = ChromaStore(path, "live", encoder=encoder)
        with store._writing():
            print("holding", flush=True)
            time.sleep(120)
""")


def _writer(tmp_path, tiny_encoder, what, **kw):
    script = tmp_path / "writer.py"
    script.write_text(WRITER, encoding="utf-8")
    args = [sys.executable, str(script), str(tmp_path / "db"), str(tiny_encoder), what]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    if kw.get("background"):
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _within(seconds, found):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if found():
            return True
        time.sleep(0.05)
    return False


def test_another_process_writes_are_seen(tmp_path, tiny_encoder):
    """A store held open (a serve process) sees another process's add in BM25 at its next search and in
    dense search after one background client reopen (bound: 30 s here; milliseconds at this size), and
    another Chroma client's in-place text change in BM25 - new words match, old ones no longer do."""
    store = ChromaStore(tmp_path / "db", "live", encoder=str(tiny_encoder))
    store.add(["서울의 지하철은 복잡하다.", "부산의 바다는 넓다."], ids=["seoul", "busan"])
    assert store.search("지하철", 2) and store.search_lexical("바다", 1)[0].id == "busan"  # caches warm
    _writer(tmp_path, tiny_encoder, "add")
    assert store.search_lexical("제주도 감귤", 1)[0].id == "jeju"  # the very next search
    assert _within(30, lambda: "jeju" in {h.id for h in store.search("제주도의 감귤은 겨울에 달다.", 3)})
    _writer(tmp_path, tiny_encoder, "upsert")
    assert _within(30, lambda: [h.id for h in store.search_lexical("울릉도 오징어", 2)] == ["seoul"])
    assert "seoul" not in {h.id for h in store.search_lexical("지하철", 3)}
    store.refresh()  # the blocking form
    assert store.get(["seoul"])[0].text.startswith("울릉도") and len(store.lexical) == store.count() == 3


def test_stores_of_one_process_share_one_view_and_do_not_reopen(tmp_path, tiny_encoder):
    """Two stores of one process on one directory see each other's writes through the Chroma system
    they share: no client reopen (a reopen per write made long-lived processes pile up Chroma systems),
    while another process's write is noted beside the store and does make the reader reopen."""
    a = ChromaStore(tmp_path / "db", "live", encoder=str(tiny_encoder))
    b = ChromaStore(tmp_path / "db", "live", encoder=str(tiny_encoder), create=False)
    client = b.client
    a.add(["서울의 지하철은 복잡하다."], ids=["seoul"])
    assert [h.id for h in b.search("서울의 지하철은 복잡하다.", 1)] == ["seoul"]
    assert b.search_lexical("지하철", 1)[0].id == "seoul"
    b.refresh()
    assert b.client is client and not b._other_process_wrote()
    mark = json.loads((tmp_path / "db" / ".rag_rerank" / "writes-live.json").read_text(encoding="utf-8"))
    assert mark["pid"] == os.getpid()
    _writer(tmp_path, tiny_encoder, "add")
    assert b._other_process_wrote()
    b.refresh()
    assert b.client is not client and "jeju" in {h.id for h in b.search("제주도의 감귤은 겨울에 달다.", 3)}
    assert not b._other_process_wrote()


def test_another_chroma_clients_add_is_seen_by_dense_search(tmp_path, tiny_encoder):
    """A document another process adds through chromadb itself (as LangChain or LlamaIndex would) leaves
    no rag-rerank marker: the store sees Chroma's change count move, finds its own view lacks the new
    vectors, and reopens - dense search finds it, as BM25 does."""
    store = ChromaStore(tmp_path / "db", "live", encoder=str(tiny_encoder))
    store.add(["서울의 지하철은 복잡하다.", "부산의 바다는 넓다."], ids=["seoul", "busan"])
    vector = store.collection.get(ids=["seoul"], include=["embeddings"])["embeddings"][0]
    assert store.search("지하철", 2)
    _writer(tmp_path, tiny_encoder, "raw-add")

    def dense_finds():
        hits = store.search_vector([-float(x) for x in vector], 1)
        return [h.id for h in hits] == ["raw"]

    assert _within(30, dense_finds)
    assert _within(30, lambda: store.search_lexical("무등산 단풍", 1)[:1] and store.search_lexical("무등산 단풍", 1)[0].id == "raw")


def test_readers_never_wait_for_a_writer(tmp_path, tiny_encoder):
    store = ChromaStore(tmp_path / "db", "live", encoder=str(tiny_encoder))
    store.add(["서울의 지하철은 복잡하다."], ids=["seoul"])
    store.close()
    holder = _writer(tmp_path, tiny_encoder, "hold", background=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        start = time.monotonic()
        reader = ChromaStore(tmp_path / "db", "live", encoder=str(tiny_encoder), create=False)
        assert reader.search_lexical("지하철", 1)[0].id == "seoul" and reader.search("지하철", 1)
        assert time.monotonic() - start < 60 and holder.poll() is None  # answered while the writer holds the lock
    finally:
        holder.kill()
        holder.wait()


def test_an_old_json_store_migrates_without_kiwi(tmp_path, tiny_encoder, kiwi_calls):
    """A store written before the segment index (BM25 = bm25/<name>.json of every document's tokens)
    opens: the tokens move into a segment (Kiwi not run on them), the JSON is kept renamed, search works."""
    plain = ChromaStore(tmp_path / "db", "old", encoder=str(tiny_encoder), lexical=False)
    ids = plain.add(PASSAGES)
    plain.close()
    tokens = KiwiTokenizer()(PASSAGES)
    kiwi_calls.clear()
    old = lexical_file(tmp_path / "db", "old")
    old.parent.mkdir(parents=True, exist_ok=True)
    old.write_text(json.dumps({"version": 1, "tokenizer": "kiwi", "k1": 1.2, "b": 0.75,
                               "tokens": dict(zip(ids, tokens))}, ensure_ascii=False), encoding="utf-8")
    store = ChromaStore(tmp_path / "db", "old", encoder=str(tiny_encoder))
    assert not set(PASSAGES) & set(kiwi_calls)  # no passage tokenised again
    assert not old.exists() and old.with_name(old.name + ".migrated").exists()
    assert store.lexical.ids == set(ids) and store.search_lexical("대구 역사", 1)[0].text == PASSAGES[10]
    fresh = ChromaStore(tmp_path / "db2", "old", encoder=str(tiny_encoder))
    fresh.add(PASSAGES)
    for q in ("서울 날씨", "광주 음식 이야기", "교통"):
        assert [(h.text, round(h.score, 9)) for h in store.search_lexical(q, 5)] == \
            [(h.text, round(h.score, 9)) for h in fresh.search_lexical(q, 5)]


def test_the_store_lock_on_windows_takes_turns(tmp_path, monkeypatch):
    """Without fcntl (Windows) the lock is msvcrt's byte lock: a second holder is refused while the first
    holds it, and waits its turn when it blocks. msvcrt is stood in for by a lock of the same semantics."""
    import fcntl
    import threading
    import types

    from rag_rerank import lexical_index

    fake = types.SimpleNamespace(LK_NBLCK=2)
    fake.locking = lambda fd, mode, n: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    monkeypatch.setitem(sys.modules, "msvcrt", fake)
    monkeypatch.setattr(lexical_index, "_fcntl", None)
    first, second = lexical_index._FileLock(tmp_path / "w.lock"), lexical_index._FileLock(tmp_path / "w.lock")
    with first:
        assert not second.try_acquire()
        got = threading.Event()
        waiter = threading.Thread(target=lambda: (second.__enter__(), got.set()))
        waiter.start()
        assert not got.wait(0.3)  # blocked while the first holds it
    assert got.wait(10)
    waiter.join()
    second.__exit__(None, None, None)
    assert first.try_acquire()
