"""ChromaStore (embedded and server), Kiwi BM25, hybrid fusion and TwoStageRetriever."""
from __future__ import annotations

import random
import uuid

import pytest

from rag_rerank.retrieval.encoder import BiEncoder
from rag_rerank.retrieval.lexical import KoreanBM25
from rag_rerank.retrieval.first_stage import hybrid
from rag_rerank.retrieval.fusion import Fusion
from rag_rerank.retrieval.pipeline import TwoStageRetriever
from rag_rerank.retrieval.store import ChromaStore, collection_name, content_id
from rag_rerank.types import Document, Hit

N_QUERIES = 120


def top5_rate(search, pairs) -> float:
    return sum(any(h.text == prem for h in search(hyp)) for hyp, prem in pairs) / len(pairs)


@pytest.fixture(scope="module", params=["embedded", pytest.param("http", marks=pytest.mark.server)])
def backend(request, tmp_path_factory, encoder):
    """A factory opening a store on the embedded client or on a real Chroma server."""
    if request.param == "embedded":
        root = tmp_path_factory.mktemp("store")
        return lambda name="kornli", **kw: ChromaStore(root, name, encoder=encoder, **kw)
    host, port = request.getfixturevalue("chroma_server")
    lex = tmp_path_factory.mktemp("lex")
    suffix = uuid.uuid4().hex[:8]  # the server outlives the module: fresh collections per run
    return lambda name="kornli", **kw: ChromaStore.connect(
        host, port, f"{name}-{suffix}", encoder=encoder, lexical_path=lex / name, **kw)


@pytest.fixture(scope="module")
def premises_store(backend, kornli):
    _, premises = kornli["test"]
    store = backend()
    store.add(premises)
    return store


@pytest.fixture(scope="module")
def queries(kornli):
    pairs, _ = kornli["test"]
    return random.Random(0).sample(pairs, N_QUERIES)


# ------------------------------------------------------------------ ingest
def test_ingest_twice_is_idempotent(premises_store, kornli):
    _, premises = kornli["test"]
    assert premises_store.count() == len(set(premises))
    premises_store.add(premises)
    assert premises_store.count() == len(set(premises))
    assert len(premises_store.lexical) == len(set(premises))


def test_dense_search_finds_the_premise(premises_store, queries):
    rate = top5_rate(lambda q: premises_store.search(q, 5), queries)
    print(f"dense top-5 rate on {len(queries)} KorNLI test hypotheses: {rate:.3f}")
    assert rate >= 0.75


