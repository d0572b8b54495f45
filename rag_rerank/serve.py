"""``rag-rerank serve``: an HTTP rerank service (FastAPI + uvicorn).

One model is loaded at start; the service keeps no state between requests, so replicas go behind
any HTTP balancer. Endpoints:

* ``POST /rerank`` and ``POST /v1/rerank``, two request shapes told apart by the body:
  Cohere v1 / Jina (``query``, ``documents`` as strings or ``{"text": ...}`` objects, ``top_n``,
  ``return_documents``) -> ``{"id", "model", "results": [{"index", "relevance_score", "document"?}],
  "usage": {"total_tokens"}, "meta"}``; TEI (``query``, ``texts``, ``raw_scores``, ``return_text``)
  -> ``[{"index", "score", "text"?}]``. ``POST /v2/rerank``: Cohere v2 (what cohere's ``ClientV2``,
  langchain-cohere and LlamaIndex's ``CohereRerank`` call) -> ``{"id", "results": [{"index",
  "relevance_score"}], "meta"}``. All best first. Scores are the reranker's: plain reranking of what
  the request gives (``relevance_score`` in [0, 1]; TEI's ``raw_scores`` the logits). An empty
  document is scored like any other, as in-process (it gets a low score), never a 422.
* ``GET /info``: TEI's model description (model id, dtype, max input length, batch limits).
* ``POST /search`` over a store opened at start (``--store``): the two-stage pipeline with
  :class:`~rag_rerank.pipeline.TwoStageRetriever`'s defaults (hybrid first stage, top 50, the
  model's fusion), ``{"query", "top_n"?, "where"?}`` -> ``{"results": [hit...]}``.
* ``GET /health``; ``GET /metrics`` (Prometheus text format).

``--workers N`` runs N HTTP processes on one port (on Linux a listening socket each, ``SO_REUSEPORT``, so new
connections spread over them: :func:`serve_workers`), each with a model copy or, with ``--scorer shared``, all
scoring through one model in the serve command's process (:class:`ScorerHost`, end of this module).

Concurrent requests are micro-batched: a worker thread takes every request waiting (up to
``max_wait_ms`` after the first, at most ``max_batch_pairs`` pairs) and scores them in one
``score_many`` call, so passes are fuller under load. Errors are JSON ``{"detail": ...}``:
422 for a malformed body (naming the field and row), 413 over the limits, 401 without the
bearer token when one is set, 404 for ``/search`` with no store.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import itertools
import json
import logging
import os
import queue
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Sequence

# at module level, not in create_app: FastAPI resolves the routes' (string) annotations in this namespace
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from .types import activate, check_groups, check_query, check_unicode

__all__ = ["Limits", "MicroBatcher", "RemoteReranker", "SCORER_ENV", "ScorerHost", "create_app", "listen", "serve",
           "serve_workers"]

API_KEY_ENV = "RAG_RERANK_API_KEY"
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """Request limits: past them a request gets 413 before any model work.

    The defaults fit a chatbot backend's reranking call with room to spare (a RAG request reranks
    tens of passages of a few thousand characters) while keeping one request from holding the
    model for long: 1,000 documents of 512 tokens are ~10 s on a GPU, minutes on a CPU."""

    max_documents: int = 1000
    max_document_chars: int = 20_000
    max_query_chars: int = 4_000
    max_body_bytes: int = 16 * 1024 * 1024
    read_timeout_s: float = 30.0  # a body that stops arriving for this long gets 408

    def __post_init__(self) -> None:
        from .types import check_int, check_number

        for name in ("max_documents", "max_document_chars", "max_query_chars", "max_body_bytes"):
            check_int(getattr(self, name), name, minimum=1)
        check_number(self.read_timeout_s, "read_timeout_s", 0, 3600, low_open=True)


class RequestError(ValueError):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


class MicroBatcher:
    """Scores (query, documents) requests from many threads in shared ``score_many`` calls.

    ``max_wait_ms`` bounds how long the first request of a batch waits for company (0: each
    request is scored on its own, as it arrives); ``max_batch_pairs`` how many pairs one call takes.
    """

    def __init__(self, reranker, max_wait_ms: float = 5.0, max_batch_pairs: int = 2048, metrics=None) -> None:
        from .types import check_int, check_number

        max_wait_ms = check_number(max_wait_ms, "max_wait_ms", 0, 10_000)
        max_batch_pairs = check_int(max_batch_pairs, "max_batch_pairs", minimum=1)
        self.reranker, self.max_wait, self.max_pairs = reranker, max_wait_ms / 1000, max_batch_pairs
        self.metrics = metrics
        self.error: BaseException | None = None  # what stopped the worker, if anything did
        self._queue: queue.Queue = queue.Queue()
        self._in_flight: collections.deque = collections.deque()  # (batch, scores getter): launched, not collected
        self._worker = threading.Thread(target=self._run, name="rag-rerank-batcher", daemon=True)
        self._worker.start()

    @property
    def alive(self) -> bool:
        return self._worker.is_alive() and self.error is None

    def submit(self, query: str, docs: Sequence[str]) -> Future:
        """A future of the documents' raw logits, in input order."""
        future: Future = Future()
        if not self.alive:
            future.set_exception(self._stopped())
            return future
        self._queue.put((query, list(docs), future))
        return future

    def submit_async(self, query: str, docs: Sequence[str]) -> asyncio.Future:
        """The same from a running event loop, as an asyncio future: a batch's results reach their loop in
        one hand-off (``call_soon_threadsafe`` once a batch, not once a request as wrapped thread futures
        would; profiled: wrapping was an eighth of a small request's time on the event loop)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self.alive:
            future.set_exception(self._stopped())
            return future
        self._queue.put((query, list(docs), (loop, future)))
        return future

    @staticmethod
    def _settle(outcomes) -> None:
        """(future, values, error) of requests: thread futures set here, asyncio futures on their loop."""
        loops: dict = {}
        for target, values, error in outcomes:
            if isinstance(target, Future):
                _resolve([(target, values, error)])
            else:
                loops.setdefault(target[0], []).append((target[1], values, error))
        for loop, items in loops.items():
            with contextlib.suppress(RuntimeError):  # a loop already closed: nobody is waiting
                loop.call_soon_threadsafe(_resolve, items)

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join(timeout=10)

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # never silently: health reports it and every waiting request fails
            self.error = exc
            logger.exception("the scoring worker stopped")
            waiting = [item for batch, _ in self._in_flight for item in batch]  # launched, not yet answered
            self._in_flight.clear()
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    waiting.append(item)
            self._settle([(target, None, self._stopped()) for _, _, target in waiting])

    def _stopped(self) -> RuntimeError:
        return RuntimeError(f"the scoring worker has stopped ({self.error!r})")

    def _loop(self) -> None:
        """One batch in flight on the device while the next is gathered and launched: batch k+1 is
        tokenised and queued behind batch k before the host waits for k's scores, so a GPU goes from one
        batch to the next without waiting for the host (``launch_many`` of a reranker whose launches are
        ``asynchronous``; any other - a CPU backend computes as it launches - scores each batch whole, or
        batch k's answers would wait for batch k+1's work). With nothing queued, the batch in flight is
        finished first (no added latency)."""
        while True:
            if self._in_flight and self._queue.empty():
                self._finish()
            first = self._queue.get()
            if first is None:
                while self._in_flight:
                    self._finish()
                return
            # while a batch runs, take what is queued and no more: the device time is the wait
            batch = self._gather(first, 0.0 if self._in_flight else self.max_wait)
            launched = self._launch(batch)
            if launched is not None:
                self._in_flight.append(launched)
            # on a device, the older batch is answered while the new one runs; elsewhere the new one was
            # scored as it launched and is answered now
            while len(self._in_flight) > (1 if self._overlaps else 0):
                self._finish()

    @property
    def _overlaps(self) -> bool:
        """Whether the reranker's launches return before its scores exist (then batches overlap)."""
        return bool(getattr(self.reranker, "asynchronous", False))

    def _gather(self, first, wait: float) -> list:
        batch, pairs = [first], len(first[1])
        deadline = time.monotonic() + wait
        while pairs < self.max_pairs:
            left = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # let the outer loop stop after this batch
                break
            batch.append(item)
            pairs += len(item[1])
        return batch

    def _launch(self, batch):
        """(batch, scores getter), or None where launching failed (its requests are told)."""
        queries, docs = [q for q, _, _ in batch], [d for _, d, _ in batch]
        try:
            if self._overlaps:
                return batch, self.reranker.launch_many(queries, docs, raw=True)
            scores = self.reranker.score_many(queries, docs, raw=True)
            return batch, lambda: scores
        except Exception as exc:  # every waiting request learns of it; the worker lives on
            self._settle([(future, None, exc) for _, _, future in batch])
            return None

    def _finish(self) -> None:
        """The oldest batch in flight collected and its requests answered (it leaves the list after: should
        the worker stop meanwhile, ``_run`` answers it)."""
        batch, scores = self._in_flight[0]
        try:
            scores = scores()
        except Exception as exc:
            self._settle([(future, None, exc) for _, _, future in batch])
        else:
            if self.metrics is not None:
                self.metrics.batched(len(batch), sum(len(d) for _, d, _ in batch))
            self._settle([(future, values, None) for (_, _, future), values in zip(batch, scores)])
        self._in_flight.popleft()


