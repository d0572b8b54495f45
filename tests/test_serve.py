"""rag-rerank serve: every endpoint, both request shapes, auth, limits, micro-batching (tiny models)."""
from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from rag_rerank import Reranker  # noqa: E402
from rag_rerank.serve import Limits, MicroBatcher, create_app  # noqa: E402

QUERY = "한글은 누가 만들었나요?"
DOCS = ["세종대왕이 훈민정음을 창제했다.", "김치는 발효 음식이다.", "서울은 한국의 수도이다."]


@pytest.fixture(scope="module")
def reranker(tiny_ce):
    return Reranker(str(tiny_ce), batch_size=8, max_length=64)


@pytest.fixture(scope="module")
def client(reranker):
    with TestClient(create_app(reranker, limits=Limits(max_documents=5, max_document_chars=200,
                                                       max_body_bytes=4000))) as c:
        yield c


def test_cohere_shape_ranks_like_the_reranker(client, reranker):
    want = reranker.rerank(QUERY, DOCS)
    r = client.post("/v1/rerank", json={"query": QUERY, "documents": [DOCS[0], {"text": DOCS[1]}, DOCS[2]],
                                        "top_n": 2, "return_documents": True})
    assert r.status_code == 200
    body = r.json()
    assert [x["index"] for x in body["results"]] == [d.index for d in want[:2]]
    assert [x["relevance_score"] for x in body["results"]] == pytest.approx([d.score for d in want[:2]], abs=1e-5)
    assert body["results"][0]["document"] == {"text": DOCS[want[0].index]}
    plain = client.post("/rerank", json={"query": QUERY, "documents": DOCS}).json()["results"]
    assert len(plain) == 3 and "document" not in plain[0]  # Cohere's default: no documents back


def test_tei_shape_raw_scores_and_text(client, reranker):
    logits = reranker.score(QUERY, DOCS, raw=True)
    r = client.post("/rerank", json={"query": QUERY, "texts": DOCS, "raw_scores": True, "return_text": True})
    assert r.status_code == 200
    rows = r.json()
    assert [x["index"] for x in rows] == sorted(range(3), key=lambda i: -logits[i])
    assert {x["index"]: x["score"] for x in rows} == pytest.approx(dict(enumerate(logits)), abs=1e-5)
    assert rows[0]["text"] == DOCS[rows[0]["index"]]
    squashed = client.post("/rerank", json={"query": QUERY, "texts": DOCS}).json()
    assert all(0 <= x["score"] <= 1 and "text" not in x for x in squashed)


@pytest.mark.parametrize("body, status, says", [
    ({"query": QUERY}, 422, "'documents' (Cohere / Jina shape) or 'texts'"),
    ({"query": QUERY, "documents": DOCS, "texts": DOCS}, 422, "not both"),
    ({"documents": DOCS}, 422, "'query' is required"),
    ({"query": 3, "documents": DOCS}, 422, "'query' must be str"),
    ({"query": QUERY, "documents": [DOCS[0], 7]}, 422, "'documents[1]' must be a string or an object"),
    ({"query": QUERY, "documents": [DOCS[0], {"txt": "x"}]}, 422, "'documents[1]'"),
    ({"query": QUERY, "documents": DOCS, "top_n": 0}, 422, "'top_n' must be >= 1"),
    ({"query": QUERY, "documents": DOCS, "top_n": "2"}, 422, "'top_n' must be an integer"),
    ({"query": QUERY, "texts": DOCS, "raw_scores": "yes"}, 422, "'raw_scores' must be bool"),
    ({"query": QUERY, "documents": ["가"] * 6}, 413, "'documents' has 6 items; the limit is 5"),
    ({"query": QUERY, "documents": ["가" * 201]}, 413, "'documents[0]' has 201 characters"),
    ({"query": QUERY, "documents": ["\ud800 깨진 글자"]}, 422, "lone surrogate"),
])
def test_bad_requests_get_json_errors_naming_the_field(client, body, status, says):
    r = client.post("/rerank", content=json.dumps(body), headers={"content-type": "application/json"})
    assert r.status_code == status and says in r.json()["detail"]