def test_search_hits_and_scores(premises_store, queries):
    hits = premises_store.search(queries[0][0], 5)
    assert [h.first_stage_rank for h in hits] == [1, 2, 3, 4, 5]
    assert all(0.0 <= h.score <= 1.0 and h.score == h.first_stage_score for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(h.rerank_score is None for h in hits)


def test_kiwi_bm25_beats_whitespace_and_hybrid_holds(premises_store, queries, kornli):
    _, premises = kornli["test"]
    ws = KoreanBM25("whitespace")
    ws.add(premises, premises)
    rates = {
        "whitespace": sum(any(i == p for i, _ in ws.search(q, 5)) for q, p in queries) / len(queries),
        "kiwi": top5_rate(lambda q: premises_store.search_lexical(q, 5), queries),
    }
    for mode in ("dense", "hybrid"):  # all queries at once: their embeddings share batches
        found = TwoStageRetriever(premises_store, mode=mode).candidates_many([q for q, _ in queries], 5)
        rates[mode] = sum(any(h.text == p for h in hits) for hits, (_, p) in zip(found, queries)) / len(queries)
    print("top-5 rates:", {k: round(v, 3) for k, v in rates.items()})
    assert rates["kiwi"] > rates["whitespace"] + 0.1
    assert rates["hybrid"] >= min(rates["kiwi"], rates["dense"])


def test_where_filter(backend):
    store = backend("filtered")
    store.add(["서울의 지하철 노선", "부산의 지하철 노선", "서울의 버스 노선"],
              metadatas=[{"city": "seoul"}, {"city": "busan"}, {"city": "seoul"}])
    for hits in (store.search("지하철", 3, where={"city": "busan"}),
                 store.search_lexical("지하철", 3, where={"city": "busan"})):
        assert [h.text for h in hits] == ["부산의 지하철 노선"]


def test_delete_keeps_bm25_in_step(backend):
    store = backend("deleting")
    ids = store.add(["김치찌개 끓이는 법", "된장찌개 끓이는 법", "비빔밥 만드는 법"])
    assert [h.text for h in store.search_lexical("김치찌개", 3)][0] == "김치찌개 끓이는 법"
    store.delete([ids[0]])
    assert store.count() == 2 and ids[0] not in store.lexical.ids
    assert "김치찌개 끓이는 법" not in [h.text for h in store.search_lexical("김치찌개 끓이는 법", 3)]
    store.delete(where={"missing": "nothing"})
    assert store.count() == 2
    with pytest.raises(ValueError, match="ids or a where"):
        store.delete()


def test_writes_go_in_max_batch_size_chunks(backend, monkeypatch):
    store = backend("batched")
    store._max_batch = 7
    calls = []
    real = store.collection.add
    monkeypatch.setattr(store.collection, "add", lambda **kw: (calls.append(len(kw["ids"])), real(**kw)))
    store.add([f"{i}번째 문서" for i in range(20)])
    assert calls == [7, 7, 6] and store.count() == 20


def test_max_batch_size_comes_from_the_client(premises_store):
    assert premises_store._max_batch == premises_store.client.get_max_batch_size() > 0


# --------------------------------------------------------------- metadata
def test_metadata_none_values_dropped_and_empty_dicts_never_sent(backend):
    store = backend("meta")
    ids = store.add(["문서 하나", "문서 둘", "문서 셋"], metadatas=[{"a": None}, {}, {"a": 1, "b": None}])
    docs = store.get(ids)
    assert [d.metadata for d in docs] == [{}, {}, {"a": 1}]


@pytest.mark.parametrize("bad", [{"tags": ["a", "b"]}, {"nested": {"x": 1}}])
def test_nested_metadata_rejected(backend, bad):
    store = backend("meta")
    with pytest.raises(ValueError, match=r"metadata\[0\]"):
        store.add(["문서"], metadatas=[bad])


@pytest.mark.parametrize("key", ["", "$and", "#tag", "chroma:document"])
def test_metadata_keys_chroma_refuses_are_named(backend, key):
    """Chroma refused these keys with "Invalid metadata at index 0", naming neither the key nor the rule."""
    store = backend("meta")
    with pytest.raises(ValueError, match=r"metadata\[1\] key .*Chroma refuses"):
        store.add(["문서", "문서 둘"], metadatas=[{"ok": 1}, {key: 1}])


def test_numpy_metadata_values_are_stored_as_python_values(backend):
    """A pandas row's numpy scalars were refused ("is a int64; Chroma stores only str, int, float and bool")."""
    import numpy as np

    store = backend("meta")
    ids = store.add(["넘파이 문서"], metadatas=[{"n": np.int64(3), "x": np.float32(0.5), "b": np.bool_(True),
                                               "s": np.str_("가")}])
    assert store.get(ids)[0].metadata == {"n": 3, "x": 0.5, "b": True, "s": "가"}
    assert [h.text for h in store.search("넘파이", 1, where={"n": 3})] == ["넘파이 문서"]


def test_long_documents_store(backend):
    store = backend("long")
    long_doc = ("한국어 문서의 아주 긴 본문입니다. " * 600)[:10_000]
    assert len(long_doc) == 10_000
    (doc_id,) = store.add([long_doc])
    assert store.get([doc_id])[0].text == long_doc
    assert store.search("긴 본문", 1)[0].id == doc_id


def test_korean_collection_names(backend):
    store = backend("한국어 문서 모음")
    assert store.collection_name.isascii() and store.collection_name.startswith("c-")
    store.add(["안녕하세요"])
    assert store.collection.metadata["rag_rerank_name"].startswith("한국어 문서 모음")
    assert store.count() == 1


def test_collection_name_mapping_is_deterministic_and_valid():
    import re

    for name in ["한국어", "뉴스 2024", "a", "ok_name", "x" * 600, "..", "법률/판례"]:
        mapped = collection_name(name)
        assert mapped == collection_name(name)
        assert re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]", mapped), (name, mapped)
    assert collection_name("ok_name") == "ok_name"
    assert collection_name("한국어") != collection_name("일본어")


