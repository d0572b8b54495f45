"""One model for every HTTP worker: ``rag-rerank serve --workers N --scorer shared``.

With ``--scorer per-worker`` each worker process loads a model of its own: on one GPU that is N copies in N
CUDA contexts taking turns on the card, and N batchers each seeing an N-th of the traffic (on an H100, four
such workers gave 1.6x one: BENCHMARKS.md, issue 36). With ``--scorer shared`` the serve command's own
process loads the one model and runs a :class:`ScorerHost`; each worker connects to it over a Unix socket
(a private directory, an HMAC-checked key) as a :class:`RemoteReranker` and sends it what its own
micro-batcher gathered. The host's batcher puts what every worker sent into shared ``launch_many`` calls,
one in flight on the device while the next is gathered. The workers do HTTP, JSON and the request checks;
they load the tokenizer only (Jina's ``usage``), not the weights.

A scoring error answers every request of the batch it was in (as in one process); a host that goes away
fails the requests waiting on it with a message naming it, and the workers' ``/health`` turns 503.
"""
from __future__ import annotations

import itertools
import json
import logging
import math
import os
import queue
import secrets
import shutil
import socket
import tempfile
import threading
import time
from concurrent.futures import Future
from typing import Callable, Sequence

from .types import check_docs, check_query

__all__ = ["SCORER_ENV", "RemoteReranker", "ScorerHost"]

SCORER_ENV = "RAG_RERANK_SCORER"  # where a worker finds the host: {"address", "authkey"} as JSON
logger = logging.getLogger(__name__)


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

        from .serve import MicroBatcher

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
        if isinstance(queries, str):
            raise TypeError("queries must be a sequence of strings, not a single string")
        if isinstance(docs_per_query, (str, bytes)):
            raise TypeError("docs_per_query must be a sequence of document lists")
        queries, docs_per_query = list(queries), list(docs_per_query)
        if len(queries) != len(docs_per_query):
            raise ValueError(f"{len(queries)} queries but {len(docs_per_query)} document lists")
        queries = [check_query(q) for q in queries]
        docs_per_query = [check_docs(d) for d in docs_per_query]
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
        if self._activation == "identity":
            return [float(v) for v in logits]
        return [1.0 / (1.0 + math.exp(-v)) if v >= 0 else math.exp(v) / (1.0 + math.exp(v)) for v in logits]

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
