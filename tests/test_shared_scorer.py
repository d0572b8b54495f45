"""serve --scorer shared: one model in the serve process, workers reaching it over a Unix socket (tiny models)."""
from __future__ import annotations

import threading

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from rag_rerank import Reranker  # noqa: E402
from rag_rerank.serve import create_app  # noqa: E402
from rag_rerank.serve import SCORER_ENV, RemoteReranker, ScorerHost  # noqa: E402

QUERY = "한글은 누가 만들었나요?"
DOCS = ["세종대왕이 훈민정음을 창제했다.", "김치는 발효 음식이다.", "서울은 한국의 수도이다.", ""]


@pytest.fixture(scope="module")
def reranker(tiny_ce):
    return Reranker(str(tiny_ce), batch_size=8, max_length=64)


@pytest.fixture()
def host(reranker):
    with ScorerHost(reranker) as h:
        yield h


def test_remote_scores_are_the_rerankers(host, reranker):
    """Scores, logits, batches of several queries and the activation: as the Reranker answers in-process."""
    remote = RemoteReranker(host.address, host.authkey)
    try:
        assert remote.score(QUERY, DOCS) == pytest.approx(reranker.score(QUERY, DOCS), abs=1e-6)
        assert remote.score(QUERY, DOCS, raw=True) == pytest.approx(reranker.score(QUERY, DOCS, raw=True), abs=1e-6)
        queries, docs = [QUERY, "김치", "수도"], [DOCS, DOCS[1:2], DOCS[::-1]]
        got, want = remote.score_many(queries, docs), reranker.score_many(queries, docs)
        assert [pytest.approx(w, abs=1e-6) for w in want] == got
        assert remote.relevance([-2.0, 0.0, 3.0]) == pytest.approx(reranker.relevance([-2.0, 0.0, 3.0]))
        assert remote.model_name == reranker.model_name and remote.max_length == 64
        assert remote.engine.describe()["shared_scorer"] is True
    finally:
        remote.close()


def test_bad_input_is_refused_in_the_worker_with_the_rerankers_message(host, reranker):
    remote = RemoteReranker(host.address, host.authkey)
    try:
        for call in (lambda r: r.score_many("one query", [DOCS]), lambda r: r.score(QUERY, [1, 2]),
                     lambda r: r.score_many([QUERY], [DOCS, DOCS])):
            with pytest.raises((TypeError, ValueError)) as theirs:
                call(reranker)
            with pytest.raises(type(theirs.value)) as ours:
                call(remote)
            assert str(ours.value) == str(theirs.value)
    finally:
        remote.close()


def test_workers_batches_merge_in_the_host(host, reranker):
    """Two workers sending at once: every answer is its own request's, and the host's batcher puts
    messages of both into shared calls (its call count is below the messages sent)."""
    remotes = [RemoteReranker(host.address, host.authkey) for _ in range(2)]
    calls, real = [], reranker.launch_many

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    host.reranker.launch_many = counting  # the instance attribute shadows the method for the host's batcher
    failures, start = [], threading.Barrier(8)
    want = {i: reranker.score(f"질문 {i}", DOCS, raw=True) for i in range(8)}

    def client(i):
        start.wait()
        for _ in range(10):
            got = remotes[i % 2].score(f"질문 {i}", DOCS, raw=True)
            if got != pytest.approx(want[i], abs=1e-6):
                failures.append((i, got))

    try:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        [t.start() for t in threads]
        [t.join(60) for t in threads]
        assert not failures
        assert 0 < len(calls) < 80
    finally:
        del host.reranker.launch_many
        [r.close() for r in remotes]


def test_a_scoring_error_reaches_the_worker_with_its_message(host):
    remote = RemoteReranker(host.address, host.authkey)

    def broken(*a, **k):
        raise FloatingPointError("tiny gave non-finite logits in torch.float16")

    host.reranker.launch_many = broken
    try:
        with pytest.raises(FloatingPointError, match="non-finite logits"):
            remote.score(QUERY, DOCS)
        del host.reranker.launch_many
        assert remote.score(QUERY, DOCS)  # the host lives on
    finally:
        host.reranker.__dict__.pop("launch_many", None)
        remote.close()