def test_ids_and_documents(backend):
    store = backend("ids")
    ids = store.add([Document("첫 문서", {"n": 1}, id="doc-1"), {"text": "둘째 문서", "metadata": {"n": 2}}, "셋째"])
    assert ids[0] == "doc-1" and ids[1] == content_id("둘째 문서", {"n": 2})
    assert [d.text for d in store.get(ids)] == ["첫 문서", "둘째 문서", "셋째"]
    with pytest.raises(TypeError, match=r"documents\[0\]"):
        store.add([42])
    with pytest.raises(TypeError, match="single string"):
        store.add("문서")
    with pytest.raises(TypeError, match=r"documents\[1\] has key\(s\) 'title' besides"):  # was dropped in silence
        store.add(["가", {"text": "나", "title": "제목"}])


def test_index_file_rows_keep_their_other_fields_as_metadata(tmp_path):
    """A JSONL row {"text", "title", "page"} (a common corpus shape) lost every field but text, metadata and id in
    silence; a nested value is named by file and line, not by its position in a write batch."""
    import json

    from rag_rerank.retrieval.store import iter_documents

    path = tmp_path / "rows.jsonl"
    rows = [{"text": "서울은 수도이다.", "title": "서울", "page": 3},
            {"text": "부산은 항구이다.", "title": "부산", "metadata": {"lang": "ko"}, "id": "b"}]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    docs = list(iter_documents(path))
    assert [d.metadata for d in docs] == [{"source": str(path.resolve()), "title": "서울", "page": 3},
                                          {"source": str(path.resolve()), "title": "부산", "lang": "ko"}]
    assert docs[1].id == "b"
    path.write_text(json.dumps({"text": "a"}) + "\n" + json.dumps({"text": "b", "tags": ["x"]}), encoding="utf-8")
    with pytest.raises(ValueError, match=r"rows.jsonl:2: metadata\['tags'\] is a list"):
        list(iter_documents(path))
    path.write_text(json.dumps({"text": "a", "page": 1, "metadata": {"page": 2}}), encoding="utf-8")
    with pytest.raises(ValueError, match=r"rows.jsonl:1: 'page' is both a field of the row and a key"):
        list(iter_documents(path))


# --------------------------------------------------------------- bad input
@pytest.mark.parametrize("query", ["", "  ", None])
def test_empty_query(premises_store, query):
    with pytest.raises(ValueError, match="query"):
        premises_store.search(query, 5)
    with pytest.raises(ValueError, match="query"):
        premises_store.search_lexical(query, 5)


@pytest.mark.parametrize("k", [0, -3])
def test_bad_k(premises_store, k):
    with pytest.raises(ValueError, match="k must be a positive integer"):
        premises_store.search("서울", k)
    with pytest.raises(ValueError):
        TwoStageRetriever(premises_store, candidate_k=k)


