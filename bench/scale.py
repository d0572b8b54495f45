"""Scale of the store (issue 34): ingest, disk, memory, open, candidate latency and freshness at
10k / 100k / 1M synthetic Korean passages.

Passages are built from the shared data's sentences (KorQuAD paragraphs cut at sentence ends, KorNLI,
KorSTS, chatbot questions and answers): 2 to 5 random sentences each, so Kiwi pays its real cost and
the vocabulary is real Korean. Queries: 200 passages' sentences cut to their first 60 % of words.

Every phase runs in its own process (peak RSS is that phase's):
  ingest    ChromaStore.add of the corpus: passages/s end to end, busy seconds per stage, disk
  open      a fresh process opens the store: open time, first and steady dense / bm25 / hybrid candidate
            latency (top 50, no reranker), first query after a write (this process, and another's)
  replica   a `serve` replica in server mode: `chroma run` over the store, then connect with the shared
            BM25 folder: ready time and candidate latency through the server

    python bench/scale.py --sizes 10000,100000 [--data ../shared/data] [--encoder NAME --backend openvino]
                          [--work DIR] [--out bench/results/scale.json]

The phases that compared the old one-JSON-file index (main 7ede8b7) and the lexical engines (numpy
segments vs tantivy) over the same tokens, once the index was chosen, retired: `git show
8288d14:bench/scale.py` (--baseline, --engines) runs them again.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# ------------------------------------------------------------------ corpus
def sentences(data: Path) -> list[str]:
    out: list[str] = []
    squad = json.loads((data / "korquad" / "KorQuAD_v1.0_dev_part.json").read_text(encoding="utf-8"))
    for article in squad["data"]:
        for para in article["paragraphs"]:
            out += [s.strip() for s in re.split(r"(?<=[.!?])\s+", para["context"]) if len(s.strip()) > 15]
    for name in ("xnli.dev.ko.tsv", "xnli.test.ko.tsv"):
        for line in (data / "kornli" / name).read_text(encoding="utf-8").splitlines()[1:]:
            out += [c for c in line.split("\t")[:2] if len(c) > 15]
    for line in (data / "korsts" / "sts-dev.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        out += [c for c in line.split("\t")[5:7] if len(c) > 15]
    import csv

    with open(data / "chatbot" / "ChatbotData.csv", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            out += [row["Q"], row["A"]]
    return sorted(set(s for s in out if s))


def corpus(data: Path, n: int, seed: int = 0) -> list[str]:
    pool = sentences(data)
    rng = random.Random(seed)
    return [" ".join(rng.choice(pool) for _ in range(rng.randint(2, 5))) for _ in range(n)]


def queries(passages: list[str], n: int = 200, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    out = []
    for p in rng.sample(passages, n):
        words = rng.choice(re.split(r"(?<=[.!?])\s+", p)).split()
        out.append(" ".join(words[: max(2, int(len(words) * 0.6))]))
    return out


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def du_gb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e9


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def candidate_latency(modes: dict, qs: list[str]) -> dict:
    """p50 / p99 (ms) of each mode's candidates call over the queries, the modes taking turns per query."""
    lat = {m: [] for m in modes}
    for q in qs:
        for mode, fn in modes.items():
            t = time.perf_counter()
            fn(q)
            lat[mode].append(time.perf_counter() - t)
    return {m: {"p50_ms": 1000 * pct(v, 0.5), "p99_ms": 1000 * pct(v, 0.99)} for m, v in lat.items()}


def stand_in_encoder(args) -> str:
    """``--encoder tiny384``: a one-layer 384-d BERT built here (``e5arch``: twelve layers, e5-small's
    compute per token, for a GPU machine without the e5 weights) (e5-small's width, so Chroma stores and
    searches vectors of the real size) for rows where e5 on a CPU would take hours to embed; the open
    phase then embeds queries with ``--query-encoder`` (e5) so latencies are a real user's."""
    if args.encoder not in ("tiny384", "e5arch"):
        return args.encoder
    from rag_rerank.testing import tiny_bert_encoder

    path = Path(args.work) / args.encoder
    if not (path / "config.json").exists():  # e5arch: e5-small's shape (12 layers, 384 wide), random weights
        shape = dict(layers=12, heads=12) if args.encoder == "e5arch" else {}
        tiny_bert_encoder(path, sentences(Path(args.data))[:5000], hidden_size=384, vocab_size=8000, **shape)
    return str(path)


def encoder_options(args) -> dict:
    opts = {}
    if args.backend != "torch":
        opts["backend"] = args.backend
    if args.device:
        opts["device"] = args.device
    if args.batch_size:
        opts["batch_size"] = args.batch_size
    return opts