def _resolve(items) -> None:
    """(future, values, error): each future answered unless it is already (an asyncio request cancelled
    meanwhile, its client gone; a request a stopping worker answered)."""
    for future, values, error in items:
        if not future.done():
            future.set_exception(error) if error is not None else future.set_result(values)


class _Metrics:
    """The service's Prometheus metrics, in a registry of its own (two apps in one process, as in
    tests, do not collide)."""

    def __init__(self, reranker=None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("rag_rerank_requests", "HTTP requests", ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("rag_rerank_request_seconds", "request latency", ["endpoint"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.pairs = Counter("rag_rerank_pairs_scored", "(query, document) pairs scored", registry=self.registry)
        self.batch = Histogram("rag_rerank_batch_requests", "requests sharing one scoring call",
                               registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        # a GPU engine records one CUDA graph a new pass shape, the passes behind it waiting (tens of ms once a
        # shape and worker): a count still rising under load says latency is paying for recordings
        self.graphs = Gauge("rag_rerank_cuda_graphs", "CUDA graphs recorded (one a pass shape)", registry=self.registry)
        self.graphs.set_function(lambda: _graphs_recorded(reranker))

    def batched(self, requests: int, pairs: int) -> None:
        self.batch.observe(requests)
        self.pairs.inc(pairs)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _graphs_recorded(reranker) -> int:
    """The engine's own count (``describe()``: None where passes replay no graphs)."""
    engine = getattr(reranker, "engine", None)
    return (engine.describe().get("cuda_graphs") or 0) if engine is not None else 0


# ----------------------------------------------------------------- request parsing
def _field(body: dict, name: str, kind, default=None, required: bool = False):
    if name not in body or body[name] is None:
        if required:
            raise RequestError(422, f"'{name}' is required")
        return default
    value = body[name]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise RequestError(422, f"'{name}' must be an integer, got {type(value).__name__}")
    if kind is not int and not isinstance(value, kind):
        raise RequestError(422, f"'{name}' must be {getattr(kind, '__name__', kind)}, got {type(value).__name__}")
    return value


def _query(body: dict, limits: Limits) -> str:
    query = _field(body, "query", str, required=True)
    if len(query) > limits.max_query_chars:
        raise RequestError(413, f"'query' has {len(query)} characters; the limit is {limits.max_query_chars}")
    try:
        return check_query(query)  # also refuses lone surrogates, which JSON may carry ("\\ud800")
    except (TypeError, ValueError) as exc:
        raise RequestError(422, f"'query': {exc}") from None


def _rank_fields(body: dict) -> list[str] | None:
    """Cohere v1's ``rank_fields``: which keys of an object document are ranked, in order."""
    fields = _field(body, "rank_fields", list)
    if fields is not None and (not fields or not all(isinstance(f, str) and f for f in fields)):
        raise RequestError(422, "'rank_fields' must be a non-empty list of field names")
    return fields


def _object_text(item: dict, fields: list[str] | None, where: str) -> str:
    """An object document's ranked text: its ``text``, or with ``rank_fields`` each field present as a
    "field: value" line in their order (the YAML-like form Cohere recommends for structured documents)."""
    if fields is None:
        if not isinstance(item.get("text"), str):
            raise RequestError(422, f"'{where}' must be a string or an object with a 'text' string "
                                    "(or name the fields to rank in 'rank_fields')")
        return item["text"]
    lines = []
    for f in fields:
        value = item.get(f)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if value is not None and not isinstance(value, str):
            raise RequestError(422, f"'{where}.{f}' must be a string or a number, got {type(value).__name__}")
        if value is not None:
            lines.append(f"{f}: {value}")
    if not lines:
        raise RequestError(422, f"'{where}' has none of the rank_fields {fields}")
    return "\n".join(lines)


def _texts(body: dict, name: str, limits: Limits) -> list[str]:
    items = _field(body, name, list, required=True)
    if len(items) > limits.max_documents:
        raise RequestError(413, f"'{name}' has {len(items)} items; the limit is {limits.max_documents} a request")
    fields = _rank_fields(body) if name == "documents" else None
    texts = []
    for i, item in enumerate(items):
        if isinstance(item, dict) and name == "documents":
            item = _object_text(item, fields, f"{name}[{i}]")
        if not isinstance(item, str):
            shape = "a string or an object with a 'text' string" if name == "documents" else "a string"
            raise RequestError(422, f"'{name}[{i}]' must be {shape}")
        if len(item) > limits.max_document_chars:
            raise RequestError(413, f"'{name}[{i}]' has {len(item)} characters; the limit is "
                                    f"{limits.max_document_chars}")
        try:
            check_unicode(item, f"'{name}[{i}]'")
        except ValueError as exc:
            raise RequestError(422, str(exc)) from None
        texts.append(item)
    return texts


def _top_n(body: dict, name: str = "top_n") -> int | None:
    top_n = _field(body, name, int)
    if top_n is not None and top_n < 1:
        raise RequestError(422, f"'{name}' must be >= 1, got {top_n}")
    return top_n


def _ranked(values: list[float]) -> list[int]:
    return sorted(range(len(values)), key=lambda i: (-values[i], i))


# ------------------------------------------------------------- shapes, for /docs and OpenAPI
# Bodies are parsed by hand above (errors name the field and the row); these models only describe
# the shapes, so FastAPI's /docs and /openapi.json show what each endpoint takes and returns.
from pydantic import BaseModel, Field  # noqa: E402


class TextObject(BaseModel):
    text: str


class RerankRequest(BaseModel):
    """Cohere v1 / Jina shape (``documents``) or TEI shape (``texts``): give one of the two."""

    query: str
    documents: list[str | TextObject | dict] | None = Field(
        None, description="Cohere v1 / Jina: the texts to rank (objects: their 'text', or the 'rank_fields')")
    rank_fields: list[str] | None = Field(None, description="Cohere v1: the fields of object documents ranked, as "
                                          "'field: value' lines in this order")
    top_n: int | None = Field(None, ge=1)
    return_documents: bool = False
    model: str | None = Field(None, description="accepted and ignored: the service serves one model")
    texts: list[str] | None = Field(None, description="TEI: the texts to rank")
    raw_scores: bool = Field(False, description="TEI: logits instead of [0, 1] relevance")
    return_text: bool = False
    truncate: bool | None = Field(None, description="TEI: accepted; long texts are windowed, never cut")


class CohereV2Request(BaseModel):
    query: str
    documents: list[str]
    top_n: int | None = Field(None, ge=1)
    model: str | None = Field(None, description="accepted and ignored: the service serves one model")
    max_tokens_per_doc: int | None = Field(None, description="accepted; long documents are windowed, never cut")


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: TextObject | None = None


class Usage(BaseModel):
    total_tokens: int


class RerankResponse(BaseModel):
    id: str
    model: str
    results: list[RerankResult]
    usage: Usage | None = None
    meta: dict


class CohereV2Result(BaseModel):
    index: int
    relevance_score: float


class CohereV2Response(BaseModel):
    id: str
    results: list[CohereV2Result]
    meta: dict


class TEIResult(BaseModel):
    index: int
    score: float
    text: str | None = None


class SearchRequest(BaseModel):
    query: str
    top_n: int | None = Field(None, ge=1)
    where: dict | None = Field(None, description="a Chroma metadata filter")


def _body(model: type[BaseModel]) -> dict:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema(
        ref_template="#/components/schemas/{model}")}}}}


def _meta(version: str) -> dict:
    return {"api_version": {"version": version}, "billed_units": {"search_units": 1}}


# ----------------------------------------------------------------------- the app
def create_app(reranker, *, store=None, limits: Limits | None = None, api_key: str | None = None,
               max_wait_ms: float = 5.0, max_batch_pairs: int = 2048, retriever_options: dict | None = None):
    """The FastAPI app serving ``reranker`` (a loaded :class:`~rag_rerank.Reranker`); with ``store``
    (a :class:`~rag_rerank.store.ChromaStore`) also ``/search``. ``max_wait_ms=0`` turns micro-batching off."""
    limits = limits or Limits()
    from .types import check_number

    if api_key is not None and (not isinstance(api_key, str) or not api_key.strip()):
        # an empty key (an unset variable) would have served everyone with no auth, silently
        raise ValueError("api_key is empty: give the key, or None for a service without auth")
    max_wait_ms = check_number(max_wait_ms, "max_wait_ms", 0, 10_000)
    metrics = _Metrics(reranker)
    batcher = MicroBatcher(reranker, max_wait_ms, max_batch_pairs, metrics) if max_wait_ms > 0 else None
    retriever = None
    if store is not None:
        from .retrieval.pipeline import TwoStageRetriever

        retriever = TwoStageRetriever(store, reranker, **(retriever_options or {}))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        if batcher is not None:
            batcher.close()

    from . import __version__

    app = FastAPI(title="rag-rerank", description="Korean reranking service", version=__version__, lifespan=lifespan)
    counter = _TokenCounter(reranker)

    async def scores(query: str, docs: list[str]) -> list[float]:
        if not docs:
            return []
        if batcher is not None:
            return await batcher.submit_async(query, docs)
        values = await asyncio.to_thread(reranker.score, query, docs, raw=True)
        metrics.batched(1, len(docs))
        return values

    async def read_json(request: Request) -> Any:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
            raise RequestError(413, f"the body has {declared} bytes; the limit is {limits.max_body_bytes}")
        # read as it arrives (chunked bodies declare no length): stop at the limit, and at a body that stalls
        chunks, size = [], 0
        stream = request.stream().__aiter__()
        while True:
            try:
                chunk = await _within(stream.__anext__(), limits.read_timeout_s)
            except StopAsyncIteration:
                break
            except asyncio.TimeoutError:
                raise RequestError(408, f"the body stopped arriving ({limits.read_timeout_s:g} s without data)") from None
            size += len(chunk)
            if size > limits.max_body_bytes:
                raise RequestError(413, f"the body has more than {limits.max_body_bytes} bytes; the limit is "
                                        f"{limits.max_body_bytes}")
            chunks.append(chunk)
        raw = b"".join(chunks)
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RequestError(422, f"the body is not JSON: {exc}") from None
        except RecursionError:
            raise RequestError(422, "the body is nested too deeply") from None
        if not isinstance(body, dict):
            raise RequestError(422, f"the body must be a JSON object, got {type(body).__name__}")
        return body

    async def rerank(request: Request):
        body = await read_json(request)
        if ("texts" in body) == ("documents" in body):
            raise RequestError(422, "give 'documents' (Cohere / Jina shape) or 'texts' (TEI shape), not both or neither")
        query = _query(body, limits)
        if "texts" in body:  # TEI
            texts = _texts(body, "texts", limits)
            raw, with_text = _field(body, "raw_scores", bool, False), _field(body, "return_text", bool, False)
            logits = await scores(query, texts)
            values = logits if raw else reranker.relevance(logits)
            return [{"index": i, "score": values[i], **({"text": texts[i]} if with_text else {})}
                    for i in _ranked(values)]
        docs = _texts(body, "documents", limits)
        top_n = _top_n(body)
        with_docs = _field(body, "return_documents", bool, False)  # Cohere's default
        values = reranker.relevance(await scores(query, docs))
        given = body["documents"]  # an object document comes back whole, as Cohere v1 returns it

        def document(i: int) -> dict:
            return given[i] if isinstance(given[i], dict) else {"text": docs[i]}

        results = [{"index": i, "relevance_score": values[i], **({"document": document(i)} if with_docs else {})}
                   for i in _ranked(values)[:top_n]]
        out = {"id": str(uuid.uuid4()), "model": reranker.model_name, "results": results,
               "meta": {**_meta("1"), "documents": len(docs)}}
        tokens = await counter.count(query, docs)
        if tokens is not None:
            out["usage"] = {"total_tokens": tokens}  # Jina's
        return out

    async def rerank_v2(request: Request):
        body = await read_json(request)
        query = _query(body, limits)
        docs = _texts(body, "documents", limits)
        top_n = _top_n(body)
        _top_n(body, "max_tokens_per_doc")  # checked, then windows do the rest
        values = reranker.relevance(await scores(query, docs))
        return {"id": str(uuid.uuid4()), "results": [{"index": i, "relevance_score": values[i]}
                                                    for i in _ranked(values)[:top_n]], "meta": _meta("2")}

    async def search(request: Request):
        if retriever is None:
            raise RequestError(404, "this service was started without a store (rag-rerank serve --store DIR)")
        body = await read_json(request)
        unknown = sorted(set(body) - set(SearchRequest.model_fields))
        if unknown:  # our own API: a limit spelled "k" or a "filter" was ignored and the whole top came back
            raise RequestError(422, f"unknown field(s) {', '.join(map(repr, unknown))}; /search takes "
                                    f"{', '.join(SearchRequest.model_fields)} (the number of results is 'top_n', "
                                    "the metadata filter 'where')")
        query = _query(body, limits)
        top_n = _top_n(body)
        where = _field(body, "where", dict)
        try:
            hits = await asyncio.to_thread(retriever.retrieve, query, top_n, where)
        except (TypeError, ValueError) as exc:  # a filter Chroma refuses, and the like: the caller's to fix
            raise RequestError(422, str(exc)) from None
        return {"results": [{"id": h.id, "text": h.text, "metadata": h.metadata, "score": h.score,
                             "rerank_score": h.rerank_score, "first_stage_score": h.first_stage_score,
                             "first_stage_rank": h.first_stage_rank} for h in hits]}

    def authorised(request: Request) -> bool:
        if not api_key:
            return True
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), api_key.encode())

    def endpoint(name: str, handler):
        async def run(request: Request):
            start = time.perf_counter()
            if not authorised(request):
                status, response = 401, JSONResponse({"detail": "missing or wrong bearer token"}, 401,
                                                     headers={"WWW-Authenticate": "Bearer"})
            else:
                try:
                    status, response = 200, JSONResponse(await handler(request))
                except RequestError as exc:
                    status, response = exc.status, JSONResponse({"detail": exc.detail}, exc.status)
                except Exception as exc:  # the server's fault (the model's numbers, a store failing): say what
                    logger.exception("%s failed", name)
                    status, response = 500, JSONResponse({"detail": f"{type(exc).__name__}: {exc}"}, 500)
            metrics.requests.labels(name, str(status)).inc()
            metrics.latency.labels(name).observe(time.perf_counter() - start)
            return response
        return run

    shapes = {200: {"content": {"application/json": {"schema": {"anyOf": [
        RerankResponse.model_json_schema(ref_template="#/components/schemas/{model}"),
        {"type": "array", "items": TEIResult.model_json_schema()}]}}}, "description": "best first"}}
    for path in ("/rerank", "/v1/rerank"):
        app.add_api_route(path, endpoint("rerank", rerank), methods=["POST"], openapi_extra=_body(RerankRequest),
                          responses=shapes, summary="Cohere v1 / Jina (documents) or TEI (texts) rerank")
    app.add_api_route("/v2/rerank", endpoint("rerank", rerank_v2), methods=["POST"], summary="Cohere v2 rerank",
                      openapi_extra=_body(CohereV2Request), responses={200: {"model": CohereV2Response}})
    app.add_api_route("/search", endpoint("search", search), methods=["POST"], openapi_extra=_body(SearchRequest),
                      summary="two-stage search over the store opened at start")
    _register_schemas(app, (TextObject, RerankResult, Usage, RerankResponse))  # what the schemas above refer to

    @app.get("/info")
    def info():
        """TEI's model description."""
        return {"model_id": reranker.model_name, "model_sha": None, "model_dtype": str(getattr(reranker, "dtype", "")),
                "model_type": {"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}},
                "max_concurrent_requests": 512, "max_input_length": int(getattr(reranker, "max_length", 512)),
                "max_batch_tokens": max_batch_pairs * int(getattr(reranker, "max_length", 512)),
                "max_client_batch_size": limits.max_documents, "tokenization_workers": None,
                "version": __version__, "backend": getattr(reranker, "backend", "torch")}

    @app.get("/health")
    def health():
        if batcher is not None and not batcher.alive:  # a balancer takes this replica out
            return JSONResponse({"status": "down", "detail": f"the scoring worker has stopped ({batcher.error!r})"},
                                503)
        if getattr(reranker, "error", None) is not None:  # a shared scorer out of reach (--scorer shared)
            return JSONResponse({"status": "down", "detail": str(reranker.error)}, 503)
        return {"status": "ok", "model": reranker.model_name, "device": str(reranker.device),
                "store": store is not None, "pid": os.getpid()}  # which process answered (one of --workers N)

    @app.get("/metrics")
    async def prometheus(request: Request):
        if not authorised(request):
            return JSONResponse({"detail": "missing or wrong bearer token"}, 401, headers={"WWW-Authenticate": "Bearer"})
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    return app


def _register_schemas(app, models) -> None:
    """Put ``models`` (and what they nest) into the app's OpenAPI components, where the hand-made
    request and response schemas of the routes refer to them."""
    original = app.openapi

    def openapi():
        if app.openapi_schema is None:
            schema = original()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in models:
                full = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(full.pop("$defs", {}))
                components.setdefault(model.__name__, full)
            for model in (RerankRequest, CohereV2Request, SearchRequest):
                components.update(model.model_json_schema(ref_template="#/components/schemas/{model}").get("$defs", {}))
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi


def freeze_heap() -> None:
    """Once the model and app are built: what exists now (torch, transformers, the model, FastAPI's objects -
    hundreds of thousands) leaves the collector's view (``gc.freeze``). Left in it, every full collection
    walks them all with the event loop stopped: 50-74 ms pauses, a few a minute under load, which were
    the ~90 ms p99 of every closed-loop row (measured with gc.callbacks on the --free server)."""
    import gc

    gc.collect()
    gc.freeze()


async def _within(awaitable, seconds: float):
    """``awaitable``'s result, or asyncio.TimeoutError after ``seconds``: ``asyncio.timeout`` where there is
    one (3.11), which wraps no task around the read (``wait_for`` made one a body chunk: a tenth of a small
    request's time on the event loop)."""
    if _TIMEOUT is None:
        return await asyncio.wait_for(awaitable, timeout=seconds)
    async with _TIMEOUT(seconds):
        return await awaitable


_TIMEOUT = getattr(asyncio, "timeout", None)


class _TokenCounter:
    """Tokens of a request (query + documents, the reranker's tokenizer) for Jina's ``usage``; an own
    tokenizer copy behind a lock (fast tokenizers are not thread-safe), off the event loop."""

    def __init__(self, reranker) -> None:
        self._tokenizer, self._lock, self._known = None, threading.Lock(), {}
        path = getattr(reranker, "path", None)
        if path is not None:
            try:
                from transformers import AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(str(path))
            except Exception as exc:  # no usage then, never a failed request
                logger.warning("no token counts for 'usage': %s", exc)
        # the Rust tokenizer text by text: the same ids at a third of the Python wrapper's cost, and it keeps
        # the GIL (a batch call releases it and then waits to get it back behind the other threads; profiled:
        # the wrapper's batch call was a third of a small request's time on the event loop)
        self._encode = getattr(getattr(self._tokenizer, "backend_tokenizer", None), "encode", None)

    _KEEP = 50_000  # documents whose counts are kept (a RAG service sees the same passages again and again)

    def _count(self, query: str, docs: list[str]) -> int:
        with self._lock:
            if self._encode is None:  # a slow (Python) tokenizer
                lengths = [len(x) for x in self._tokenizer([query, *docs], add_special_tokens=False)["input_ids"]]
                return lengths[0] * len(docs) + sum(lengths[1:])
            known = self._known
            if len(known) > self._KEEP:
                known.clear()
            total = 0
            for doc in docs:
                n = known.get(doc)
                if n is None:
                    n = known[doc] = len(self._encode(doc, add_special_tokens=False))
                total += n
            return len(self._encode(query, add_special_tokens=False)) * len(docs) + total

    async def count(self, query: str, docs: list[str]) -> int | None:
        if self._tokenizer is None:
            return None
        if len(query) + sum(map(len, docs)) <= 20_000:  # a chatbot-sized request: tens of microseconds, inline
            return self._count(query, docs)  # (a thread hop would cost more than the count)
        return await asyncio.to_thread(self._count, query, docs)


def balanced_accept() -> bool:
    """Whether each ``--workers`` process can listen on a socket of its own (Linux ``SO_REUSEPORT``: the kernel
    spreads new connections over the workers' sockets). Elsewhere the workers share one listening socket, and
    whichever is woken first accepts every connection waiting (asyncio accepts up to the backlog a wake): 64
    keep-alive connections opened at once landed 42 / 16 / 6 / 0 on 4 workers (BENCHMARKS.md, issue 36)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def listen(host: str, port: int, *, per_worker: bool = False):
    """A socket bound to ``host:port`` (and listening), or an OSError saying why not - a port out of
    range or taken fails here, before the service announces itself or loads a model.

    ``per_worker`` (with :func:`balanced_accept`): the port proved free, then held by a socket that is bound with
    ``SO_REUSEPORT`` and does not listen (it takes no connections); each worker of :func:`serve_workers` binds
    and listens on a socket of its own beside it."""
    if not 0 < port < 65536:
        raise OSError(f"cannot listen on {host}:{port}: a port is 1-65535")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)  # without SO_REUSEPORT: fails where anything listens there, a group of such sockets too
        if not (per_worker and balanced_accept()):
            sock.listen(2048)
            return sock
        address = sock.getsockname()
        sock.close()
        sock = _port_group_socket(family, address)
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def _port_group_socket(family, address):
    """A socket bound to ``address`` in its ``SO_REUSEPORT`` group: the reservation ``listen`` holds, and each
    worker's own listening socket."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def serve_workers(argv: list[str], sock, workers: int, announce: str | None = None,
                  drain_seconds: float = 30.0) -> None:
    """``workers`` processes serving on ``sock``'s address, each building its app from the serve command's
    ``argv`` (:func:`rag_rerank.cli.worker_app`). A worker that dies is restarted; SIGTERM / Ctrl-C stop every
    worker the way :func:`serve` stops (requests in flight finish, up to ``drain_seconds``).

    Where ``sock`` is a reservation from ``listen(..., per_worker=True)``, each worker listens on a socket of its
    own (``SO_REUSEPORT``, balanced by the kernel) and ``announce`` is printed once every worker listens;
    elsewhere the workers share ``sock`` under uvicorn's supervisor."""
    import uvicorn

    os.environ["RAG_RERANK_SERVE_ARGV"] = json.dumps(argv)
    if balanced_accept() and sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT):
        return _supervise(sock, workers, announce, drain_seconds)
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config("rag_rerank.cli:worker_app", factory=True, workers=workers, log_level="warning",
                            access_log=False,
                            timeout_graceful_shutdown=drain_seconds)
    if announce:
        print(announce, flush=True)
    import inspect

    if "target" in inspect.signature(Multiprocess.__init__).parameters:  # uvicorn before 0.50
        Multiprocess(config, target=uvicorn.Server(config).run, sockets=[sock]).run()
    else:
        Multiprocess(config, sockets=[sock]).run()