def test_search_vector_refuses_a_vector_it_cannot_answer(premises_store):
    """A NaN query vector made Chroma return every document at distance NaN, scored 0 in stored order (a silent
    wrong answer); a wrong length surfaced as chromadb's InvalidArgumentError. Both name ``vector`` now."""
    dim = premises_store.encoder.dimension
    good = premises_store.encoder.embed_query("서울")
    assert [h.id for h in premises_store.search_vector(good, 3)] == [h.id for h in premises_store.search("서울", 3)]
    for bad, match in (([0.1] * (dim + 1), f"{dim + 1} values.*{dim}-d"), ([0.0] * (dim - 1) + [float("nan")], "NaN or inf at index"),
                       ([[0.1] * dim], "1-d"), ("abc", "sequence of numbers|values")):
        with pytest.raises(ValueError, match=match):
            premises_store.search_vector(bad, 3)


def test_get_checks_limit_and_offset(premises_store):
    """limit=-1 surfaced as an OverflowError and 1.5 as a TypeError from Chroma's binding."""
    assert len(premises_store.get(limit=2, offset=1)) == 2 and premises_store.get(limit=0) == []
    for bad in (dict(limit=-1), dict(limit=1.5), dict(offset=-2), dict(offset="1")):
        with pytest.raises(ValueError, match=next(iter(bad))):
            premises_store.get(**bad)


@pytest.mark.parametrize("backend", ["torch", "openvino"])
def test_bi_encoder_refuses_a_batch_size_it_cannot_use(tiny_encoder, backend):
    """batch_size 0 failed inside sentence-transformers / the CPU backend's range(); -1 ran on OpenVINO."""
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="batch_size"):
            BiEncoder(str(tiny_encoder), backend=backend, batch_size=bad)


def test_unknown_mode(premises_store):
    with pytest.raises(ValueError, match="unknown mode"):
        TwoStageRetriever(premises_store, mode="sparse")


# ---------------------------------------------------------------- restart
def test_restart_returns_same_results(tmp_path, encoder, kornli):
    _, premises = kornli["test"]
    store = ChromaStore(tmp_path / "db", "restart", encoder=encoder)
    store.add(premises[:300])
    query = "그는 학교에 갔다"
    before = [(h.id, round(h.score, 6)) for h in store.search(query, 5)]
    before_lex = [(h.id, h.score) for h in store.search_lexical(query, 5)]
    store.close()
    del store
    again = ChromaStore(tmp_path / "db", "restart", encoder=encoder)
    assert again.count() == len(set(premises[:300]))
    assert [(h.id, round(h.score, 6)) for h in again.search(query, 5)] == before
    assert [(h.id, h.score) for h in again.search_lexical(query, 5)] == before_lex
    assert (tmp_path / "db" / "bm25" / "restart" / "manifest.json").exists()


def test_bm25_catches_up_with_writes_it_did_not_see(tmp_path, encoder):
    store = ChromaStore(tmp_path / "db", "sync", encoder=encoder)
    store.add(["서울의 날씨는 맑다"])
    store.close()
    plain = ChromaStore(tmp_path / "db", "sync", encoder=encoder, lexical=False)
    plain.add(["부산의 날씨는 흐리다"])
    plain.close()
    reopened = ChromaStore(tmp_path / "db", "sync", encoder=encoder)
    assert [h.text for h in reopened.search_lexical("부산", 2)] == ["부산의 날씨는 흐리다"]


def test_encoder_mismatch_is_refused(tmp_path, encoder):
    from rag_rerank.retrieval.encoder import BiEncoder

    ChromaStore(tmp_path / "db", "dims", encoder=encoder).add(["문서"])

    class EightDims(BiEncoder):
        dimension = 8

        def __init__(self):
            self.model_name = "other"

    with pytest.raises(ValueError, match="384-d vectors"):
        ChromaStore(tmp_path / "db", "dims", encoder=EightDims())


