"""LlamaIndex adapters against the real framework (offline: MockLLM, our embedder)."""
from __future__ import annotations

import asyncio
import copy

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import Settings, VectorStoreIndex, get_response_synthesizer
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from rag_rerank.retrieval.fusion import Fusion
from llama_index.embeddings.rag_rerank import KoreanEmbedding
from llama_index.postprocessor.rag_rerank import KoreanReranker
from llama_index.retrievers.rag_rerank import ChromaBiEncoderRetriever
from rag_rerank.retrieval.pipeline import TwoStageRetriever
from rag_rerank.retrieval.store import ChromaStore

QUERY = ANSWER = None  # set from the shared `qa` fixture: a demo question and the paragraph it was written on


@pytest.fixture(scope="module", autouse=True)
def _qa(qa):
    global QUERY, ANSWER
    QUERY, ANSWER = qa
    return qa


class Recorder(BaseEventHandler):
    events: list = []

    @classmethod
    def class_name(cls) -> str:
        return "Recorder"

    def handle(self, event, **kwargs) -> None:
        self.events.append(event)


@pytest.fixture(scope="module")
def recorder():
    rec = Recorder()
    rec.events = []
    get_dispatcher().add_event_handler(rec)
    yield rec
    get_dispatcher().event_handlers.remove(rec)


@pytest.fixture(scope="module")
def store(tmp_path_factory, encoder, faq_corpus):
    s = ChromaStore(tmp_path_factory.mktemp("li"), "faq", encoder=encoder)
    s.add(faq_corpus)
    return s


@pytest.fixture(scope="module")
def first_stage(store):
    return ChromaBiEncoderRetriever(TwoStageRetriever(store, mode="hybrid", candidate_k=10), rerank=False)


@pytest.fixture(scope="module")
def postprocessor(e5_reranker):
    return KoreanReranker(reranker=e5_reranker, top_n=3)


@pytest.fixture(scope="module")
def engine(first_stage, postprocessor):
    return RetrieverQueryEngine(retriever=first_stage, node_postprocessors=[postprocessor],
                                response_synthesizer=get_response_synthesizer(llm=MockLLM()))


def test_query_engine_uses_reranked_top_n(engine, first_stage, e5_reranker, recorder):
    recorder.events.clear()
    response = engine.query(QUERY)
    candidates = first_stage.retrieve(QUERY)
    # the second stage with the shipped model's saved fusion, on the order the nodes arrive in
    from rag_rerank.retrieval.pipeline import SecondStage

    texts = [c.node.get_content() for c in candidates]
    expected = SecondStage(e5_reranker).rank(QUERY, texts)[:3]
    used = [n.node.get_content() for n in response.source_nodes]
    assert used == [texts[i] for i, _, _ in expected]
    assert ANSWER in used
    assert [n.score for n in response.source_nodes] == pytest.approx([final for _, final, _ in expected])
    assert str(response)  # MockLLM wrote something
    names = [type(e).__name__ for e in recorder.events]
    assert "ReRankStartEvent" in names and "ReRankEndEvent" in names
    end = [e for e in recorder.events if type(e).__name__ == "ReRankEndEvent"][-1]
    assert [n.node.get_content() for n in end.nodes] == used


def test_async_query_matches_sync(engine):
    sync = [n.node.node_id for n in engine.query(QUERY).source_nodes]
    got = asyncio.run(engine.aquery(QUERY))
    assert [n.node.node_id for n in got.source_nodes] == sync


def test_eight_concurrent_async_queries_equal_sequential(first_stage, tiny_ce):
    """Thread safety of the async path (one model shared by eight queries at once): the tiny
    ALBERT runs the same code as e5, and lets this test run its 16 rerankings in seconds."""
    engine = RetrieverQueryEngine(retriever=first_stage, node_postprocessors=[KoreanReranker(model=str(tiny_ce), top_n=3)],
                                  response_synthesizer=get_response_synthesizer(llm=MockLLM()))
    queries = [QUERY, "한글은 누가 만들었나요?", "발효 음식", "바다가 예쁜 섬", "서울 지하철", "감기 걸렸을 때",
               "항구 도시", "비빔밥"]
    sequential = [[n.node.node_id for n in engine.query(q).source_nodes] for q in queries]

    async def all_at_once():
        return await asyncio.gather(*(engine.aquery(q) for q in queries))

    concurrent = [[n.node.node_id for n in r.source_nodes] for r in asyncio.run(all_at_once())]
    assert concurrent == sequential


