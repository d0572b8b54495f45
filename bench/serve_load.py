"""Load test of ``rag-rerank serve`` (issue 17): many concurrent rerank requests on loopback, with and
without micro-batching, one run.

Each request is a chatbot backend's call: one question of the Korean chatbot Q/A set and ``--docs``
candidate answers (its own and random others), in the Cohere shape. The server is the real console
command in a subprocess; the client keeps ``--concurrency`` requests in flight (raw keep-alive HTTP/1.1 on
asyncio, bodies encoded before the clock starts, so the client is not what is measured) until
``--requests`` are done. Reported: requests/s, pairs/s, latency p50/p95/p99, errors (any non-200 or a wrong
result count), and the server's own count of requests per scoring call (its /metrics). Beside them, in the
same run: the in-process ``Reranker`` scoring the same pairs (``score_many`` of every request at once: the
engine's pairs/s, what HTTP is measured against), ``--workers`` settings, and an open-loop run at
``--rate-fraction`` of the best closed-loop rate (requests sent on a fixed schedule, so latency is the
service's under a steady load, not the client's queue).

    python bench/serve_load.py --out bench/results/serve_cpu/serve_load
    python bench/serve_load.py --device cuda --concurrency 64 --workers 1 2 4 --wait-ms 5 --warm-up 5000 --out ...

On a GPU each server meets its pass shapes for the first time during ``--warm-up`` (one CUDA graph recorded
a shape and worker), not while it is timed; a few hundred requests leave many shapes to the timed run.
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("RAG_RERANK_DATA", ROOT.parent / "shared" / "data"))


def workers_metrics(url: str, connections: int = 64) -> dict[int, str]:
    """Each worker's /metrics text, by pid. A connection stays with the worker that accepted it (one
    SO_REUSEPORT socket a worker), so /health (which names its pid) and /metrics asked on one connection come
    from one worker; ``connections`` new ones reach each of 8 workers with probability 0.99."""
    import http.client
    from urllib.parse import urlsplit

    parts, seen = urlsplit(url), {}
    for _ in range(connections):
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        try:
            conn.request("GET", "/health")
            pid = json.loads(conn.getresponse().read())["pid"]
            conn.request("GET", "/metrics")
            seen[pid] = conn.getresponse().read().decode()
        except (OSError, ValueError, KeyError, http.client.HTTPException):
            continue
        finally:
            conn.close()
    return seen


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


def cuda_graphs(metrics: dict[int, str]) -> float | None:
    """The most CUDA graphs any worker holds (``rag_rerank_cuda_graphs``), from a :func:`workers_metrics` reading."""
    found = [g for g in (_metric(t, "rag_rerank_cuda_graphs") for t in metrics.values()) if g is not None]
    return max(found) if found else None


def _batch_counts(metrics: dict[int, str]) -> dict[int, tuple[float, float]]:
    """Per worker: (requests scored, scoring calls) so far, from its rag_rerank_batch_requests histogram."""
    return {pid: (_metric(t, "rag_rerank_batch_requests_sum") or 0.0, _metric(t, "rag_rerank_batch_requests_count") or 0.0)
            for pid, t in metrics.items()}


def batches(before: dict[int, str], after: dict[int, str]) -> dict:
    """Requests scored, scoring calls and their ratio between two :func:`workers_metrics` readings, over every
    worker (a worker's calls are the batcher's: none with micro-batching off)."""
    before, after = _batch_counts(before), _batch_counts(after)
    requests = sum(a[0] - before.get(pid, (0.0, 0.0))[0] for pid, a in after.items())
    calls = sum(a[1] - before.get(pid, (0.0, 0.0))[1] for pid, a in after.items())
    return {"scored_requests": requests, "scoring_calls": calls,
            "requests_per_scoring_call": requests / calls if calls > 0 else None}


def warm(url: str, bodies: list[dict], args, rounds: int = 3) -> dict[int, str]:
    """Untimed requests sent as the timed run sends them (``--clients`` processes: batches of the timed run's
    sizes, so the pass shapes it meets), again while the server's CUDA-graph gauge still rises (up to
    ``rounds`` times); the workers' metrics after (:func:`workers_metrics`: the timed run's starting point). One client process sends too slowly to fill the batches the timed
    run fills (session 24: a worker left a 5,000-request warm-up with 2 graphs and recorded 18-47 more while
    timed)."""
    metrics = workers_metrics(url)
    for _ in range(rounds if bodies else 0):
        load_many(url, bodies, args.concurrency, args.clients)
        before, metrics = metrics, workers_metrics(url)
        if cuda_graphs(metrics) == cuda_graphs(before):
            break
    return metrics


def requests_from_chatbot(n: int, docs: int, seed: int = 0) -> list[dict]:
    path = DATA / "chatbot" / "ChatbotData.csv"
    if not path.exists():  # a clone without ../shared: the fixture sample
        path = ROOT / "tests" / "fixtures" / "data" / "chatbot" / "ChatbotData.csv"
    with path.open(encoding="utf-8") as fh:
        rows = [(r["Q"], r["A"]) for r in csv.DictReader(fh)]
    rng = random.Random(seed)
    answers = [a for _, a in rows]
    out = []
    for _ in range(n):
        q, a = rng.choice(rows)
        out.append({"query": q, "documents": [a] + rng.sample(answers, docs - 1)})
    return out


class FreeReranker:
    """A reranker whose scores cost nothing (``--free``): what is left is the service's own work a request -
    HTTP, JSON, checks, the batcher's hand-offs, the usage count (``path``'s tokenizer) - the ceiling one
    worker has whatever the model and device."""

    model_name, device, max_length = "free", "cpu", 512

    def __init__(self, path: str) -> None:
        self.path = path

    def score_many(self, queries, docs, raw=False):
        return [[0.0] * len(d) for d in docs]

    def score(self, query, docs, raw=False):
        return [0.0] * len(docs)

    def relevance(self, logits):
        return [0.5] * len(logits)


def start_server(args, port: int, max_wait_ms: float, workers: int = 1, scorer: str = "per-worker") -> subprocess.Popen:
    if args.free:  # this script as the server, with FreeReranker
        return subprocess.Popen([sys.executable, __file__, "--serve-free", args.free, "--port", str(port),
                                 "--wait-ms", str(max_wait_ms)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
    cmd = [sys.executable, "-m", "rag_rerank.cli", "serve", "--listen", f"127.0.0.1:{port}",
           "--max-wait-ms", str(max_wait_ms), "--workers", str(workers), "--scorer", scorer] \
        + (["--reranker", args.reranker] if args.reranker else []) \
        + (["--device", args.device] if args.device else []) + args.server_arg
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


async def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"server exited: {proc.stdout.read()}")
            try:
                if (await client.get(f"{url}/health", timeout=2)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5)
    raise SystemExit("server did not come up")


def _percentiles(latencies: list[float]) -> dict:
    """p50 / p95 / p99 in milliseconds of latencies in seconds."""
    lat = sorted(latencies)
    pick = lambda q: 1000 * lat[min(len(lat) - 1, int(q * len(lat)))]  # noqa: E731
    return {"p50_ms": 1000 * statistics.median(lat), "p95_ms": pick(0.95), "p99_ms": pick(0.99)}


def _client_part(job) -> tuple[list[float], int]:
    """One load-generating process: its share of the bodies at its share of the concurrency."""
    url, bodies, concurrency = job
    out = asyncio.run(load(url, bodies, concurrency, raw=True))
    return out["latencies"], out["errors"]


def load_many(url: str, bodies: list[dict], concurrency: int, clients: int) -> dict:
    """``clients`` processes keep ``concurrency`` requests in flight between them, so that the generator's
    own Python per request (one process, one core) stays below what the service answers."""
    if clients <= 1:
        return asyncio.run(load(url, bodies, concurrency))
    import multiprocessing

    parts = [(url, bodies[i::clients], max(1, concurrency // clients)) for i in range(clients)]
    with multiprocessing.get_context("spawn").Pool(clients) as pool:
        pool.map(_client_part, [(url, b[:8], c) for url, b, c in parts])  # each client's connections warm
        start = time.perf_counter()
        results = pool.map(_client_part, parts)
        wall = time.perf_counter() - start
    errors = sum(e for _, e in results)
    return {"requests": len(bodies), "errors": errors, "wall_s": wall, "requests_per_s": len(bodies) / wall,
            **_percentiles([x for lat, _ in results for x in lat]), "clients": clients}


async def load(url: str, bodies: list[dict], concurrency: int, raw: bool = False) -> dict:
    """Closed loop: ``concurrency`` keep-alive connections, each sending its next request when the last is
    answered (the raw client below: bodies encoded before the clock starts)."""
    address = _address(url)
    todo = iter([(_request(address, b), len(b["documents"])) for b in bodies])
    latencies, errors = [], 0

    async def worker():
        nonlocal errors
        conn = None
        for request, n_docs in todo:
            start = time.perf_counter()
            conn, ok = await _answered(conn, address, request, n_docs)
            latencies.append(time.perf_counter() - start)
            errors += not ok
        if conn is not None:
            conn.writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    if raw:
        return {"latencies": latencies, "errors": errors, "wall_s": wall}
    return {"requests": len(bodies), "errors": errors, "wall_s": wall, "requests_per_s": len(bodies) / wall,
            **_percentiles(latencies)}


class _Conn:
    """One keep-alive HTTP/1.1 connection speaking just enough of the protocol for a JSON POST: both loops'
    client, so that the generator's own cost per request is a socket write and a read (httpx's ~5 ms of Python
    per request made one process the bottleneck near 200 requests/s and its queue the measured latency)."""

    def __init__(self, reader, writer) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> "_Conn":
        return cls(*await asyncio.open_connection(host, port))

    async def post(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = next(int(v) for k, _, v in (h.partition(":") for h in lines[1:]) if k.lower() == "content-length")
        return status, await self.reader.readexactly(length)


def _address(url: str) -> tuple[str, int]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.hostname, parts.port or 80


def _request(address: tuple[str, int], body: dict) -> bytes:
    data = json.dumps(body, ensure_ascii=False).encode()
    return (f"POST /v1/rerank HTTP/1.1\r\nHost: {address[0]}:{address[1]}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode() + data


async def _answered(conn: "_Conn | None", address: tuple[str, int], request: bytes,
                    n_docs: int) -> "tuple[_Conn | None, bool]":
    """One rerank request on ``conn`` (opened first if None): (the connection, None if it broke; whether the
    answer was 200 with one result per document). A kept-alive connection the server closed while it sat idle
    (uvicorn: after 5 s) is retried once on a new one, as HTTP clients do; not counted as an error."""
    try:
        if conn is not None:
            try:
                status, payload = await conn.post(request)
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                if getattr(exc, "partial", b""):  # part of an answer came: a real failure
                    raise
                conn = None
        if conn is None:
            conn = await _Conn.open(*address)
            status, payload = await conn.post(request)
        return conn, status == 200 and len(json.loads(payload)["results"]) == n_docs
    except (OSError, asyncio.IncompleteReadError, ValueError, KeyError, StopIteration):
        return None, False


async def paced(url: str, bodies: list[dict], rate: float, raw: bool = False, begin_at: float | None = None) -> dict:
    """Open loop: request i is due at ``i / rate`` seconds, whatever the answers before it took. Bodies are
    encoded before the clock starts; each request takes a free keep-alive connection or opens one. Per request
    ``lag`` (sent after its due time) tells whether this generator kept its schedule: a run whose lag p99 is
    over 5 ms measured its own queue, and says so (``generator_kept_schedule``). Latency is counted from the
    due time (a late send counts against the service, no coordinated omission) and from the send."""
    address = _address(url)
    requests = [_request(address, b) for b in bodies]
    free: list[_Conn] = []
    latencies, from_send, lags, errors = [], [], [], 0

    async def one(i: int, request: bytes, n_docs: int) -> None:
        nonlocal errors
        due = begin + i / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        sent = time.perf_counter()
        lags.append(sent - due)
        conn, ok = await _answered(free.pop() if free else None, address, request, n_docs)
        if conn is not None:
            free.append(conn)
        done = time.perf_counter()
        latencies.append(done - due)
        from_send.append(done - sent)
        errors += not ok

    if begin_at is not None:  # several generator processes share one start
        await asyncio.sleep(max(0.0, begin_at - time.time()))
    begin = time.perf_counter()
    await asyncio.gather(*(one(i, r, len(b["documents"])) for i, (r, b) in enumerate(zip(requests, bodies))))
    wall = time.perf_counter() - begin
    for conn in free:
        conn.writer.close()
    if raw:
        return {"latencies": latencies, "from_send": from_send, "lags": lags, "errors": errors}
    return _paced_summary(len(bodies), rate, wall, latencies, from_send, lags, errors, connections=len(free))


def _paced_summary(n, rate, wall, latencies, from_send, lags, errors, **extra) -> dict:
    lag_p99 = _percentiles(lags)["p99_ms"]
    summary = _percentiles(latencies)
    return {"requests": n, "errors": errors, "offered_per_s": rate, "requests_per_s": n / wall, **summary,
            "p99_over_p50": summary["p99_ms"] / summary["p50_ms"],
            "from_send": _percentiles(from_send), "send_lag_p99_ms": lag_p99,
            "generator_kept_schedule": lag_p99 <= 5.0, **extra}


def _paced_part(job) -> dict:
    url, bodies, rate, begin_at = job
    return asyncio.run(paced(url, bodies, rate, raw=True, begin_at=begin_at))


def paced_many(url: str, bodies: list[dict], rate: float, clients: int) -> dict:
    """The open-loop schedule split over ``clients`` processes, each offering ``rate / clients`` from one
    shared start time (so the offered rates add up from the first request)."""
    if clients <= 1:
        return asyncio.run(paced(url, bodies, rate))
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(clients) as pool:
        pool.map(abs, range(clients))  # the processes up before the clock starts
        begin_at = time.time() + 1.0
        parts = [(url, bodies[i::clients], rate / clients, begin_at) for i in range(clients)]
        results = pool.map(_paced_part, parts)
        wall = time.time() - begin_at
    return _paced_summary(len(bodies), rate, wall, [x for r in results for x in r["latencies"]],
                          [x for r in results for x in r["from_send"]], [x for r in results for x in r["lags"]],
                          sum(r["errors"] for r in results), clients=clients)


def in_process(args, bodies: list[dict]) -> dict:
    """The engine alone on the same pairs: every request's (query, documents) in one score_many call,
    after a warm-up, best of three."""
    from rag_rerank import Reranker

    reranker = Reranker(args.reranker, device=args.device) if args.reranker else Reranker(device=args.device)
    queries, docs = [b["query"] for b in bodies], [b["documents"] for b in bodies]
    reranker.score_many(queries[:64], docs[:64])
    best = None
    for _ in range(3):
        start = time.perf_counter()
        reranker.score_many(queries, docs)
        took = time.perf_counter() - start
        best = took if best is None else min(best, took)
    pairs = sum(len(d) for d in docs)
    # what an application scoring in-process sees with the same traffic: one call a request, from
    # --concurrency threads (no batching across requests)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(args.concurrency) as pool:
        list(pool.map(lambda b: reranker.score(b["query"], b["documents"]), bodies[:256]))  # warm-up
        start = time.perf_counter()
        list(pool.map(lambda b: reranker.score(b["query"], b["documents"]), bodies))
        per_request = time.perf_counter() - start
    del reranker
    try:
        import torch

        torch.cuda.empty_cache()
    except Exception:
        pass
    return {"pairs": pairs, "seconds": best, "pairs_per_s": pairs / best,
            "per_request_pairs_per_s": pairs / per_request, "threads": args.concurrency}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reranker", help="model to serve (default: the serve command's, the shipped reranker)")
    p.add_argument("--device")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--docs", type=int, default=5, help="candidate answers a request")
    p.add_argument("--wait-ms", type=float, nargs="+", default=[5.0, 0.0],
                   help="micro-batching waits to compare (0: off)")
    p.add_argument("--workers", type=int, nargs="+", default=[1], help="serve --workers settings to compare")
    p.add_argument("--rate-fraction", type=float, default=0.7,
                   help="open-loop run at this share of the best closed-loop rate (0: none)")
    p.add_argument("--no-in-process", action="store_true", help="skip the in-process engine figure")
    p.add_argument("--clients", type=int, default=1, help="load-generating processes (one tops out near 200 req/s)")
    p.add_argument("--server-arg", action="append", default=[], help="more serve flags, e.g. --server-arg=--backend=onnx")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--warm-up", type=int, default=256, help="requests sent to each server before it is timed")
    p.add_argument("--free", metavar="TOKENIZER_DIR", help="serve FreeReranker (scores cost nothing; usage counted "
                   "with this directory's tokenizer): the service's own per-request ceiling, one worker")
    p.add_argument("--serve-free", help=argparse.SUPPRESS)
    p.add_argument("--scorer", nargs="+", choices=["per-worker", "shared"], default=["per-worker"],
                   help="serve --scorer settings to compare (with --workers > 1: one model for all workers or a copy each)")
    p.add_argument("--out")
    args = p.parse_args(argv)
    if args.serve_free:
        sys.path.insert(0, str(ROOT))
        from rag_rerank.serve import serve

        serve(FreeReranker(args.serve_free), port=args.port, max_wait_ms=args.wait_ms[0])
        return 0
    bodies = requests_from_chatbot(args.requests, args.docs)
    # other requests than the timed ones (another seed): on a GPU each new pass shape records a CUDA graph
    # (tens of ms, once a shape and process), which a short timed run would otherwise count as service latency
    warm_up = requests_from_chatbot(args.warm_up, args.docs, seed=1) if args.warm_up else []
    engine = None if args.no_in_process or args.free else in_process(args, bodies)
    if engine:
        print(json.dumps({"in_process": engine}), flush=True)
    rows, best = [], None
    url = f"http://127.0.0.1:{args.port}"
    combos = [(w, m, c) for w in args.workers for m in args.wait_ms for c in (args.scorer if w > 1 else ["per-worker"])]
    for workers, wait, scorer in combos:
        proc = start_server(args, args.port, wait, workers, scorer)
        try:
            asyncio.run(wait_healthy(url, proc))
            before = warm(url, warm_up, args)
            row = load_many(url, bodies, args.concurrency, args.clients)
            after = workers_metrics(url)
            row.update(batches(before, after))  # the timed run's own
            row["cuda_graphs"] = [cuda_graphs(before), cuda_graphs(after)]  # after the warm-up, after the timed run
            row.update(micro_batching=f"on, wait {wait:g} ms" if wait > 0 else "off", workers=workers,
                       scorer=scorer if workers > 1 else "one process", pairs_per_s=row["requests_per_s"] * args.docs)
            if engine:
                row["of_in_process"] = row["pairs_per_s"] / engine["pairs_per_s"]
                row["of_in_process_per_request"] = row["pairs_per_s"] / engine["per_request_pairs_per_s"]
            if best is None or row["requests_per_s"] > best[0]["requests_per_s"]:
                best = (row, workers, wait, scorer)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        rows.append(row)
        print(json.dumps(row), flush=True)
    steady = None
    if args.rate_fraction > 0 and best is not None:
        row, workers, wait, scorer = best
        proc = start_server(args, args.port, wait, workers, scorer)
        try:
            asyncio.run(wait_healthy(url, proc))
            before = warm(url, warm_up, args)
            steady = paced_many(url, bodies, args.rate_fraction * row["requests_per_s"], args.clients)
            steady.update(batches(before, workers_metrics(url)))
            steady.update(workers=workers, scorer=row["scorer"], micro_batching=row["micro_batching"],
                          fraction=args.rate_fraction)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        print(json.dumps({"steady": steady}), flush=True)
    free = f"FreeReranker (scores cost nothing; usage with {args.free}'s tokenizer)"
    result = {"machine": _machine(args.device), "concurrency": args.concurrency, "docs_per_request": args.docs,
              "warm_up_requests": args.warm_up,
              "reranker": free if args.free else args.reranker or "default (shipped)", "server_args": args.server_arg, "rows": rows,
              "in_process": engine, "steady": steady}
    text = table(result)
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(result, indent=2))
        out.with_suffix(".md").write_text(text)
    return 0


def _machine(device: str | None) -> str:
    if device and device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(0)
    return f"CPU ({os.cpu_count()} cores, {platform.machine()})"


def _graphs(counts) -> str:
    return "-" if not counts or None in counts else f"{counts[0]:.0f} -> {counts[1]:.0f}"


def table(result: dict) -> str:
    base = result["rows"][-1]["requests_per_s"]
    engine = result.get("in_process")
    lines = [f"Machine: **{result['machine']}**. `rag-rerank serve` on loopback, {result['rows'][0]['requests']} "
             f"requests of 1 question x {result['docs_per_request']} chatbot answers, concurrency "
             f"{result['concurrency']}, after {result.get('warm_up_requests', 256)} other requests to each server; "
             f"reranker {result['reranker']} {' '.join(result['server_args'])}.", ""]
    if engine:
        lines += [f"In-process `Reranker.score_many` of the same {engine['pairs']} pairs (one call, best of 3): "
                  f"**{engine['pairs_per_s']:.0f} pairs/s**; in-process one `Reranker.score` a request from "
                  f"{engine.get('threads', '-')} threads: **{engine.get('per_request_pairs_per_s', 0):.0f} pairs/s**.", ""]
    lines += ["| workers (scorer) | micro-batching | requests/s | pairs/s | of in-process (one call) | of in-process (a call a "
              "request) | vs last row | p50 (ms) | p95 (ms) | p99 (ms) | errors | requests a scoring call | "
              "CUDA graphs of a worker: after warm-up -> after |",
              "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in result["rows"]:
        per = f"{r['requests_per_scoring_call']:.1f}" if r.get("requests_per_scoring_call") else "-"
        share = f"{100 * r['of_in_process']:.0f} %" if r.get("of_in_process") else "-"
        share2 = f"{100 * r['of_in_process_per_request']:.0f} %" if r.get("of_in_process_per_request") else "-"
        workers = f"{r.get('workers', 1)}" + (f", {r['scorer']}" if r.get("workers", 1) > 1 else "")
        lines.append(f"| {workers} | {r['micro_batching']} | {r['requests_per_s']:.1f} | "
                     f"{r.get('pairs_per_s', 0):.0f} | {share} | {share2} | {r['requests_per_s'] / base:.2f}x | {r['p50_ms']:.0f} | "
                     f"{r['p95_ms']:.0f} | {r['p99_ms']:.0f} | {r['errors']} | {per} | {_graphs(r.get('cuda_graphs'))} |")
    steady = result.get("steady")
    if steady:
        lines += ["", f"Steady load at {100 * steady['fraction']:.0f} % of the best rate ({steady['workers']} workers, "
                  f"{steady.get('scorer', 'one process')} scorer, "
                  f"{steady['micro_batching']}): {steady['offered_per_s']:.1f} requests/s offered, "
                  f"{steady['requests_per_s']:.1f} served; p50 {steady['p50_ms']:.0f} ms, p95 {steady['p95_ms']:.0f} ms, "
                  f"p99 {steady['p99_ms']:.0f} ms (p99 / p50 {steady['p99_ms'] / steady['p50_ms']:.1f}; latency from each "
                  f"request's due time); errors {steady['errors']}; the generator's send lag p99 "
                  f"{steady['send_lag_p99_ms']:.1f} ms ({'kept' if steady['generator_kept_schedule'] else 'MISSED'} "
                  "its schedule)" + (f"; {steady['requests_per_scoring_call']:.1f} requests a scoring call"
                                     if steady.get("requests_per_scoring_call") else "") + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
