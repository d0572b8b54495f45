"""LangChain adapters against the real framework (offline: fake chat model, our embedder)."""
from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("langchain_core")

from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_classic.retrievers.document_compressors import CrossEncoderReranker
from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableParallel, RunnablePassthrough

from rag_rerank.retrieval.fusion import Fusion
from langchain_rag_rerank import (KoreanChromaRetriever, KoreanCrossEncoder,
                                               KoreanCrossEncoderReranker, KoreanEmbeddings)
from rag_rerank.retrieval.pipeline import SecondStage, TwoStageRetriever
from rag_rerank.retrieval.store import ChromaStore


@pytest.fixture(scope="module")
def store(tmp_path_factory, encoder, faq_corpus):
    s = ChromaStore(tmp_path_factory.mktemp("lc"), "faq", encoder=encoder)
    s.add(faq_corpus, metadatas=[{"row": i} for i in range(len(faq_corpus))])
    return s


@pytest.fixture(scope="module")
def compressor(e5_reranker):
    return KoreanCrossEncoderReranker(reranker=e5_reranker, top_n=3)


@pytest.fixture(scope="module")
def compression_retriever(store, compressor):
    base = KoreanChromaRetriever(pipeline=TwoStageRetriever(store, mode="hybrid", candidate_k=10), rerank=False)
    return ContextualCompressionRetriever(base_compressor=compressor, base_retriever=base)


def _chain(retriever):
    prompt = ChatPromptTemplate.from_template("다음 문맥으로 답하세요.\n{context}\n\n질문: {question}")
    answer = (lambda x: {"context": "\n".join(d.page_content for d in x["docs"]), "question": x["question"]}) \
        | prompt | FakeListChatModel(responses=["세종대왕입니다."] * 100) | StrOutputParser()
    return RunnableParallel(docs=retriever, question=RunnablePassthrough()).assign(answer=answer)


def test_lcel_chain_with_compression_retriever(compression_retriever, store, e5_reranker, qa):
    query, premise = qa
    out = _chain(compression_retriever).invoke(query)
    assert out["answer"] == "세종대왕입니다."
    docs = out["docs"]
    candidates = TwoStageRetriever(store, mode="hybrid", candidate_k=10).candidates(query)
    # the second stage with the shipped model's saved fusion (score interpolation with the order received)
    expected = SecondStage(e5_reranker).rank(query, [c.text for c in candidates])[:3]
    assert [d.page_content for d in docs] == [candidates[i].text for i, _, _ in expected]
    assert premise in [d.page_content for d in docs]
    by_text = {c.text: c for c in candidates}
    for d, (_, final, rerank) in zip(docs, expected):
        assert d.metadata["relevance_score"] == pytest.approx(final)
        assert d.metadata["rerank_score"] == pytest.approx(rerank)
        assert type(d.metadata["relevance_score"]) is float
        assert d.id == by_text[d.page_content].id  # ids survive the round trip
        assert d.metadata["row"] == by_text[d.page_content].metadata["row"]


def test_ainvoke_matches_invoke(compression_retriever, qa):
    chain = _chain(compression_retriever)
    sync = chain.invoke(qa[0])
    got = asyncio.run(chain.ainvoke(qa[0]))
    assert [d.id for d in got["docs"]] == [d.id for d in sync["docs"]] and got["answer"] == sync["answer"]


def test_eight_concurrent_async_queries_equal_sequential(store, tiny_ce, qa):
    """Thread safety of the async path (one model shared by eight queries at once): the tiny
    ALBERT runs the same code as e5, and lets this test run its 16 rerankings in seconds."""
    base = KoreanChromaRetriever(pipeline=TwoStageRetriever(store, mode="hybrid", candidate_k=10), rerank=False)
    compression_retriever = ContextualCompressionRetriever(
        base_compressor=KoreanCrossEncoderReranker(model=str(tiny_ce), top_n=3), base_retriever=base)
    queries = [qa[0], "한글은 누가 만들었나요?", "발효 음식", "바다가 예쁜 섬", "서울 지하철", "감기 걸렸을 때",
               "항구 도시", "비빔밥"]
    sequential = [[d.id for d in compression_retriever.invoke(q)] for q in queries]

    async def all_at_once():
        return await asyncio.gather(*(compression_retriever.ainvoke(q) for q in queries))

    assert [[d.id for d in r] for r in asyncio.run(all_at_once())] == sequential


# --------------------------------------------------------------- compressor
def _docs():
    return [Document(page_content=t, metadata={"src": i, "tags": "x"}, id=f"d{i}")
            for i, t in enumerate(["김치찌개 레시피는 간단하다.", "서울은 대한민국의 수도이다.", "부산 여행 안내 책자를 샀다."])]


def test_compressor_copies_and_keeps_ids(compressor):
    docs = _docs()
    out = compressor.compress_documents(docs, "한국의 수도는 어디인가요?")
    assert len(out) == 3 and {d.id for d in out} == {"d0", "d1", "d2"}
    assert all("relevance_score" not in d.metadata for d in docs)  # inputs untouched
    assert all(d.metadata["tags"] == "x" for d in out)
    scores = [d.metadata["relevance_score"] for d in out]
    assert scores == sorted(scores, reverse=True)