def test_retriever_with_reranking_pipeline(store, e5_reranker):
    pipeline = TwoStageRetriever(store, e5_reranker, candidate_k=10, top_n=2)
    retriever = ChromaBiEncoderRetriever(pipeline)
    nodes = retriever.retrieve(QUERY)
    assert len(nodes) == 2 and ANSWER in [n.node.get_content() for n in nodes]
    meta = nodes[0].node.metadata
    (hit, _) = pipeline.retrieve(QUERY)  # the node carries the pipeline's final score and each stage's
    assert nodes[0].score == hit.score and meta["rerank_score"] == hit.rerank_score
    assert 0 <= meta["rerank_score"] <= 1 and "first_stage_score" in meta
    assert "rerank_score" not in nodes[0].node.get_content(metadata_mode="embed")
    anodes = asyncio.run(retriever.aretrieve(QUERY))
    assert [n.node.node_id for n in anodes] == [n.node.node_id for n in nodes]
    one = ChromaBiEncoderRetriever(pipeline, similarity_top_k=1)  # LlamaIndex's name for it
    assert [n.node.node_id for n in one.retrieve(QUERY)] == [nodes[0].node.node_id]
    assert len(ChromaBiEncoderRetriever(pipeline, top_n=1).retrieve(QUERY)) == 1  # the old name
    with pytest.raises(ValueError, match="disagree"):
        ChromaBiEncoderRetriever(pipeline, similarity_top_k=1, top_n=2)
    with pytest.raises(ValueError, match="positive integer"):
        ChromaBiEncoderRetriever(pipeline, similarity_top_k=0)


# ------------------------------------------------------------ postprocessor
def _nodes():
    return [NodeWithScore(node=TextNode(id_=f"n{i}", text=t, metadata={"src": i}), score=0.1 * i)
            for i, t in enumerate(["김치찌개 레시피는 간단하다.", ANSWER, "부산 여행 안내 책자를 샀다."])]


@pytest.mark.parametrize("fusion", ["auto", Fusion(0.5, 10.0)])
def test_postprocessor_is_the_pipeline_on_the_order_it_receives(store, e5_reranker, fusion):
    """The first stage's nodes, in its order, through the postprocessor = TwoStageRetriever's
    second stage on the same candidates: same order, same scores, and one threshold cuts both
    alike. "auto" is the shipped model's saved fusion (reranker alone on the top 10, the rest after
    in first-stage order: 12 candidates test both parts); Fusion(0.5, 10) a real fusion."""
    pipeline = TwoStageRetriever(store, e5_reranker, candidate_k=12, fusion=fusion, known_queries=None)
    hits = pipeline.candidates(QUERY)
    nodes = [NodeWithScore(node=TextNode(id_=h.id, text=h.text), score=h.first_stage_score) for h in hits]
    expected = pipeline.rerank_hits(QUERY, hits)
    post = KoreanReranker(reranker=e5_reranker, top_n=12, fusion=fusion)
    got = post.postprocess_nodes(nodes, QueryBundle(QUERY))
    assert [n.node.node_id for n in got] == [h.id for h in expected]
    assert [n.score for n in got] == pytest.approx([h.score for h in expected])
    assert all(0 <= n.score <= 1 for n in got)  # one [0, 1] scale, fused or not
    assert [n.node.metadata.get("rerank_score") for n in got] == [h.rerank_score for h in expected]
    assert [n.node.metadata["first_stage_score"] for n in got] == [h.first_stage_score for h in expected]
    assert all(not n.node.metadata for n in nodes)  # the inputs are untouched
    threshold = expected[4].score
    cut = KoreanReranker(reranker=e5_reranker, top_n=12, fusion=fusion, score_threshold=threshold)
    assert [n.node.node_id for n in cut.postprocess_nodes(nodes, QueryBundle(QUERY))] == \
        [h.id for h in expected if h.score >= threshold]
    plain = KoreanReranker(reranker=e5_reranker, top_n=12, fusion=None).postprocess_nodes(nodes, QueryBundle(QUERY))
    scores = e5_reranker.score(QUERY, [h.text for h in hits])
    assert [n.score for n in plain] == pytest.approx(sorted(scores, reverse=True))