# ------------------------------------------------------------------- fusion
def test_hybrid_fuses_dense_and_bm25_by_id():
    a = [Hit("x", "x", {}, 0.9, 0.9, 1), Hit("y", "y", {}, 0.8, 0.8, 2)]
    b = [Hit("y", "y", {}, 7.0, 7.0, 1), Hit("z", "z", {}, 5.0, 5.0, 2)]
    fused = hybrid(a, b)  # equal weights: BM25's share 0.5, k 60
    assert [h.id for h in fused] == ["y", "x", "z"] and [h.first_stage_rank for h in fused] == [1, 2, 3]
    assert fused[0].score == pytest.approx(61 * (0.5 / 62 + 0.5 / 61)) == fused[0].first_stage_score  # scaled to [0, 1]
    assert [h.id for h in hybrid(a, b, Fusion(0.0))][0] == "x"  # dense alone
    assert [h.id for h in hybrid(a, b, Fusion(1.0))] == ["y", "z", "x"]  # BM25 alone; x only orders after


# ------------------------------------------------------------------ pipeline
def test_two_stage_reranks_candidates(premises_store, tiny_ce, queries):
    from rag_rerank import Reranker

    reranker = Reranker(str(tiny_ce))
    retriever = TwoStageRetriever(premises_store, reranker, mode="hybrid", candidate_k=10, top_n=3)
    query = queries[0][0]
    candidates = retriever.candidates(query)
    hits = retriever.retrieve(query)
    assert len(hits) == 3
    expected = reranker.rerank(query, [c.text for c in candidates], top_n=3)
    assert [h.text for h in hits] == [r.text for r in expected]
    by_id = {c.id: c for c in candidates}
    for h in hits:
        assert h.rerank_score == h.score and h.first_stage_score == by_id[h.id].first_stage_score
    assert retriever.retrieve(query, rerank=False) == candidates[:3]
    # top_n above candidate_k: as many hits as asked (it returned candidate_k, silently fewer)
    many = retriever.retrieve(query, top_n=25)
    assert len(many) == 25 and len({h.id for h in many}) == 25
    assert len(retriever.retrieve(query, top_n=25, rerank=False)) == 25


def test_two_stage_async(premises_store, tiny_ce, queries):
    import asyncio

    from rag_rerank import Reranker

    retriever = TwoStageRetriever(premises_store, Reranker(str(tiny_ce)), candidate_k=8, top_n=2)

    async def many():
        return await asyncio.gather(*(retriever.aretrieve(q) for q, _ in queries[:6]))

    assert asyncio.run(many()) == [retriever.retrieve(q) for q, _ in queries[:6]]


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_candidates_many_equals_one_by_one(premises_store, queries, mode):
    retriever = TwoStageRetriever(premises_store, mode=mode, candidate_k=7)
    qs = [q for q, _ in queries[:5]]
    many, single = retriever.candidates_many(qs), [retriever.candidates(q) for q in qs]
    # batched query embeddings differ from one-by-one ones in the last float bits (padding)
    assert [[h.id for h in row] for row in many] == [[h.id for h in row] for row in single]
    for a, b in zip(many, single):
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-5)


def test_two_stage_applies_the_rerankers_saved_fusion(premises_store, tiny_ce, queries, tmp_path):
    """A model directory carrying a tuned fusion: the retriever fuses by default, 'None' turns it off."""
    import shutil

    from rag_rerank import Reranker, fusion
    from rag_rerank.models.settings import ModelSettings

    model = tmp_path / "model"
    shutil.copytree(tiny_ce, model)
    tuned = fusion.Fusion(weight=0.5, rrf_k=2, depth=6)
    ModelSettings(fusion=tuned).save(model)
    reranker = Reranker(str(model))
    fused = TwoStageRetriever(premises_store, reranker, candidate_k=10, top_n=10)
    assert fused.fusion == tuned
    plain = TwoStageRetriever(premises_store, reranker, candidate_k=10, top_n=10, fusion=None)
    query = queries[1][0]
    candidates = fused.candidates(query)
    scores = reranker.score(query, [c.text for c in candidates[:6]])
    expected = [candidates[i].text for i in tuned.order(scores, len(candidates))]
    hits = fused.retrieve(query)
    assert [h.text for h in hits] == expected
    assert all(h.rerank_score is not None for h in hits[:6]) and all(h.rerank_score is None for h in hits[6:])
    assert [h.score for h in hits[:6]] == sorted((h.score for h in hits[:6]), reverse=True)
    assert [h.text for h in plain.retrieve(query)] == [r.text for r in reranker.rerank(query, [c.text for c in candidates])]


