"""rag-rerank serve: every endpoint, both request shapes, auth, limits, micro-batching (tiny models)."""
from __future__ import annotations

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
    ({"query": QUERY, "documents": ["  "]}, 422, "'documents[0]' is empty"),
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
    r = client.post("/search", json={"query": QUERY})
    assert r.status_code == 404 and "without a store" in r.json()["detail"]


def test_bearer_token(reranker):
    with TestClient(create_app(reranker, api_key="s3cret")) as c:
        body = {"query": QUERY, "documents": DOCS}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
            r = c.post("/rerank", json=body, headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert c.get("/metrics").status_code == 401
        assert c.get("/health").status_code == 200  # balancers probe it without credentials
        assert c.post("/rerank", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_search_over_a_store(reranker, tmp_path, tiny_encoder):
    from rag_rerank.store import ChromaStore

    store = ChromaStore(tmp_path / "store", "serve-test", encoder=str(tiny_encoder))
    store.add(DOCS + ["훈민정음은 1443년에 만들어졌다."])
    with TestClient(create_app(reranker, store=store, retriever_options={"candidate_k": 4, "top_n": 2})) as c:
        hits = c.post("/search", json={"query": QUERY}).json()["results"]
        assert len(hits) == 2 and {"id", "text", "score", "rerank_score", "first_stage_score"} <= set(hits[0])
        assert len(c.post("/search", json={"query": QUERY, "top_n": 1}).json()["results"]) == 1
        assert c.post("/search", json={"query": QUERY, "where": "x"}).status_code == 422


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


def test_serve_command_answers_over_http(tiny_ce, unused_port):
    """The console command's path: the CLI parses, loads, and uvicorn serves on loopback."""
    import httpx

    from rag_rerank import cli

    thread = threading.Thread(target=cli.main, args=(["serve", "--reranker", str(tiny_ce), "--listen",
                                                     f"127.0.0.1:{unused_port}", "--api-key", "k"],), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{unused_port}"
    for _ in range(100):
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    r = httpx.post(f"{url}/v1/rerank", json={"query": QUERY, "documents": DOCS},
                   headers={"Authorization": "Bearer k"}, timeout=30)
    assert r.status_code == 200 and len(r.json()["results"]) == 3