def test_postprocessor_pickles(postprocessor):
    import pickle

    again = pickle.loads(pickle.dumps(postprocessor))
    query = QueryBundle("한국의 수도는 어디인가요?")
    assert [(n.node.node_id, round(n.score, 5)) for n in again.postprocess_nodes(_nodes(), query)] == \
        [(n.node.node_id, round(n.score, 5)) for n in postprocessor.postprocess_nodes(_nodes(), query)]


def test_missing_query_raises(postprocessor):
    with pytest.raises(ValueError, match="query"):
        postprocessor.postprocess_nodes(_nodes())


def test_empty_nodes_still_emit_end_events(postprocessor, recorder):
    debug = LlamaDebugHandler()
    pp = KoreanReranker(reranker=postprocessor._stage.reranker, callback_manager=CallbackManager([debug]))
    recorder.events.clear()
    assert pp.postprocess_nodes([], query_str=QUERY) == []
    names = [type(e).__name__ for e in recorder.events]
    assert names.count("ReRankStartEvent") == 1 and names.count("ReRankEndEvent") == 1
    pairs = debug.get_event_pairs(CBEventType.RERANKING)
    assert len(pairs) == 1 and len(pairs[0]) == 2  # start and end


def test_inputs_not_mutated_and_scores_are_floats(postprocessor):
    nodes = _nodes()
    before = copy.deepcopy(nodes)
    keep = KoreanReranker(reranker=postprocessor._stage.reranker, top_n=2, keep_retrieval_score=True)
    out = keep.postprocess_nodes(nodes, QueryBundle(QUERY))
    assert [n.model_dump() for n in nodes] == [n.model_dump() for n in before]
    assert all(o is not n for o in out for n in nodes)
    assert out[0].node.get_content() == ANSWER and len(out) == 2
    assert all(type(o.score) is float for o in out)
    assert out[0].node.metadata["retrieval_score"] == pytest.approx(0.1)
    assert out[0].node.metadata["src"] == 1 and out[0].node.node_id == "n1"


def test_score_threshold_and_legacy_callback(postprocessor):
    debug = LlamaDebugHandler()
    pp = KoreanReranker(reranker=postprocessor._stage.reranker, top_n=3, score_threshold=0.999999,
                        callback_manager=CallbackManager([debug]))
    out = pp.postprocess_nodes(_nodes(), query_str=QUERY)
    scores = postprocessor._stage.reranker.score(QUERY, [n.node.get_content() for n in _nodes()])
    assert len(out) == sum(s >= 0.999999 for s in scores)
    assert len(debug.get_event_pairs(CBEventType.RERANKING)) == 1
    with pytest.raises(ValueError, match="score_threshold"):  # NaN would silently drop every node
        KoreanReranker(reranker=postprocessor._stage.reranker, score_threshold=float("nan"))


def test_async_postprocess_does_not_block_the_loop(postprocessor):
    async def run():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        task = asyncio.create_task(ticker())
        out = await postprocessor.apostprocess_nodes(_nodes() * 8, query_str=QUERY)
        task.cancel()
        return out, ticks

    out, ticks = asyncio.run(run())
    assert out[0].node.get_content() == ANSWER
    assert ticks > 3  # the loop kept running while the model scored


def test_serialisation_fields(postprocessor):
    data = postprocessor.to_dict()
    assert data["class_name"] == "KoreanReranker" and data["top_n"] == 3
    assert {"model", "batch_size", "device", "max_length", "score_threshold", "keep_retrieval_score"} <= set(data)