def test_find_texts_matches_whole_texts_only(premises_store, kornli):
    _, premises = kornli["test"]
    found = premises_store.find_texts([premises[3], "이 문장은 저장되지 않았다.", premises[3][:-2]])
    assert found[0] is not None and found[0].text == premises[3] and found[0].id == content_id(premises[3], None)
    assert found[1:] == [None, None]  # a prefix of a stored text is not that text


def test_two_stage_fuses_in_the_rerankers_known_queries(premises_store, tiny_ce, kornli, tmp_path):
    """A model saved with known queries: documents answering a similar known question join the
    results (only those the store holds); known_queries=None leaves the pipeline as it was."""
    import shutil

    from rag_rerank import Reranker
    from rag_rerank.retrieval.fusion import Fusion
    from rag_rerank.retrieval.known_queries import KnownQueries

    _, premises = kornli["test"]
    target, absent = premises[7], "이 답은 저장소에 없다."
    model = tmp_path / "model"
    shutil.copytree(tiny_ce, model)
    KnownQueries([("우주선 발사 일정이 언제야", [absent, target])], Fusion(1.0, 10.0, 5)).save(model)
    reranker = Reranker(str(model))
    with_known = TwoStageRetriever(premises_store, reranker, candidate_k=10, top_n=5)
    assert with_known.known_queries is not None and len(with_known.known_queries) == 1
    without = TwoStageRetriever(premises_store, reranker, candidate_k=10, top_n=5, known_queries=None)
    query = "우주선 발사 일정은 언제인가요"
    hits = with_known.retrieve(query)
    assert hits[0].text == target and absent not in {h.text for h in hits}
    in_first_stage = target in {h.text for h in without.candidates(query)}
    assert (hits[0].first_stage_rank == 0) == (not in_first_stage) and hits[0].id == content_id(target, None)
    plain = without.retrieve(query)
    assert [h.text for h in hits[1:]] == [h.text for h in plain if h.text != target][:4]
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert [h.text for h in with_known.retrieve("관련 없는 다른 질문")] == [
        h.text for h in without.retrieve("관련 없는 다른 질문")]  # no similar known query: unchanged


def test_in_memory_corpus_ids_are_positions_in_the_texts_given():
    """A text given twice is one entry; every hit's id is its text's position in the list given (a repeated
    text used to shift every later id, so ``texts[int(hit.id)]`` read another text)."""
    from rag_rerank.retrieval.first_stage import InMemoryCorpus

    texts = ["서울은 한국의 수도이다.", "김치는 발효 음식이다.", "서울은 한국의 수도이다.", "제주도는 섬이다."]
    corpus = InMemoryCorpus(texts, mode="bm25")
    for query in ("제주도", "김치", "서울"):
        hits = corpus.candidates(query, 5)
        assert hits and all(texts[int(h.id)] == h.text for h in hits), hits
    assert [h.id for h in corpus.candidates("제주도", 1)] == ["3"]
    assert [h.id for h in corpus.candidates("서울", 5)] == ["0"]  # the repeat is one entry, at its first place
    assert [d.id for d in corpus.find_texts(["제주도는 섬이다.", "없는 글"])[:1]] == ["3"]