def test_a_host_gone_fails_waiting_requests_and_health(reranker):
    """The serve process stopping: requests waiting and new ones fail naming the scorer, /health is 503."""
    host = ScorerHost(reranker)
    remote = RemoteReranker(host.address, host.authkey)
    gate = threading.Event()
    real = reranker.launch_many
    reranker.launch_many = lambda *a, **k: (gate.wait(10), real(*a, **k))[1]
    try:
        waiting = remote.launch_many([QUERY], [DOCS])
        host.close()
        gate.set()
        with pytest.raises(RuntimeError, match="shared scorer .* closed the connection"):
            waiting()
        with pytest.raises(RuntimeError, match="shared scorer"):
            remote.score(QUERY, DOCS)
        with TestClient(create_app(remote)) as c:
            r = c.get("/health")
            assert r.status_code == 503 and "shared scorer" in r.json()["detail"]
    finally:
        del reranker.launch_many
        remote.close()


def test_the_app_over_a_remote_reranker_answers_as_over_the_local_one(host, reranker):
    remote = RemoteReranker(host.address, host.authkey)
    try:
        with TestClient(create_app(reranker)) as local, TestClient(create_app(remote)) as shared:
            for path, body in (("/v1/rerank", {"query": QUERY, "documents": DOCS, "top_n": 2}),
                               ("/v2/rerank", {"query": QUERY, "documents": DOCS}),
                               ("/rerank", {"query": QUERY, "texts": DOCS, "raw_scores": True})):
                a, b = local.post(path, json=body), shared.post(path, json=body)
                assert a.status_code == b.status_code == 200
                strip = (lambda j: j["results"]) if isinstance(a.json(), dict) else (lambda j: j)
                assert [x["index"] for x in strip(a.json())] == [x["index"] for x in strip(b.json())]
            assert shared.get("/health").json()["status"] == "ok"
            assert shared.get("/info").json()["model_id"] == reranker.model_name
            assert "rag_rerank_cuda_graphs 0.0" in shared.get("/metrics").text
    finally:
        remote.close()


def test_a_wrong_key_or_no_host_is_a_clear_connection_error(host, tmp_path, monkeypatch):
    with pytest.raises(ConnectionError, match="refused this worker"):
        RemoteReranker(host.address, b"not the key")
    with pytest.raises(ConnectionError, match="no shared scorer at"):
        RemoteReranker(str(tmp_path / "none.sock"), b"k", timeout=0.2)
    monkeypatch.delenv(SCORER_ENV, raising=False)
    with pytest.raises(ConnectionError, match=SCORER_ENV):
        RemoteReranker.from_environ()


def test_search_through_a_shared_scorer_answers_as_the_local_reranker(host, reranker, tmp_path, tiny_encoder):
    """/search in a worker of --scorer shared: the two-stage pipeline (its model settings read from the host's
    model directory) ranks as over the local reranker."""
    from rag_rerank.retrieval.store import ChromaStore

    store = ChromaStore(tmp_path / "store", "shared-search", encoder=str(tiny_encoder))
    store.add(DOCS[:3] + ["훈민정음은 1443년에 만들어졌다.", "부산은 항구 도시이다."])
    remote = RemoteReranker(host.address, host.authkey)
    options = {"candidate_k": 4, "top_n": 3}
    try:
        with TestClient(create_app(reranker, store=store, retriever_options=options)) as local, \
                TestClient(create_app(remote, store=store, retriever_options=options)) as shared:
            a = local.post("/search", json={"query": QUERY}).json()["results"]
            b = shared.post("/search", json={"query": QUERY}).json()["results"]
        assert [h["id"] for h in a] == [h["id"] for h in b] and len(a) == 3
        assert [h["rerank_score"] for h in a] == pytest.approx([h["rerank_score"] for h in b], abs=1e-6)
    finally:
        remote.close()