def test_compressor_empty_and_bad_query(compressor):
    assert compressor.compress_documents([], "질문") == []
    assert asyncio.run(compressor.acompress_documents([], "질문")) == []
    with pytest.raises(ValueError, match="query"):
        compressor.compress_documents(_docs(), "")
    with pytest.raises(ValueError, match="query"):
        asyncio.run(compressor.acompress_documents(_docs(), "  "))


def test_compressor_bad_knobs_and_iterables(compressor):
    """A NaN score_threshold silently dropped every document (no score is >= NaN): refused when built. Documents
    given as a generator were indexed by the ranking and failed inside; they are read once now. A bad pair for
    KoreanCrossEncoder.score names its position."""
    with pytest.raises(ValueError, match="score_threshold"):
        KoreanCrossEncoderReranker(reranker=compressor._stage.reranker, score_threshold=float("nan"))
    listed = compressor.compress_documents(_docs(), "한국의 수도는 어디인가요?")
    generated = compressor.compress_documents((d for d in _docs()), "한국의 수도는 어디인가요?")
    assert [(d.id, d.metadata) for d in generated] == [(d.id, d.metadata) for d in listed]
    assert [d.id for d in asyncio.run(compressor.acompress_documents(iter(_docs()), "한국의 수도는 어디인가요?"))] == \
        [d.id for d in listed]
    with pytest.raises(ValueError, match=r"text_pairs\[1\] must be a \(query, document\) pair"):
        KoreanCrossEncoder(reranker=compressor._stage.reranker).score([("수도", "서울"), ("수도",)])


def test_compressor_top_n_threshold_and_async(compressor, e5_reranker):
    query = "한국의 수도는 어디인가요?"
    scores = [final for _, final, _ in SecondStage(e5_reranker).rank(query, [d.page_content for d in _docs()])]
    cut = sorted(scores)[1]  # the threshold cuts the final (fused) score, as TwoStageRetriever's does
    strict = KoreanCrossEncoderReranker(reranker=e5_reranker, top_n=3, score_threshold=cut)
    assert len(strict.compress_documents(_docs(), query)) == 2
    one = KoreanCrossEncoderReranker(reranker=e5_reranker, top_n=1)
    sync = one.compress_documents(_docs(), query)
    assert [d.id for d in asyncio.run(one.acompress_documents(_docs(), query))] == [d.id for d in sync]
    assert len(sync) == 1


@pytest.mark.parametrize("fusion", ["auto", Fusion(0.5, 10.0)])
def test_compressor_is_the_pipeline_on_the_order_it_receives(store, e5_reranker, qa, fusion):
    """The base retriever's documents, in its order, through the compressor = TwoStageRetriever's
    second stage on the same candidates; a threshold cuts both alike; keep_retrieval_score keeps
    an earlier stage's score."""
    pipeline = TwoStageRetriever(store, e5_reranker, candidate_k=12, fusion=fusion, known_queries=None)
    hits = pipeline.candidates(qa[0])
    docs = [Document(page_content=h.text, id=h.id, metadata={"relevance_score": h.first_stage_score}) for h in hits]
    expected = pipeline.rerank_hits(qa[0], hits)
    out = KoreanCrossEncoderReranker(reranker=e5_reranker, top_n=12, fusion=fusion,
                                     keep_retrieval_score=True).compress_documents(docs, qa[0])
    assert [d.id for d in out] == [h.id for h in expected]
    assert [d.metadata["relevance_score"] for d in out] == pytest.approx([h.score for h in expected])
    assert [d.metadata.get("rerank_score") for d in out] == [h.rerank_score for h in expected]
    assert [d.metadata["retrieval_score"] for d in out] == [h.first_stage_score for h in expected]
    threshold = expected[4].score
    cut = KoreanCrossEncoderReranker(reranker=e5_reranker, top_n=12, fusion=fusion, score_threshold=threshold)
    assert [d.id for d in cut.compress_documents(docs, qa[0])] == [h.id for h in expected if h.score >= threshold]


def test_compressor_pickles_for_worker_processes(compressor):
    """multiprocessing / Ray / Celery pickle the compressor: its Reranker travels as its arguments
    and is reloaded on the other side (it held a thread-local before, which does not pickle)."""
    import pickle

    query = "한국의 수도는 어디인가요?"
    again = pickle.loads(pickle.dumps(compressor))
    assert again is not compressor and again.top_n == compressor.top_n
    assert [(d.id, round(d.metadata["relevance_score"], 5)) for d in again.compress_documents(_docs(), query)] == \
        [(d.id, round(d.metadata["relevance_score"], 5)) for d in compressor.compress_documents(_docs(), query)]