# ---------------------------------------------------------- embedding interop
def test_vector_store_index_with_our_embedder_reads_our_collection(store, encoder):
    from llama_index.vector_stores.chroma import ChromaVectorStore

    embed = KoreanEmbedding(encoder=encoder)
    index = VectorStoreIndex.from_vector_store(ChromaVectorStore(chroma_collection=store.collection),
                                               embed_model=embed)
    nodes = index.as_retriever(similarity_top_k=3).retrieve(QUERY)
    ours = store.search(QUERY, 3)
    assert [n.node.node_id for n in nodes] == [h.id for h in ours]


def test_our_retriever_reads_a_collection_written_by_llama_index(tmp_path, encoder):
    import chromadb
    from llama_index.core import Document, StorageContext
    from llama_index.vector_stores.chroma import ChromaVectorStore

    client = chromadb.PersistentClient(path=str(tmp_path))
    collection = client.get_or_create_collection("written-by-li", configuration={"hnsw": {"space": "cosine"}})
    storage = StorageContext.from_defaults(vector_store=ChromaVectorStore(chroma_collection=collection))
    docs = [Document(text=t, metadata={"n": i}) for i, t in enumerate(
        [ANSWER, "김치는 발효 음식이다.", "제주도는 화산섬이다."])]
    VectorStoreIndex.from_documents(docs, storage_context=storage, embed_model=KoreanEmbedding(encoder=encoder))
    ours = ChromaStore(client=client, collection="written-by-li", encoder=encoder)
    hits = ours.search(QUERY, 3)
    assert hits[0].text == ANSWER and hits[0].metadata["n"] == 0
    assert ours.search_lexical("김치", 1)[0].text == "김치는 발효 음식이다."


def test_embedding_adapter_prompts(encoder):
    import numpy as np

    embed = KoreanEmbedding(encoder=encoder)
    q = embed.get_query_embedding(QUERY)
    p = embed.get_text_embedding(QUERY)
    assert np.allclose(q, encoder.embed_query(QUERY)) and not np.allclose(q, p)
    assert np.allclose(asyncio.run(embed.aget_query_embedding(QUERY)), q)
    assert Settings  # the global settings were never needed


def test_retriever_takes_llama_index_metadata_filters(tmp_path, encoder):
    """``filters=MetadataFilters(...)`` as VectorIndexRetriever takes them: the same hits as the Chroma ``where``
    they stand for; operators Chroma has no form for are refused by name, not dropped."""
    from llama_index.core.vector_stores.types import FilterCondition, FilterOperator, MetadataFilter, MetadataFilters
    from llama_index.retrievers.rag_rerank.base import chroma_where

    s = ChromaStore(tmp_path, "filters", encoder=encoder)
    texts = ["서울은 한국의 수도이다.", "서울의 인구는 많다.", "부산은 항구 도시이다.", "서울에는 한강이 흐른다."]
    s.add(texts, metadatas=[{"city": "서울", "n": 0}, {"city": "서울", "n": 1}, {"city": "부산", "n": 2},
                            {"city": "서울", "n": 3}])
    pipeline = TwoStageRetriever(s, mode="bm25", candidate_k=4)
    filters = MetadataFilters(filters=[MetadataFilter(key="city", value="서울"),
                                       MetadataFilter(key="n", value=1, operator=FilterOperator.GT)])
    assert chroma_where(filters) == {"$and": [{"city": {"$eq": "서울"}}, {"n": {"$gt": 1}}]}
    nodes = ChromaBiEncoderRetriever(pipeline, filters=filters, rerank=False).retrieve("서울")
    assert [n.node.text for n in nodes] == ["서울에는 한강이 흐른다."]
    either = MetadataFilters(filters=[MetadataFilter(key="n", value=0), MetadataFilter(key="n", value=2)],
                             condition=FilterCondition.OR)
    assert {n.node.metadata["n"] for n in ChromaBiEncoderRetriever(pipeline, filters=either, rerank=False)
            .retrieve("서울 부산")} == {0, 2}
    with pytest.raises(ValueError, match="operator 'text_match' .*no Chroma"):
        ChromaBiEncoderRetriever(pipeline, filters=MetadataFilters(
            filters=[MetadataFilter(key="city", value="서", operator=FilterOperator.TEXT_MATCH)]))
    with pytest.raises(ValueError, match="where and filters are both given"):
        ChromaBiEncoderRetriever(pipeline, filters=filters, where={"n": 1})