def test_two_stage_refuses_a_mode_or_hybrid_its_first_stage_would_ignore(tiny_ce):
    """Beside a first stage, mode= and hybrid= were ignored in silence (mode="dense" over a BM25 corpus searched
    BM25); a store that is neither a ChromaStore nor a first stage failed inside with an AttributeError."""
    from rag_rerank.retrieval.first_stage import InMemoryCorpus

    corpus = InMemoryCorpus(["서울은 한국의 수도이다.", "제주도는 섬이다."], mode="bm25")
    with pytest.raises(ValueError, match=r"mode='dense'.*searches in mode 'bm25'"):
        TwoStageRetriever(corpus, mode="dense")
    with pytest.raises(ValueError, match="hybrid= applies to a store"):
        TwoStageRetriever(corpus, hybrid=Fusion(0.7))
    with pytest.raises(ValueError, match="unknown mode 'sparse'"):
        TwoStageRetriever(corpus, mode="sparse")
    with pytest.raises(TypeError, match="store must be a ChromaStore or a first stage.*got list"):
        TwoStageRetriever(["서울은 한국의 수도이다."])
    same = TwoStageRetriever(corpus, mode="bm25", hybrid=None)  # repeating its own mode is fine
    assert same.mode == "bm25" and [h.text for h in same.retrieve("제주도", top_n=1)] == ["제주도는 섬이다."]


@pytest.mark.parametrize("tokenizer", ["kiwi", "whitespace"])
def test_decomposed_hangul_is_found_by_bm25(tokenizer, tmp_path):
    """Hangul stored decomposed (NFD: macOS file names, some PDF/HWP extractors) matched nothing in BM25 - not
    even itself - while the reranker's tokenizer read it as the same word. Both sides are composed first; a
    hit keeps the text as stored."""
    import unicodedata

    from rag_rerank.retrieval.first_stage import InMemoryCorpus
    from rag_rerank.retrieval.lexical_index import LexicalIndex

    docs = ["서울은 대한민국의 수도이다", "부산은 항구 도시이다", "김치는 발효 음식이다"]
    nfd = [unicodedata.normalize("NFD", d) for d in docs]
    query = "서울은 대한민국의 수도이다" if tokenizer == "whitespace" else "대한민국의 수도는?"
    for texts, q in ((docs, unicodedata.normalize("NFD", query)), (nfd, query), (nfd, unicodedata.normalize("NFD", query))):
        hits = InMemoryCorpus(texts, mode="bm25", bm25_tokenizer=tokenizer).candidates(q, 3)
        assert [h.id for h in hits][:1] == ["0"] and hits[0].text == texts[0]
    index = LexicalIndex(tmp_path / "bm25", tokenizer)
    index.add(["a", "b", "c"], nfd)
    assert index.search(query, 3)[0][0] == "a"


@pytest.mark.parametrize("tokenizer", ["kiwi", "whitespace"])
def test_full_width_ascii_matches_its_ascii_in_bm25(tokenizer):
    """Documents converted from HWP and older word processors write digits and Latin letters full width:
    "２０２４년" never matched "2024년", and Kiwi dropped full-width Latin words altogether."""
    from rag_rerank.retrieval.first_stage import InMemoryCorpus
    from rag_rerank.retrieval.lexical import searchable

    assert searchable("２０２４년 ＡＩ　반도체％") == "2024년 AI 반도체%" and searchable("ㅋㅋ ㈜ ①") == "ㅋㅋ ㈜ ①"
    docs = ["２０２４년 ＡＩ 반도체 매출", "2023년 자동차 수출", "김치는 발효 음식"]
    corpus = InMemoryCorpus(docs, mode="bm25", bm25_tokenizer=tokenizer)
    query = "2024년 AI" if tokenizer == "whitespace" else "AI 2024"
    assert [h.text for h in corpus.candidates(query, 3)][:1] == [docs[0]]