def _listening_worker(family, address, drain_seconds: float, ready) -> None:
    """A worker of :func:`_supervise`: its own listening socket in the port's ``SO_REUSEPORT`` group (connections
    queue in its backlog while its app loads), then uvicorn on it."""
    import uvicorn

    sock = _port_group_socket(family, address)
    sock.listen(2048)
    ready.set()
    config = uvicorn.Config("rag_rerank.cli:worker_app", factory=True, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=drain_seconds)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except Exception as exc:  # its app could not be built (the supervisor says what follows): one line, no traceback
        print(f"rag-rerank serve worker {os.getpid()}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)


def _supervise(sock, workers: int, announce: str | None, drain_seconds: float) -> None:
    """Starts ``workers`` :func:`_listening_worker` processes, restarts any that dies, stops them all on SIGTERM /
    SIGINT (each drains) and returns. Workers that keep dying at start (3 in a row within 60 s of starting) stop
    the service with an error rather than a restart loop."""
    import multiprocessing
    import signal

    context = multiprocessing.get_context("spawn")  # no CUDA state or threads of this process in the workers

    def start():
        ready = context.Event()
        process = context.Process(target=_listening_worker, name="rag-rerank-worker",
                                  args=(sock.family, sock.getsockname(), drain_seconds, ready))
        process.start()
        return process, ready, time.monotonic()

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    procs = [start() for _ in range(workers)]
    try:
        for process, ready, _ in procs:  # announced once every worker listens: from then on each takes its share
            while not ready.wait(0.1):
                if not process.is_alive():
                    raise RuntimeError(f"a serve worker exited while starting (exit code {process.exitcode})")
        if announce:
            print(announce, flush=True)
        early = 0
        while not stop.wait(0.5):
            for i, (process, _, started) in enumerate(procs):
                if process.is_alive():
                    continue
                early = early + 1 if time.monotonic() - started < 60 else 0
                if early >= 3:
                    raise RuntimeError("serve workers keep exiting as they start (3 in a row; their messages are "
                                       f"above; last exit code {process.exitcode})")
                logger.warning("serve worker %s exited (code %s); starting another", process.pid, process.exitcode)
                procs[i] = start()
    finally:
        for process, _, _ in procs:
            if process.is_alive():
                process.terminate()  # SIGTERM: it stops taking connections and finishes what it holds
        for process, _, _ in procs:
            process.join(drain_seconds + 10)
            if process.is_alive():
                process.kill()
                process.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def api_key_or_env(api_key: str | None) -> str | None:
    """The key given, else ``$RAG_RERANK_API_KEY``, else None (no auth). A given empty key stays empty, for
    :func:`create_app` to refuse: it must not fall through to the environment or to no auth."""
    return api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None


def serve(reranker, *, host: str = "127.0.0.1", port: int = 8080, api_key: str | None = None, sock=None,
          announce: str | None = None, drain_seconds: float = 30.0, app=None, **options) -> None:
    """Run the app with uvicorn until interrupted. ``api_key`` falls back to ``$RAG_RERANK_API_KEY``.

    The socket is bound first (``sock``, or :func:`listen` on ``host:port``), then ``announce`` is
    printed: an announced address is one that answers. SIGTERM / Ctrl-C stop taking connections and
    let requests in flight finish (up to ``drain_seconds``) before the process exits."""
    import uvicorn

    sock = sock if sock is not None else listen(host, port)
    if app is None:
        app = create_app(reranker, api_key=api_key_or_env(api_key), **options)
    freeze_heap()
    if announce:
        print(announce, flush=True)
    # access_log off: its lines are INFO, which log_level warning drops - after building them (a twentieth
    # of a small request's time on the event loop)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=drain_seconds)
    uvicorn.Server(config).run(sockets=[sock])


# ------------------------------------------------- one model for every worker (--scorer shared)
# One model for every HTTP worker: ``rag-rerank serve --workers N --scorer shared``.
#
# With ``--scorer per-worker`` (the default) each worker process loads a model of its own: on one GPU that is N
# copies in N CUDA contexts taking turns on the card, and N batchers each seeing an N-th of the traffic. With
# ``--scorer shared`` the serve command's own
# process loads the one model and runs a :class:`ScorerHost`; each worker connects to it over a Unix socket
# (a private directory, an HMAC-checked key) as a :class:`RemoteReranker` and sends it what its own
# micro-batcher gathered. The host's batcher puts what every worker sent into shared ``launch_many`` calls,
# one in flight on the device while the next is gathered. The workers do HTTP, JSON and the request checks;
# they load the tokenizer only (Jina's ``usage``), not the weights. On an H100 both ways gave the same
# throughput (the host's cores bound it, BENCHMARKS.md, issue 36): shared is for one copy of the weights and
# one CUDA context however many workers, and each CUDA graph recorded once.
#
# A scoring error answers every request of the batch it was in (as in one process); a host that goes away
# fails the requests waiting on it with a message naming it, and the workers' ``/health`` turns 503.
SCORER_ENV = "RAG_RERANK_SCORER"  # where a worker finds the host: {"address", "authkey"} as JSON


class ScorerHost:
    """Scores for the workers that connect, through one :class:`~rag_rerank.serve.MicroBatcher` over
    ``reranker``.

    Args:
        reranker: the loaded :class:`~rag_rerank.Reranker` (its launches overlap on a GPU).
        max_wait_ms: how long the host's batcher waits for company after a message arrives with nothing in
            flight. Default 0: each worker already waited for its own company, and once a batch runs on the
            device, what arrives meanwhile is the next batch (the device time is the wait).
        max_batch_pairs: pairs one scoring call takes (default 4096: the batches of several workers merge here,
            where one worker's cap is 2048).
    """

    def __init__(self, reranker, *, max_wait_ms: float = 0.0, max_batch_pairs: int = 4096) -> None:
        from multiprocessing.connection import Listener

        self.reranker = reranker
        self.batcher = MicroBatcher(reranker, max_wait_ms, max_batch_pairs)
        self._dir = tempfile.mkdtemp(prefix="rag-rerank-scorer-")  # mode 0700: only this user reaches the socket
        self.address = os.path.join(self._dir, "scorer.sock")
        self.authkey = secrets.token_bytes(32)
        self._listener = Listener(self.address, family="AF_UNIX", authkey=self.authkey)
        self._closed = False
        self._connections: list = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="rag-rerank-scorer-accept", daemon=True).start()

    def environ(self) -> dict[str, str]:
        """The variable a worker process reads to connect (:meth:`RemoteReranker.from_environ`)."""
        return {SCORER_ENV: json.dumps({"address": self.address, "authkey": self.authkey.hex()})}

    def describe(self) -> dict:
        """What a worker learns once, on connecting: enough to answer /info, /health and scores' activation."""
        r = self.reranker
        return {"model_name": r.model_name, "path": str(r.path) if getattr(r, "path", None) else None,
                "device": str(r.device), "dtype": str(r.dtype).replace("torch.", ""), "max_length": r.max_length,
                "backend": getattr(r, "backend", "torch"), "batch_size": r.batch_size,
                "activation": getattr(r, "_activation", "sigmoid"), "engine": self._engine()}

    def _engine(self) -> dict:
        engine = getattr(self.reranker, "engine", None)
        return {**(engine.describe() if engine is not None else {}), "shared_scorer": True}

    def close(self) -> None:
        """Stop taking connections, close the workers' connections, stop the batcher, remove the socket."""
        if self._closed:
            return
        self._closed = True
        try:  # a thread blocked in accept() is not woken by closing the socket: a connection wakes it
            with socket.socket(socket.AF_UNIX) as wake:
                wake.connect(self.address)
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            for conn in self._connections:  # shut down, not closed: the threads blocked on them wake (EOF)
                _shut(conn)
        self.batcher.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "ScorerHost":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # one thread accepting; two a worker: one reads its messages into the batcher, one answers them in order
    def _accept(self) -> None:
        import multiprocessing

        while not self._closed:
            try:
                conn = self._listener.accept()
            except (OSError, EOFError, multiprocessing.AuthenticationError) as exc:
                if self._closed:
                    return
                logger.warning("shared scorer: a connection was refused (%s)", exc)
                continue
            try:
                conn.send(("hello", self.describe()))
            except OSError:
                continue
            with self._lock:
                self._connections.append(conn)
            outbox: queue.Queue = queue.Queue()
            threading.Thread(target=self._read, args=(conn, outbox), name="rag-rerank-scorer-read", daemon=True).start()
            threading.Thread(target=self._write, args=(conn, outbox), name="rag-rerank-scorer-write",
                             daemon=True).start()

    def _read(self, conn, outbox: queue.Queue) -> None:
        try:
            while True:
                message = conn.recv()
                try:
                    mid, queries, docs = message
                    futures = [self.batcher.submit(q, d) for q, d in zip(queries, docs, strict=True)]
                except (TypeError, ValueError) as exc:  # not a worker of this version: say so, keep serving
                    bad: Future = Future()
                    bad.set_exception(ValueError(f"shared scorer: a malformed message ({exc})"))
                    mid, futures = (message[0] if isinstance(message, tuple) and message else None), [bad]
                outbox.put((mid, futures))
        except (EOFError, OSError):  # the worker went away (or the host is closing)
            outbox.put(None)

    def _write(self, conn, outbox: queue.Queue) -> None:
        while True:
            item = outbox.get()
            if item is None:
                conn.close()
                return
            mid, futures = item
            try:
                reply = (mid, [f.result() for f in futures], None)
            except Exception as exc:  # the batch it was in failed: every request of it is told
                reply = (mid, None, (type(exc).__name__, str(exc)))
            try:
                conn.send((*reply, self._engine().get("cuda_graphs")))
            except OSError:  # the worker went away: its requests have no one to answer
                return