def test_classic_cross_encoder_reranker_uses_our_model(e5_reranker):
    query = "한국의 수도는 어디인가요?"
    classic = CrossEncoderReranker(model=KoreanCrossEncoder(reranker=e5_reranker), top_n=2)
    ours = KoreanCrossEncoderReranker(reranker=e5_reranker, top_n=2, fusion=None)  # plain reranking, as classic's
    assert [d.id for d in classic.compress_documents(_docs(), query)] == \
        [d.id for d in ours.compress_documents(_docs(), query)]


def test_cross_encoder_scores_mixed_queries_in_order(e5_reranker):
    ce = KoreanCrossEncoder(reranker=e5_reranker)
    pairs = [("수도", "서울은 수도이다"), ("음식", "김치는 음식이다"), ("수도", "부산은 항구이다")]
    assert ce.score(pairs) == pytest.approx([e5_reranker.score(q, [d])[0] for q, d in pairs], abs=1e-6)
    assert ce.score([]) == []


# ---------------------------------------------------------- retriever, interop
def test_retriever_sync_and_async(store, e5_reranker, qa):
    retriever = KoreanChromaRetriever(pipeline=TwoStageRetriever(store, e5_reranker, candidate_k=10, top_n=2))
    docs = retriever.invoke(qa[0])
    assert len(docs) == 2 and all("relevance_score" in d.metadata and d.id for d in docs)
    assert [d.id for d in asyncio.run(retriever.ainvoke(qa[0]))] == [d.id for d in docs]
    # LangChain's ways to say how many: per call, search_kwargs, the field (top_n: its old name)
    assert len(retriever.invoke(qa[0], k=1)) == 1 and len(asyncio.run(retriever.ainvoke(qa[0], k=1))) == 1
    assert [d.id for d in retriever.invoke(qa[0], k=1)] == [docs[0].id]
    pipeline = retriever.pipeline
    assert len(KoreanChromaRetriever(pipeline=pipeline, search_kwargs={"k": 3}).invoke(qa[0])) == 3
    assert len(KoreanChromaRetriever(pipeline=pipeline, k=3).invoke(qa[0], k=1)) == 1  # the call wins
    assert len(KoreanChromaRetriever(pipeline=pipeline, top_n=1).invoke(qa[0])) == 1
    with pytest.raises(ValueError, match="search_kwargs takes 'k' and 'where' .*, not top_k"):
        KoreanChromaRetriever(pipeline=pipeline, search_kwargs={"top_k": 1}).invoke(qa[0])
    # the filter as LangChain's Chroma retriever names it (search_kwargs={"filter": ...}) is the where filter
    wanted = {"row": {"$in": [0, 1, 2]}}
    filtered = KoreanChromaRetriever(pipeline=pipeline, search_kwargs={"k": 5, "filter": wanted}).invoke(qa[0])
    assert filtered and {d.metadata["row"] for d in filtered} <= {0, 1, 2}
    assert [d.id for d in filtered] == [d.id for d in retriever.invoke(qa[0], k=5, where=wanted)]
    with pytest.raises(ValueError, match="both 'where' and 'filter'"):
        KoreanChromaRetriever(pipeline=pipeline, search_kwargs={"where": wanted, "filter": wanted}).invoke(qa[0])
    with pytest.raises(ValueError, match="must be a positive integer"):
        retriever.invoke(qa[0], k=0)  # not "the default" in silence


def test_langchain_chroma_writes_we_read(tmp_path, encoder):
    import chromadb
    from langchain_chroma import Chroma

    client = chromadb.PersistentClient(path=str(tmp_path))
    lc = Chroma(collection_name="written-by-lc", client=client, embedding_function=KoreanEmbeddings(encoder=encoder))
    ids = lc.add_texts(["서울은 대한민국의 수도이다.", "김치는 발효 음식이다."], metadatas=[{"n": 0}, {"n": 1}])
    ours = ChromaStore(client=client, collection="written-by-lc", encoder=encoder)
    hits = ours.search("한국의 수도", 2)
    assert hits[0].text == "서울은 대한민국의 수도이다." and hits[0].id == ids[0]
    lc_scores = dict((d.page_content, s) for d, s in lc.similarity_search_with_relevance_scores("한국의 수도", k=2))
    assert hits[0].score > hits[1].score and lc_scores[hits[0].text] > lc_scores[hits[1].text]


def test_we_write_langchain_chroma_reads(store, encoder):
    from langchain_chroma import Chroma

    lc = Chroma(collection_name=store.collection_name, client=store.client,
                embedding_function=KoreanEmbeddings(encoder=encoder))
    found = lc.similarity_search("한글은 누가 만들었나요?", k=3)
    ours = store.search("한글은 누가 만들었나요?", 3)
    assert [d.id for d in found] == [h.id for h in ours]
    assert found[0].metadata == ours[0].metadata


def test_embeddings_adapter(encoder):
    import numpy as np

    emb = KoreanEmbeddings(encoder=encoder)
    assert np.allclose(emb.embed_query("질문"), encoder.embed_query("질문"))
    assert np.allclose(asyncio.run(emb.aembed_documents(["문서"]))[0], encoder.embed_passages(["문서"])[0])