# ------------------------------------------------------------------ phases
def phase_ingest(args) -> dict:
    from rag_rerank.retrieval.store import ChromaStore
    from rag_rerank.types import Document

    docs = corpus(Path(args.data), args.size)
    store_dir = Path(args.work) / f"store-{args.size}"
    if not args.resume:
        shutil.rmtree(store_dir, ignore_errors=True)
    start = time.perf_counter()
    store = ChromaStore(store_dir, "scale", encoder=stand_in_encoder(args), encoder_options=encoder_options(args))
    opened = time.perf_counter() - start
    before = store.count()
    start = time.perf_counter()
    store.add([Document(t, {"n": i % 97}, f"p{i}") for i, t in enumerate(docs)], show_progress=args.progress)
    wall = time.perf_counter() - start
    added = store.count() - before
    stats = store.last_ingest
    store.close()
    lexical_path = stats["bm25_s"] + stats["wait_tokenize_s"]
    return {"phase": "ingest", "size": args.size, "already_stored": before, "added": added, "open_s": opened,
            "wall_s": wall, "passages_per_s": added / wall if wall else None, "stages_busy_s": stats,
            "lexical_critical_path_s": lexical_path, "lexical_share": lexical_path / wall if wall else None,
            "disk_gb": du_gb(store_dir), "bm25_disk_gb": du_gb(store_dir / "bm25"), "peak_rss_gb": peak_rss_gb()}


WRITER = """
import sys
from rag_rerank.retrieval.store import ChromaStore
store = ChromaStore(sys.argv[1], "scale", encoder=sys.argv[2])
store.add([sys.argv[4]], ids=[f"other-{sys.argv[3]}"])
"""


def phase_open(args) -> dict:
    from rag_rerank.retrieval.first_stage import StoreFirstStage
    from rag_rerank.retrieval.store import ChromaStore

    docs = corpus(Path(args.data), args.size)
    qs = queries(docs)
    store_dir = Path(args.work) / f"store-{args.size}"
    start = time.perf_counter()
    encoder = args.query_encoder or stand_in_encoder(args)
    store = ChromaStore(store_dir, "scale", encoder=encoder, encoder_options=encoder_options(args), create=False)
    from rag_rerank.retrieval.lexical import warm_up

    warm_up()  # as `rag-rerank serve` does at start: Kiwi loads beside the other models
    open_s = time.perf_counter() - start
    in_step = len(store.lexical) == store.count()  # after a killed ingest too: the open caught BM25 up
    hybrid_fs = StoreFirstStage(store, "hybrid")
    modes = {"dense": lambda q: store.search(q, 50), "bm25": lambda q: store.search_lexical(q, 50),
             "hybrid": lambda q: hybrid_fs.candidates(q, 50)}
    first = {}
    for mode, fn in modes.items():
        t = time.perf_counter()
        fn(qs[0])
        first[mode] = time.perf_counter() - t
    ready_s = time.perf_counter() - start
    latency = candidate_latency(modes, qs)
    # a write here, then the first query: BM25 searches the new segment at once (no rebuild)
    after_write = []
    for i in range(5):
        store.add([f"방금 추가한 문서 {i} 번째 울릉도 오징어 이야기"], ids=[f"fresh-{i}"])
        t = time.perf_counter()
        hits = hybrid_fs.candidates(f"울릉도 오징어 {i} 번째", 50)
        after_write.append(time.perf_counter() - t)
        assert any(h.id == f"fresh-{i}" for h in hits), "a document just written is not found"
    # another process writes; how long until this open store finds it, by BM25 and by dense search
    seen = {}
    proc_start = time.perf_counter()
    # a text of its own each run: near-copies that earlier runs added and deleted stay in Chroma's HNSW graph as
    # tombstones, and there a search of the very text missed it even at k=100 (probed at 100k; k=1000 found it)
    other_text = f"{random.Random(time.time_ns()).choice(docs)} 제주도 감귤 이야기"
    subprocess.run([sys.executable, "-c", WRITER, str(store_dir), encoder, "0", other_text], check=True,
                   env={**os.environ, "TQDM_DISABLE": "1"}, capture_output=True)
    written = time.perf_counter()
    deadline = written + 120
    while len(seen) < 2 and time.perf_counter() < deadline:
        if "bm25" not in seen and any(h.id == "other-0" for h in store.search_lexical("제주도 감귤 이야기", 20)):
            seen["bm25"] = time.perf_counter() - written
        if "dense" not in seen and any(h.id == "other-0" for h in store.search(other_text, 20)):
            seen["dense"] = time.perf_counter() - written
        time.sleep(0.01)
    out = {"phase": "open", "size": args.size, "count": store.count(), "bm25_in_step_at_open": in_step, "open_s": open_s,
           "first_query_s": first, "ready_s": ready_s, "latency": latency,
           "first_query_after_write_ms": {"p50": 1000 * pct(after_write, 0.5), "max": 1000 * max(after_write)},
           "other_process_write_s": round(written - proc_start, 2), "other_process_write_seen_after_s": seen,
           "segments": len(store.lexical.snapshot().segments), "peak_rss_gb": peak_rss_gb()}
    store.delete(["other-0"] + [f"fresh-{i}" for i in range(5)])  # the next run sees the corpus as built
    store.close()
    return out