def _shut(conn) -> None:
    """Shut a connection's socket down both ways: a thread blocked reading it gets EOF (closing the file
    descriptor would not wake it), and the other end sees the connection end."""
    try:
        with socket.socket(fileno=os.dup(conn.fileno())) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except (OSError, ValueError):  # already closed
        pass


_ERRORS = {"ValueError": ValueError, "TypeError": TypeError, "FloatingPointError": FloatingPointError}


class _RemoteEngine:
    """``describe()`` of the host's engine (what the /metrics graph gauge reads), kept current by replies."""

    def __init__(self, described: dict) -> None:
        self.described = dict(described)

    def describe(self) -> dict:
        return dict(self.described)


class RemoteReranker:
    """A :class:`~rag_rerank.Reranker` stand-in in a worker process: ``score`` / ``score_many`` /
    ``launch_many`` / ``relevance`` as the Reranker answers them, computed by the :class:`ScorerHost`.

    Args:
        address: the host's Unix socket.
        authkey: the host's key (bytes).
        timeout: seconds to keep trying to connect (a worker may start before the host listens).
    """

    asynchronous = True  # a launch returns before the scores exist: a worker's batcher overlaps its batches

    def __init__(self, address: str, authkey: bytes, *, timeout: float = 60.0) -> None:
        from multiprocessing.connection import Client

        deadline = time.monotonic() + timeout
        while True:
            try:
                self._conn = Client(address, family="AF_UNIX", authkey=authkey)
                break
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                if time.monotonic() > deadline:
                    raise ConnectionError(f"no shared scorer at {address} after {timeout:g} s ({exc})") from None
                time.sleep(0.05)
            except Exception as exc:  # AuthenticationError, a socket of something else
                raise ConnectionError(f"the shared scorer at {address} refused this worker "
                                      f"({type(exc).__name__}: {exc}); is its key the one in ${SCORER_ENV}?") from None
        kind, info = self._conn.recv()
        if kind != "hello":
            raise ConnectionError(f"{address} is not a rag-rerank shared scorer (it said {kind!r})")
        self.address = address
        self.model_name = info["model_name"]
        self.path = info["path"]
        self.device = info["device"]
        self.dtype = info["dtype"]
        self.max_length = info["max_length"]
        self.backend = info["backend"]
        self.batch_size = info["batch_size"]
        self._activation = info["activation"]
        self.engine = _RemoteEngine(info["engine"])
        self.error: BaseException | None = None  # why the host is out of reach, once it is
        self._pending: dict[int, Future] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()  # one sender at a time, and _pending against the reader
        threading.Thread(target=self._receive, name="rag-rerank-scorer-client", daemon=True).start()

    @classmethod
    def from_environ(cls, **kw) -> "RemoteReranker":
        """The host named by ``$RAG_RERANK_SCORER`` (set by ``rag-rerank serve --scorer shared``)."""
        raw = os.environ.get(SCORER_ENV)
        if not raw:
            raise ConnectionError(f"${SCORER_ENV} is not set: no shared scorer to connect to")
        spec = json.loads(raw)
        return cls(spec["address"], bytes.fromhex(spec["authkey"]), **kw)

    @property
    def alive(self) -> bool:
        return self.error is None

    def score(self, query: str, docs: Sequence[str], *, raw: bool = False) -> list[float]:
        return self.score_many([query], [docs], raw=raw)[0]

    def score_many(self, queries: Sequence[str], docs_per_query: Sequence[Sequence[str]], *,
                   raw: bool = False) -> list[list[float]]:
        return self.launch_many(queries, docs_per_query, raw=raw)()

    def launch_many(self, queries: Sequence[str], docs_per_query: Sequence[Sequence[str]], *,
                    raw: bool = False) -> Callable[[], list[list[float]]]:
        """Checks the inputs as the Reranker does (the same errors), sends them, and returns a function that
        waits for the host's answer."""
        groups = check_groups(queries, docs_per_query)
        queries, docs_per_query = [q for q, _ in groups], [d for _, d in groups]
        future: Future = Future()
        with self._lock:
            if self.error is not None:
                raise RuntimeError(str(self.error))
            mid = next(self._ids)
            self._pending[mid] = future
            try:
                self._conn.send((mid, queries, docs_per_query))
            except (OSError, ValueError) as exc:
                self._pending.pop(mid, None)
                raise RuntimeError(f"the shared scorer at {self.address} is out of reach ({exc})") from None

        def scores() -> list[list[float]]:
            values = future.result()
            return values if raw else [self.relevance(v) for v in values]

        return scores

    def relevance(self, logits: Sequence[float]) -> list[float]:
        """As :meth:`rag_rerank.Reranker.relevance`, with the host model's activation."""
        return [activate(v, self._activation) for v in logits]

    def close(self) -> None:
        _shut(self._conn)  # the receiving thread wakes (EOF) and fails what still waits

    def __repr__(self) -> str:
        return (f"RemoteReranker(model={self.model_name!r}, device={self.device!r}, dtype={self.dtype}, "
                f"shared scorer at {self.address!r})")

    def _receive(self) -> None:
        try:
            while True:
                mid, values, error, graphs = self._conn.recv()
                self.engine.described["cuda_graphs"] = graphs
                with self._lock:
                    future = self._pending.pop(mid, None)
                if future is None:
                    continue
                if error is None:
                    future.set_result(values)
                else:
                    kind, text = error
                    future.set_exception(_ERRORS.get(kind, RuntimeError)(
                        text if kind in _ERRORS else f"shared scorer: {kind}: {text}"))
        except (EOFError, OSError) as exc:
            with self._lock:
                self.error = RuntimeError(f"the shared scorer at {self.address} closed the connection "
                                          f"({type(exc).__name__}); the serve command's process has stopped")
                pending, self._pending = list(self._pending.values()), {}
            for future in pending:
                if not future.done():
                    future.set_exception(self.error)