def test_documents_longer_than_the_encoder_window_are_said(tmp_path, tiny_encoder):
    """A document past the encoder's window is embedded from its start only - dense search never sees the rest
    (a folder of long .md files indexes one document a file). It was silent; adding such documents now warns
    with the count, and short ones say nothing."""
    import warnings

    enc = BiEncoder(str(tiny_encoder), backend="torch", max_length=16)
    store = ChromaStore(tmp_path / "db", "long", encoder=enc)
    long_doc = "서울은 대한민국의 수도이다. " * 20
    assert enc.count_truncated(["짧다", long_doc]) == 1
    with pytest.warns(UserWarning, match=r"1 of 2 documents are longer than the encoder's 16 tokens"):
        store.add(["짧은 문서", long_doc])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store.add(["또 짧은 문서"])


def test_an_empty_where_filters_nothing_in_every_search_and_names_nothing_to_delete(tmp_path, tiny_encoder):
    """BM25 read where={} as no filter while Chroma refused it in dense search and get, so a hybrid search with
    an empty filter (a UI's cleared filter) failed on one side. Searches take {} as no filter; delete(where={})
    still deletes nothing and says so."""
    from rag_rerank.retrieval.first_stage import StoreFirstStage

    store = ChromaStore(tmp_path / "db", "empty-where", encoder=BiEncoder(str(tiny_encoder), backend="torch"))
    store.add(["서울은 대한민국의 수도", "부산은 항구 도시"], metadatas=[{"city": "seoul"}, {"city": "busan"}])
    assert [h.id for h in StoreFirstStage(store, mode="hybrid").candidates("서울", 2, where={})] == \
        [h.id for h in StoreFirstStage(store, mode="hybrid").candidates("서울", 2)]
    assert len(store.search("서울", 2, where={})) == 2 and len(store.get(where={})) == 2
    assert store.find_texts(["부산은 항구 도시"], where={})[0] is not None
    with pytest.raises(ValueError, match="where {}"):
        store.delete(where={})
    assert store.count() == 2


def test_opening_a_collection_with_another_encoder_of_its_width_warns(tmp_path, tiny_encoder):
    """Only a different vector width was caught: another model of the same width searched the collection with
    vectors from another space (and would add such vectors to it), in silence. A copy of the same model under
    another folder (a hub name and its local copy) is not warned about; leaving the encoder unset takes the one
    the collection records."""
    import shutil
    import warnings

    store = ChromaStore(tmp_path / "db", "enc-check", encoder=str(tiny_encoder))
    store.add(["서울은 대한민국의 수도"])
    other = shutil.copytree(tiny_encoder, tmp_path / "another-model")
    same = shutil.copytree(tiny_encoder, tmp_path / "copy" / tiny_encoder.name)
    with pytest.warns(UserWarning, match="was built with encoder .* not comparable"):
        ChromaStore(tmp_path / "db", "enc-check", encoder=str(other))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ChromaStore(tmp_path / "db", "enc-check", encoder=str(same))
        assert ChromaStore(tmp_path / "db", "enc-check").encoder.model_name == str(tiny_encoder)


@pytest.mark.parametrize("tokenizer", ["kiwi", "whitespace"])
def test_invisible_format_characters_do_not_split_words_in_bm25(tokenizer):
    """Web pages and blog exports carry zero-width spaces, joiners and soft hyphens inside words: Kiwi read
    '서울\\u200b특별시' as other tokens than '서울특별시', so the query missed the page."""
    from rag_rerank.retrieval.first_stage import InMemoryCorpus
    from rag_rerank.retrieval.lexical import searchable

    assert searchable("서울\u200b특별시\u00ad청사\ufeff") == "서울특별시청사"
    docs = ["서울\u200b특별시 청사 안내", "부산 항구 도시", "김치는 발효 음식"]
    hits = InMemoryCorpus(docs, mode="bm25", bm25_tokenizer=tokenizer).candidates("서울특별시 청사", 3)
    assert [h.text for h in hits][:1] == [docs[0]]