def phase_replica(args) -> dict:
    """A ``serve`` replica in server mode over the same store: one Chroma server (``chroma run`` on the
    store's directory), and this process connects to it with the shared BM25 folder, as README's topology
    does - nothing is re-tokenised. Ready = connect + first query of each kind (the server already up);
    the server's own start is timed apart."""
    import socket
    import urllib.request

    from rag_rerank.retrieval.first_stage import StoreFirstStage
    from rag_rerank.retrieval.lexical import warm_up
    from rag_rerank.retrieval.store import ChromaStore, lexical_dir

    docs = corpus(Path(args.data), args.size)
    qs = queries(docs)
    store_dir = Path(args.work) / f"store-{args.size}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-c", "import sys; from chromadb.cli.cli import app; sys.exit(app())",
                               "run", "--path", str(store_dir), "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1).read()
                break
            except OSError:
                if server.poll() is not None or time.perf_counter() - start > 300:
                    raise SystemExit("chroma run did not come up over the store")
                time.sleep(0.2)
        server_up = time.perf_counter() - start
        start = time.perf_counter()
        store = ChromaStore.connect("127.0.0.1", port, "scale", encoder=args.query_encoder or stand_in_encoder(args),
                                    encoder_options=encoder_options(args), create=False,
                                    lexical_path=lexical_dir(store_dir, "scale"))
        warm_up()
        connect_s = time.perf_counter() - start
        hybrid_fs = StoreFirstStage(store, "hybrid")
        modes = {"dense": lambda q: store.search(q, 50), "bm25": lambda q: store.search_lexical(q, 50),
                 "hybrid": lambda q: hybrid_fs.candidates(q, 50)}
        for fn in modes.values():
            fn(qs[0])
        ready_s = time.perf_counter() - start
        latency = candidate_latency(modes, qs)
        count = store.count()
        store.close()
    finally:
        server.terminate()
        server.wait(30)
    return {"phase": "replica", "size": args.size, "count": count, "chroma_server_up_s": server_up,
            "connect_s": connect_s, "ready_s": ready_s, "latency": latency,
            "peak_rss_gb": peak_rss_gb()}


# ------------------------------------------------------------------ driver
def run_phase(argv: list[str]) -> dict:
    progress = "--progress" in argv  # the child's progress bar goes to this stderr
    env = dict(os.environ) if progress else {**os.environ, "TQDM_DISABLE": os.environ.get("TQDM_DISABLE", "1")}
    proc = subprocess.run([sys.executable, __file__, *argv], stdout=subprocess.PIPE, text=True, env=env,
                          stderr=None if progress else subprocess.PIPE)
    if proc.returncode != 0:
        raise SystemExit(f"phase {argv} failed:\n{(proc.stderr or '')[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(result, ensure_ascii=False), flush=True)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("RAG_RERANK_DATA", str(ROOT.parent / "shared" / "data")))
    p.add_argument("--sizes", default="10000,100000")
    p.add_argument("--encoder", default="intfloat/multilingual-e5-small")
    p.add_argument("--query-encoder", help="the open phase's encoder, if not --encoder (with --encoder tiny384)")
    p.add_argument("--backend", default="torch", choices=["torch", "onnx", "openvino"])
    p.add_argument("--device")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--work", default=str(ROOT / "runs" / "scale"))
    p.add_argument("--phases", default="ingest,open",
                   help="which store phases to run (ingest,open,replica: a replica over a Chroma server on the store)")
    p.add_argument("--resume", action="store_true", help="ingest into the existing store (skips what it holds)")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--out")
    p.add_argument("--phase", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.phase:  # a child process
        fn = {"ingest": phase_ingest, "open": phase_open, "replica": phase_replica}
        print(json.dumps(fn[args.phase](args), ensure_ascii=False))
        return 0
    Path(args.work).mkdir(parents=True, exist_ok=True)
    common = ["--data", args.data, "--encoder", args.encoder, "--backend", args.backend, "--work", args.work]
    common += ["--device", args.device] if args.device else []
    common += ["--query-encoder", args.query_encoder] if args.query_encoder else []
    common += ["--batch-size", str(args.batch_size)] if args.batch_size else []
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        gpu = None
    results = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "gpu": gpu},
               "encoder": args.encoder, "query_encoder": args.query_encoder or args.encoder,
               "backend": args.backend, "runs": []}
    for size in [int(s) for s in args.sizes.split(",")]:
        sz = ["--size", str(size)]
        if "ingest" in args.phases:
            results["runs"].append(run_phase(["--phase", "ingest", *common, *sz,
                                              *(["--resume"] if args.resume else []),
                                              *(["--progress"] if args.progress else [])]))
        if "open" in args.phases:
            results["runs"].append(run_phase(["--phase", "open", *common, *sz]))
        if "replica" in args.phases:
            results["runs"].append(run_phase(["--phase", "replica", *common, *sz]))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, ensure_ascii=False, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