def test_body_limits_and_non_json(client):
    r = client.post("/rerank", content=b"x" * 5000, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "limit is 4000" in r.json()["detail"]
    r = client.post("/rerank", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "not JSON" in r.json()["detail"]
    assert client.post("/rerank", json=[QUERY]).status_code == 422
    assert client.post("/rerank", json={"query": QUERY, "documents": []}).json()["results"] == []


def test_health_metrics_and_search_without_store(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["store"] is False
    client.post("/rerank", json={"query": QUERY, "documents": DOCS})
    text = client.get("/metrics").text
    assert 'rag_rerank_requests_total{endpoint="rerank",status="200"}' in text
    assert "rag_rerank_pairs_scored_total" in text and "rag_rerank_batch_requests_bucket" in text
    assert "\nrag_rerank_cuda_graphs 0.0\n" in text  # a CPU engine records none
    r = client.post("/search", json={"query": QUERY})
    assert r.status_code == 404 and "without a store" in r.json()["detail"]


def test_metrics_count_the_engines_cuda_graphs():
    """The gauge reads the engine's recorded graphs at each scrape (one a pass shape on a GPU)."""
    from types import SimpleNamespace

    from rag_rerank.serve import _Metrics

    recorded = [object()] * 2
    engine = SimpleNamespace(describe=lambda: {"engine": "packed", "cuda_graphs": len(recorded)})
    metrics = _Metrics(SimpleNamespace(engine=engine))
    assert b"\nrag_rerank_cuda_graphs 2.0\n" in metrics.render()[0]
    recorded.append(object())
    assert b"\nrag_rerank_cuda_graphs 3.0\n" in metrics.render()[0]
    no_graphs = SimpleNamespace(describe=lambda: {"engine": "packed", "cuda_graphs": None})
    assert b"\nrag_rerank_cuda_graphs 0.0\n" in _Metrics(SimpleNamespace(engine=no_graphs)).render()[0]


def test_bearer_token(reranker):
    with TestClient(create_app(reranker, api_key="s3cret")) as c:
        body = {"query": QUERY, "documents": DOCS}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
            r = c.post("/rerank", json=body, headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert c.get("/metrics").status_code == 401
        assert c.get("/health").status_code == 200  # balancers probe it without credentials
        assert c.post("/rerank", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    # an empty key (`--api-key "$KEY"` with KEY unset) served everyone without auth, silently
    for empty in ("", "  "):
        with pytest.raises(ValueError, match="api_key is empty"):
            create_app(reranker, api_key=empty)
    from rag_rerank import cli

    out = cli.run(["serve", "--reranker", "/nonexistent-model", "--api-key", ""])
    assert out[0] == 2 and "--api-key is empty" in out[2]  # refused before any model loads


def test_search_over_a_store(reranker, tmp_path, tiny_encoder):
    from rag_rerank.retrieval.store import ChromaStore

    store = ChromaStore(tmp_path / "store", "serve-test", encoder=str(tiny_encoder))
    store.add(DOCS + ["훈민정음은 1443년에 만들어졌다."])
    with TestClient(create_app(reranker, store=store, retriever_options={"candidate_k": 4, "top_n": 2})) as c:
        hits = c.post("/search", json={"query": QUERY}).json()["results"]
        assert len(hits) == 2 and {"id", "text", "score", "rerank_score", "first_stage_score"} <= set(hits[0])
        assert len(c.post("/search", json={"query": QUERY, "top_n": 1}).json()["results"]) == 1
        assert c.post("/search", json={"query": QUERY, "where": "x"}).status_code == 422
        bad = c.post("/search", json={"query": QUERY, "where": {"$bad": 1}})  # Chroma refuses it: the caller's to fix
        assert bad.status_code == 422 and "where" in bad.json()["detail"]
        # a limit spelled "k" (or a "filter") was ignored and the whole top came back; {} filters nothing
        k = c.post("/search", json={"query": QUERY, "k": 1})
        assert k.status_code == 422 and "unknown field(s) 'k'" in k.json()["detail"] and "'top_n'" in k.json()["detail"]
        assert len(c.post("/search", json={"query": QUERY, "where": {}}).json()["results"]) == 2


def test_a_failing_model_is_a_500_with_json(reranker, monkeypatch):
    with TestClient(create_app(reranker, max_wait_ms=0)) as c:
        monkeypatch.setattr(reranker, "score", lambda *a, **k: (_ for _ in ()).throw(FloatingPointError("nan")))
        r = c.post("/rerank", json={"query": QUERY, "documents": DOCS})
        assert r.status_code == 500 and r.json()["detail"] == "FloatingPointError: nan"
        assert 'status="500"' in c.get("/metrics").text


def test_micro_batching_shares_calls_and_keeps_each_answer(reranker):
    calls = []

    class Counting:
        def score_many(self, queries, docs, raw=False):
            calls.append(len(queries))
            time.sleep(0.02)  # a pass long enough that requests pile up behind it
            return reranker.score_many(queries, docs, raw=raw)

    batcher = MicroBatcher(Counting(), max_wait_ms=20)
    requests = [(f"{QUERY} {i}", DOCS[: 1 + i % 3]) for i in range(12)]
    futures = [None] * len(requests)

    def send(i):
        futures[i] = batcher.submit(*requests[i])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = [f.result(timeout=30) for f in futures]
    batcher.close()
    assert sum(calls) == 12 and len(calls) < 12  # requests shared scoring calls
    for (q, d), values in zip(requests, got):
        assert values == pytest.approx(reranker.score(q, d, raw=True), abs=1e-5)


def test_a_failing_batch_fails_its_requests_not_the_worker(reranker):
    class Flaky:
        def __init__(self):
            self.fail = True

        def score_many(self, queries, docs, raw=False):
            if self.fail:
                self.fail = False
                raise FloatingPointError("non-finite logits")
            return reranker.score_many(queries, docs, raw=raw)

    batcher = MicroBatcher(Flaky(), max_wait_ms=1)
    with pytest.raises(FloatingPointError):
        batcher.submit(QUERY, DOCS).result(timeout=30)
    assert len(batcher.submit(QUERY, DOCS).result(timeout=30)) == 3
    batcher.close()


class _Device:
    """A reranker whose launch_many returns before its scores exist, as a GPU's queued passes do: each batch's
    launch and collection is logged, ``hold`` keeps the first launch from returning until it is set, and a batch
    whose first query is in ``fail_launch`` / ``fail_collect`` fails there."""

    def __init__(self, reranker, fail_launch=(), fail_collect=(), asynchronous=True):
        self.reranker, self.log, self.asynchronous = reranker, [], asynchronous
        self.hold, self.fail_launch, self.fail_collect = threading.Event(), fail_launch, fail_collect
        self.on_launch = lambda query: None

    def score_many(self, queries, docs, raw=False):
        return self.launch_many(queries, docs, raw)()

    def launch_many(self, queries, docs, raw=False):
        self.log.append(("launch", queries[0]))
        self.on_launch(queries[0])
        if len(self.log) == 1:
            assert self.hold.wait(30)
        if queries[0] in self.fail_launch:
            raise ValueError(f"bad batch {queries[0]}")
        scores = self.reranker.score_many(queries, docs, raw=raw)

        def collect():
            self.log.append(("collect", queries[0]))
            if queries[0] in self.fail_collect:
                raise FloatingPointError(f"non-finite logits in {queries[0]}")
            return scores

        return collect


@pytest.mark.parametrize("asynchronous", [True, False])
def test_the_batcher_launches_the_next_batch_before_it_collects_the_one_in_flight(reranker, asynchronous):
    """Batch k+1 is queued on the device before the host waits for batch k (no idle device between batches
    under load); each request still gets its own scores; with nothing queued a batch is collected at once.
    A reranker whose launches compute (CPU backends: not ``asynchronous``) is scored a batch at a time, so
    batch k's answers never wait for batch k+1's work."""
    device = _Device(reranker, asynchronous=asynchronous)
    batcher = MicroBatcher(device, max_wait_ms=0)
    first = batcher.submit("A", DOCS)
    answered_before = {}  # whether A was answered when B's launch began
    device.on_launch = lambda query: answered_before.setdefault(query, first.done())
    while not device.log:
        time.sleep(0.001)
    second = batcher.submit("B", DOCS[:2])  # queued while A is being launched
    device.hold.set()
    a, b = first.result(timeout=30), second.result(timeout=30)
    assert device.log == ([("launch", "A"), ("launch", "B"), ("collect", "A"), ("collect", "B")] if asynchronous
                          else [("launch", "A"), ("collect", "A"), ("launch", "B"), ("collect", "B")])
    assert answered_before["B"] is (not asynchronous)  # a CPU batch's answers never wait for the next batch
    assert a == pytest.approx(reranker.score("A", DOCS, raw=True), abs=1e-5)
    assert b == pytest.approx(reranker.score("B", DOCS[:2], raw=True), abs=1e-5)
    third = batcher.submit("C", DOCS)  # alone: launched and collected, nothing waits behind it
    assert len(third.result(timeout=30)) == 3 and device.log[-2:] == [("launch", "C"), ("collect", "C")]
    batcher.close()


@pytest.mark.parametrize("where", ["launch", "collect"])
def test_a_batch_that_fails_in_flight_fails_only_its_requests(reranker, where):
    """A batch failing at launch (bad input, tokenising) or at collection (the device's error surfaces when
    the host waits) fails its own requests; the batch in flight beside it and later ones are answered."""
    device = _Device(reranker, **{f"fail_{where}": ("B",)})
    batcher = MicroBatcher(device, max_wait_ms=0)
    first = batcher.submit("A", DOCS)
    while not device.log:
        time.sleep(0.001)
    second = batcher.submit("B", DOCS)
    device.hold.set()
    assert len(first.result(timeout=30)) == 3
    with pytest.raises(ValueError if where == "launch" else FloatingPointError, match="B"):
        second.result(timeout=30)
    assert len(batcher.submit("C", DOCS).result(timeout=30)) == 3 and batcher.alive
    batcher.close()


def test_a_worker_stopping_with_a_batch_in_flight_answers_it(reranker, monkeypatch):
    """Should the worker itself stop (not a batch's error) while a batch is launched and not collected, that
    batch's requests are failed with the reason, not left waiting."""
    device = _Device(reranker)
    device.hold.set()
    batcher = MicroBatcher(device, max_wait_ms=0)

    def broken(self):
        raise SystemExit("stopped")

    monkeypatch.setattr(MicroBatcher, "_finish", broken)
    future = batcher.submit("A", DOCS)
    with pytest.raises(RuntimeError, match="scoring worker has stopped"):
        future.result(timeout=30)
    assert not batcher.alive


def test_async_requests_share_calls_and_get_their_results_in_one_hand_off_a_batch(reranker):
    """submit_async (the app's path): every request gets its own scores, errors reach every request of the
    failing batch, and a batch's results reach the event loop in one call_soon_threadsafe, not one a request."""
    class Slow:
        def __init__(self):
            self.fail = False

        def score_many(self, queries, docs, raw=False):
            time.sleep(0.02)
            if self.fail:
                raise FloatingPointError("non-finite logits")
            return reranker.score_many(queries, docs, raw=raw)

    model = Slow()
    batcher = MicroBatcher(model, max_wait_ms=20)
    requests = [(f"{QUERY} {i}", DOCS[: 1 + i % 3]) for i in range(12)]

    async def run():
        loop = asyncio.get_running_loop()
        handoffs = []
        plain = loop.call_soon_threadsafe
        loop.call_soon_threadsafe = lambda *a, **k: (handoffs.append(1), plain(*a, **k))[1]
        try:
            got = await asyncio.gather(*(batcher.submit_async(q, d) for q, d in requests))
            model.fail = True
            failed = await asyncio.gather(*(batcher.submit_async(q, d) for q, d in requests[:4]),
                                          return_exceptions=True)
        finally:
            loop.call_soon_threadsafe = plain
        return got, failed, handoffs

    got, failed, handoffs = asyncio.run(run())
    batcher.close()
    for (q, d), values in zip(requests, got):
        assert values == pytest.approx(reranker.score(q, d, raw=True), abs=1e-5)
    assert all(isinstance(e, FloatingPointError) for e in failed)
    assert len(handoffs) < len(requests)  # 16 requests, a hand-off a batch


def test_usage_counts_are_the_tokenizers_with_documents_seen_before(reranker):
    from rag_rerank.serve import _TokenCounter

    counter = _TokenCounter(reranker)
    tokenizer = reranker._tokenizer

    def want(query, docs):
        q = len(tokenizer(query, add_special_tokens=False)["input_ids"])
        return sum(q + len(tokenizer(d, add_special_tokens=False)["input_ids"]) for d in docs)

    assert counter._count(QUERY, DOCS) == want(QUERY, DOCS)
    assert counter._count("다른 질문입니다", DOCS[::-1] + ["새 문서"]) == want("다른 질문입니다", DOCS[::-1] + ["새 문서"])
    counter._KEEP = 2  # full: the kept counts are dropped, never wrong
    assert counter._count(QUERY, DOCS + ["또 다른 문서"]) == want(QUERY, DOCS + ["또 다른 문서"])
    assert len(counter._known) <= 4


def _wait_healthy(url: str, tries: int, timeout: float) -> None:
    """Poll /health until it answers 200 (a server starting in a thread or a process)."""
    import httpx

    for _ in range(tries):
        try:
            if httpx.get(f"{url}/health", timeout=timeout).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)


@contextlib.contextmanager
def _serve_process(model, port: int, *flags: str):
    """``rag-rerank serve`` of ``model`` on loopback ``port`` with ``flags``, in a subprocess (stdout/stderr piped),
    killed on leaving whatever the test asserted about how it stops."""
    import os
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "rag_rerank.cli", "serve", "--reranker", str(model), "--listen",
                             f"127.0.0.1:{port}", *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TQDM_DISABLE": "1"})
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_serve_command_answers_over_http(tiny_ce, unused_port):
    """The console command's path: the CLI parses, loads, and uvicorn serves on loopback."""
    import httpx

    from rag_rerank import cli

    thread = threading.Thread(target=cli.main, args=(["serve", "--reranker", str(tiny_ce), "--listen",
                                                     f"127.0.0.1:{unused_port}", "--api-key", "k"],), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{unused_port}"
    _wait_healthy(url, tries=100, timeout=1)
    r = httpx.post(f"{url}/v1/rerank", json={"query": QUERY, "documents": DOCS},
                   headers={"Authorization": "Bearer k"}, timeout=30)
    assert r.status_code == 200 and len(r.json()["results"]) == 3


@pytest.fixture(scope="module")
def served(reranker):
    """The app on a real loopback port (uvicorn in a thread), for third-party clients."""
    import socket

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = uvicorn.Server(uvicorn.Config(create_app(reranker), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_cohere_sdk_v1_and_v2_clients_unchanged(served, reranker):
    """cohere's v1 Client (POST /v1/rerank) and current ClientV2 (POST /v2/rerank) parse the answers."""
    import cohere

    want = [d.index for d in reranker.rerank(QUERY, DOCS)]
    v1 = cohere.Client(api_key="unused", base_url=served).rerank(query=QUERY, documents=DOCS, model="any", top_n=2,
                                                                  return_documents=True)
    assert [r.index for r in v1.results] == want[:2] and v1.results[0].document.text == DOCS[want[0]]
    assert v1.id and v1.meta.api_version.version == "1"
    v2 = cohere.ClientV2(api_key="unused", base_url=served).rerank(model="any", query=QUERY, documents=DOCS)
    assert [r.index for r in v2.results] == want and v2.meta.billed_units.search_units == 1
    assert [r.relevance_score for r in v2.results] == pytest.approx([d.score for d in reranker.rerank(QUERY, DOCS)],
                                                                    abs=1e-5)


def test_cohere_v1_object_documents_with_rank_fields(served, reranker):
    """Cohere v1 ranks object documents by ``rank_fields`` (in their order) and returns the objects whole; they
    were refused with 422. The ranked text is each present field as a "field: value" line."""
    import cohere

    docs = [{"title": f"문서 {i}", "body": d, "id": i} for i, d in enumerate(DOCS)]
    texts = [f"title: 문서 {i}\nbody: {d}" for i, d in enumerate(DOCS)]
    v1 = cohere.Client(api_key="unused", base_url=served).rerank(query=QUERY, documents=docs, model="any",
                                                                  rank_fields=["title", "body"], return_documents=True)
    want = reranker.rerank(QUERY, texts)
    assert [r.index for r in v1.results] == [d.index for d in want]
    assert [r.relevance_score for r in v1.results] == pytest.approx([d.score for d in want], abs=1e-5)
    import httpx

    raw = httpx.post(f"{served}/v1/rerank", json={"query": QUERY, "documents": docs, "rank_fields": ["body"],
                                                  "return_documents": True, "top_n": 1}).json()
    assert raw["results"][0]["document"] == docs[raw["results"][0]["index"]]
    for body, says in (({"rank_fields": ["nope"]}, "none of the rank_fields"), ({"rank_fields": []}, "non-empty list"),
                       ({}, "or name the fields to rank")):
        bad = httpx.post(f"{served}/v1/rerank", json={"query": QUERY, "documents": docs, **body})
        assert bad.status_code == 422 and says in bad.json()["detail"]


def test_langchain_cohere_and_llama_index_cohere_rerank_unchanged(served, reranker):
    from langchain_cohere import CohereRerank as LangChainCohere
    from langchain_core.documents import Document
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
    from llama_index.postprocessor.cohere_rerank import CohereRerank as LlamaCohere

    want = [DOCS[d.index] for d in reranker.rerank(QUERY, DOCS)]
    lc = LangChainCohere(cohere_api_key="unused", base_url=served, model="any", top_n=2)
    got = lc.compress_documents([Document(page_content=t) for t in DOCS], QUERY)
    assert [d.page_content for d in got] == want[:2] and 0 <= got[0].metadata["relevance_score"] <= 1
    li = LlamaCohere(api_key="unused", base_url=served, model="any", top_n=2)
    nodes = li.postprocess_nodes([NodeWithScore(node=TextNode(text=t), score=1.0) for t in DOCS], QueryBundle(QUERY))
    assert [n.node.get_content() for n in nodes] == want[:2]


def test_v2_shape_info_usage_empty_texts_and_the_documented_shapes(client, reranker):
    """An empty document is scored, as in-process (a low score, not a 422); Jina's usage counts tokens;
    TEI's /info describes the model; /openapi.json documents every request shape."""
    in_process = reranker.score(QUERY, [DOCS[0], ""])
    body = client.post("/v2/rerank", json={"model": "x", "query": QUERY, "documents": [DOCS[0], ""],
                                           "max_tokens_per_doc": 512}).json()
    assert {r["index"]: r["relevance_score"] for r in body["results"]} == pytest.approx(dict(enumerate(in_process)))
    assert body["meta"]["api_version"]["version"] == "2" and "document" not in body["results"][0]
    tei = client.post("/rerank", json={"query": QUERY, "texts": ["", DOCS[1]]}).json()
    assert sorted(r["index"] for r in tei) == [0, 1]
    v1 = client.post("/rerank", json={"query": QUERY, "documents": DOCS}).json()
    tokenizer = reranker._tokenizer
    query_tokens = len(tokenizer(QUERY, add_special_tokens=False)["input_ids"])
    assert v1["usage"]["total_tokens"] == sum(query_tokens + len(tokenizer(d, add_special_tokens=False)["input_ids"])
                                              for d in DOCS)
    info = client.get("/info").json()
    assert info["max_input_length"] == reranker.max_length and info["max_client_batch_size"] == 5
    spec = client.get("/openapi.json").json()
    v2 = spec["paths"]["/v2/rerank"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"query", "documents", "top_n", "max_tokens_per_doc"} <= set(v2["properties"])
    v1_body = spec["paths"]["/v1/rerank"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"documents", "texts", "raw_scores", "return_documents"} <= set(v1_body["properties"])
    assert {"TextObject", "RerankResponse", "CohereV2Response"} <= set(spec["components"]["schemas"])
    assert client.post("/v2/rerank", json={"query": QUERY, "documents": DOCS, "top_n": 0}).status_code == 422


def test_serve_binds_before_announcing_and_a_bad_or_busy_port_exits_1(tiny_ce, capsys):
    import socket

    from rag_rerank import cli

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert cli.main(["serve", "--reranker", str(tiny_ce), "--listen", f"127.0.0.1:{port}"]) == 1
    err = capsys.readouterr()
    assert f"cannot listen on 127.0.0.1:{port}" in err.err and "rag-rerank serve:" not in err.out
    assert cli.main(["serve", "--reranker", str(tiny_ce), "--listen", "127.0.0.1:70000"]) == 1
    assert "a port is 1-65535" in capsys.readouterr().err
    # --port is the Chroma server's (with --host): alone it did nothing, and `serve --port 9000` listened on 8080
    assert cli.main(["serve", "--reranker", str(tiny_ce), "--port", "9000"]) == 2
    err = capsys.readouterr().err
    assert "--port 9000 is the Chroma server's port and needs --host" in err and "--listen 127.0.0.1:9000" in err


@pytest.mark.slow
@pytest.mark.parametrize("processes", [[], ["--workers", "2", "--scorer", "shared"]], ids=["one-process", "shared"])
def test_sigterm_drains_requests_in_flight(tiny_ce, unused_port, processes):
    """SIGTERM under load: the service stops taking connections, finishes what it holds (0 failed), then exits -
    with --scorer shared too, where the workers' requests are scored in the process that got the signal (it
    keeps scoring until its workers have drained)."""
    import signal

    import httpx

    with _serve_process(tiny_ce, unused_port, "--max-documents", "2000", *processes) as proc:
        assert "rag-rerank serve:" in proc.stdout.readline()  # announced once bound: answers from here on
        url = f"http://127.0.0.1:{unused_port}"
        _wait_healthy(url, tries=300, timeout=2)  # workers answer once they have started
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200
        docs = [f"{DOCS[i % 3]} {i}번째 문단은 조금 더 길게 이어진다." for i in range(600)]  # ~1-2 s a request here
        results: list = []

        def ask():
            try:
                results.append(httpx.post(f"{url}/v1/rerank", json={"query": QUERY, "documents": docs},
                                          timeout=120).status_code)
            except httpx.HTTPError as exc:
                results.append(repr(exc))

        threads = [threading.Thread(target=ask) for _ in range(6)]
        for t in threads:
            t.start()
        time.sleep(1.0)  # every request sent and held by the service
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(timeout=180)
        assert results == [200] * 6
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once drained


@pytest.mark.slow
@pytest.mark.parametrize("scorer", ["per-worker", "shared"])
def test_workers_share_one_port(tiny_ce, unused_port, reranker, scorer):
    """--workers 2: two processes answer on the one port, each with its model
    (per-worker) or both through the serve process's one model (shared); the scores are the model's, and
    SIGTERM stops the lot."""
    import signal

    import httpx

    with _serve_process(tiny_ce, unused_port, "--workers", "2", "--scorer", scorer) as proc:
        announced = proc.stdout.readline()
        assert "2 workers" in announced and ("one shared Reranker(" in announced) == (scorer == "shared")
        url = f"http://127.0.0.1:{unused_port}"
        _wait_healthy(url, tries=300, timeout=2)
        answers = [httpx.post(f"{url}/v2/rerank", json={"query": QUERY, "documents": DOCS}, timeout=60)
                   for _ in range(8)]
        assert [a.status_code for a in answers] == [200] * 8
        want = reranker.score(QUERY, DOCS)
        for a in answers:
            got = {x["index"]: x["relevance_score"] for x in a.json()["results"]}
            assert got == pytest.approx(dict(enumerate(want)), abs=1e-5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)


@pytest.mark.slow
def test_workers_take_even_shares_of_new_connections(tiny_ce, unused_port):
    """--workers 4 on Linux: a listening socket a worker (SO_REUSEPORT), so 32 connections opened at once spread
    over the workers. With one shared socket the first worker woken accepted nearly all of them (42 / 16 / 6 / 0
    of 64), and keep-alive kept them there."""
    import signal

    from rag_rerank.serve import balanced_accept

    with _serve_process(tiny_ce, unused_port, "--workers", "4", "--device", "cpu") as proc:
        assert "4 workers" in proc.stdout.readline()  # announced once every worker listens
        url = f"http://127.0.0.1:{unused_port}"
        _wait_healthy(url, tries=300, timeout=2)
        time.sleep(2)  # every worker's app loaded (a worker still loading would only answer later)

        async def health() -> int:
            reader, writer = await asyncio.open_connection("127.0.0.1", unused_port)
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            body = (await asyncio.wait_for(reader.read(), 60)).split(b"\r\n\r\n", 1)[1]
            writer.close()
            return json.loads(body)["pid"]

        async def many():
            return await asyncio.gather(*[health() for _ in range(32)])

        pids = asyncio.run(many())
        shares = sorted((pids.count(p) for p in set(pids)), reverse=True)
        assert sum(shares) == 32
        if balanced_accept():  # Linux; elsewhere the workers share one socket as before
            assert len(shares) >= 3 and shares[0] <= 20, shares  # even: 8 each; one worker taking most fails
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)


@pytest.mark.slow
def test_workers_that_cannot_load_their_model_stop_the_service_with_a_message(tiny_ce, unused_port, tmp_path):
    """Weights that do not load: each worker says why in one line, and after three early deaths the service exits 1
    naming the cause instead of restarting workers for ever; a model that is not there fails before any worker."""
    import shutil
    import subprocess
    import sys

    broken = tmp_path / "broken"
    shutil.copytree(tiny_ce, broken)
    for weights in broken.glob("*.safetensors"):
        weights.write_bytes(b"not weights")
    args = [sys.executable, "-m", "rag_rerank.cli", "serve", "--listen", f"127.0.0.1:{unused_port}", "--workers", "2",
            "--device", "cpu"]
    out = subprocess.run(args + ["--reranker", str(broken)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    assert "keep exiting as they start" in out.stderr and "the weights could not be loaded" in out.stderr
    assert "Traceback" not in out.stderr
    out = subprocess.run(args + ["--reranker", str(tmp_path / "none")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "does not exist" in out.stderr and "serve worker" not in out.stderr


def test_a_port_held_by_a_running_service_is_busy_for_another(unused_port):
    """The per-worker reservation takes no connections itself, and while workers listen beside it, a second
    service on the port (with or without workers) is refused, not joined to the first's group."""
    import socket

    from rag_rerank.serve import balanced_accept, listen

    first = listen("127.0.0.1", unused_port, per_worker=True)
    worker = None
    try:
        if balanced_accept():
            assert first.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
            assert not first.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)  # bound, not listening
            worker = socket.socket()
            worker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            worker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            worker.bind(first.getsockname())
            worker.listen(8)
        for per_worker in (True, False):
            with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{unused_port}"):
                listen("127.0.0.1", unused_port, per_worker=per_worker)
    finally:
        first.close()
        if worker is not None:
            worker.close()


def test_limits_are_enforced_while_reading_and_stalled_bodies_time_out(reranker):
    """A chunked body (no length) past the limit is refused once the limit is crossed, not read whole; a
    body that stops arriving gets 408; deeply nested JSON is a 422, not a 500."""
    import socket

    import uvicorn

    sent = []

    def chunks():
        for _ in range(50):
            sent.append(1)
            yield b"x" * 1000

    limits = Limits(max_documents=5, max_document_chars=200, max_body_bytes=4000, read_timeout_s=0.5)
    with TestClient(create_app(reranker, limits=limits)) as c:
        r = c.post("/rerank", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and "limit is 4000" in r.json()["detail"]
        r = c.post("/rerank", content=b"[" * 3000 + b"]" * 3000, headers={"content-type": "application/json"})
        assert r.status_code in (413, 422)
    with TestClient(create_app(reranker)) as c:
        r = c.post("/rerank", content=b"[" * 100_000 + b"]" * 100_000, headers={"content-type": "application/json"})
        assert r.status_code == 422 and "nested too deeply" in r.json()["detail"]
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = uvicorn.Server(uvicorn.Config(create_app(reranker, limits=limits), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"POST /rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{\"query\":")  # then nothing more
            answer = conn.recv(4096).decode()
        assert answer.startswith("HTTP/1.1 408") and "stopped arriving" in answer
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:  # chunked: no length to check
            conn.sendall(b"POST /rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")
            for _ in range(5):  # 5,000 bytes sent, the body not finished: the answer comes before the end
                conn.sendall(b"3e8\r\n" + b"x" * 1000 + b"\r\n")
            answer = conn.recv(4096).decode()
        assert answer.startswith("HTTP/1.1 413") and "limit is 4000" in answer
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_a_dead_scoring_worker_is_reported_not_hidden(reranker, monkeypatch):
    def broken(self):
        raise RuntimeError("worker broke")

    monkeypatch.setattr(MicroBatcher, "_loop", broken)
    with TestClient(create_app(reranker)) as c:
        for _ in range(100):
            if c.get("/health").status_code == 503:
                break
            time.sleep(0.02)
        health = c.get("/health")
        assert health.status_code == 503 and "worker broke" in health.json()["detail"]
        r = c.post("/rerank", json={"query": QUERY, "documents": DOCS})
        assert r.status_code == 500 and "scoring worker has stopped" in r.json()["detail"]


def test_a_served_app_leaves_its_startup_heap_out_of_the_collector(tiny_ce, unused_port, monkeypatch):
    """gc.freeze once the model and app exist, in serve() and in every --workers process: left in the
    collector's view, each full collection walks them with the event loop stopped (50-74 ms: the ~90 ms p99 of
    the closed-loop rows)."""
    import gc

    import uvicorn

    from rag_rerank import cli
    from rag_rerank import serve as serving

    serving.freeze_heap()
    try:
        assert gc.get_freeze_count() > 1000
    finally:
        gc.unfreeze()
    calls = []
    monkeypatch.setattr(serving, "freeze_heap", lambda: calls.append("frozen"))
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: calls.append("serving"))
    serving.serve(Reranker(str(tiny_ce)), port=unused_port)
    assert calls == ["frozen", "serving"]  # before the first request
    monkeypatch.setenv("RAG_RERANK_SERVE_ARGV", json.dumps(["serve", "--reranker", str(tiny_ce), "--device", "cpu"]))
    assert cli.worker_app() is not None and calls[-1] == "frozen"
