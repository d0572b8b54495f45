"""Inference speed (issue 15): our Reranker and BiEncoder against sentence-transformers, one run.

RAG-shaped work from the KorQuAD part of the shared data: questions, and for each the top
passages of Kiwi BM25 over all paragraphs (200-500 tokens each), the right one among them.

Reranking: sentence-transformers ``CrossEncoder.predict`` (fp32, batch 32, the baseline) vs
``Reranker`` with each backend; pairs/s end to end (tokenisation included), latency of one
question x ``--latency-docs`` passages (p50/p95), MRR@10 of each ranking and its drift from the
baseline, and the correlation of each system's scores with the baseline's (1.0: the same scores). Embedding: ``SentenceTransformer.encode`` vs ``BiEncoder``; passages/s, and dense MRR@10
over the whole corpus for the questions (drift from the baseline).

    python bench/rerank_speed.py --out bench/results/speed_cpu        # CPU (what CI machines are)
    python bench/rerank_speed.py --device cuda ...                    # GPU rows (torch backend)

Model: ``--model`` (default: the shipped reranker, ko-reranker-e5-small, rebuilt once from its delta)
and ``--encoder`` (default: the offline e5 twin).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("RAG_RERANK_DATA", ROOT.parent / "shared" / "data"))


def korquad(n_queries: int, depth: int):
    """(questions, their relevant paragraph, BM25 top-``depth`` paragraphs per question, corpus)."""
    from rag_rerank.first_stage import InMemoryCorpus

    sys.path.insert(0, str(ROOT / "bench"))
    from quality import _korquad

    _train, _validation, test, corpus = _korquad()
    questions = list(test)[:n_queries]
    relevant = [set(test[q]) for q in questions]
    bm25 = InMemoryCorpus(corpus, mode="bm25")
    candidates = [[h.text for h in bm25.candidates(q, depth)] for q in questions]
    return questions, relevant, candidates, corpus


def mrr(rankings, relevant) -> float:
    from rag_rerank.evaluate import mrr as _mrr

    return _mrr(rankings, relevant)


def timed(fn, repeat: int = 1):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return value, times


def rerank_rows(args, questions, relevant, candidates) -> list[dict]:
    import numpy as np
    from sentence_transformers import CrossEncoder

    from rag_rerank import Reranker

    pairs = [(q, d) for q, docs in zip(questions, candidates) for d in docs]
    one_q, one_docs = questions[0], candidates[0][: args.latency_docs]

    def ranking(scores):
        out, i = [], 0
        for docs in candidates:
            s = scores[i : i + len(docs)]
            i += len(docs)
            out.append([d for _, d in sorted(zip(s, docs), key=lambda x: -x[0])])
        return out

    systems = {"sentence-transformers CrossEncoder.predict (fp32, batch 32)": None}
    for backend, quantize in args.backends:
        label = f"Reranker backend={backend}" + (" int8" if backend == "onnx" and quantize else " fp32")
        systems[label] = (backend, quantize)
    rows, base_mrr, base_scores = [], None, None
    for label, spec in systems.items():
        start = time.perf_counter()
        if spec is None:
            model = CrossEncoder(str(args.model), device=args.device, max_length=args.max_length)
            score_all = lambda: list(model.predict(pairs, batch_size=32, show_progress_bar=False))  # noqa: E731
            score_one = lambda: model.predict([(one_q, d) for d in one_docs], batch_size=32, show_progress_bar=False)  # noqa: E731
        else:
            backend, quantize = spec
            model = Reranker(str(args.model), device=args.device if backend == "torch" else None, dtype="fp32",
                             max_length=args.max_length, batch_size=32, backend=backend, quantize=quantize,
                             threads=args.threads)
            score_all = lambda m=model: [s for group in m.score_many(questions, candidates) for s in group]  # noqa: E731
            score_one = lambda m=model: m.score(one_q, one_docs)
        load = time.perf_counter() - start
        score_one()  # warm-up: first-call costs are reported as load, not as throughput
        scores, t = timed(score_all)
        _, lat = timed(score_one, args.latency_repeat)
        value = mrr(ranking(scores), relevant)
        base_mrr = value if base_mrr is None else base_mrr
        base_scores = scores if base_scores is None else base_scores
        rows.append({"system": label, "pairs": len(pairs), "pairs_per_s": len(pairs) / t[0],
                     "score_corr": float(np.corrcoef(base_scores, scores)[0, 1]),
                     "latency_p50_ms": 1000 * statistics.median(lat),
                     "latency_p95_ms": 1000 * sorted(lat)[max(0, round(0.95 * len(lat)) - 1)],
                     "MRR@10": value, "drift": value - base_mrr, "load_s": load})
        print(f"[rerank] {label}: {rows[-1]['pairs_per_s']:.1f} pairs/s, MRR@10 {value:.4f}", flush=True)
    return rows


def encode_rows(args, questions, relevant, corpus) -> list[dict]:
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from rag_rerank.encoder import BiEncoder

    passages = corpus[: args.passages] if args.passages else corpus
    rows, base_mrr = [], None
    systems = {"sentence-transformers SentenceTransformer.encode (fp32, batch 64)": None}
    for backend, quantize in args.backends:
        systems[f"BiEncoder backend={backend}" + (" int8" if backend == "onnx" and quantize else " fp32")] = \
            (backend, quantize)
    for label, spec in systems.items():
        start = time.perf_counter()
        if spec is None:
            st = SentenceTransformer(str(args.encoder), device=args.device)
            embed_p = lambda texts: st.encode(texts, prompt="passage: ", batch_size=64,  # noqa: E731
                                              normalize_embeddings=True, convert_to_numpy=True)
            embed_q = lambda texts: st.encode(texts, prompt="query: ", batch_size=64,  # noqa: E731
                                              normalize_embeddings=True, convert_to_numpy=True)
        else:
            backend, quantize = spec
            enc = BiEncoder(str(args.encoder), device=args.device if backend == "torch" else None, batch_size=64,
                            backend=backend, quantize=quantize, threads=args.threads,
                            query_prompt="query: ", passage_prompt="passage: ")
            embed_p, embed_q = enc.embed_passages, enc.embed_queries
        load = time.perf_counter() - start
        embed_p(passages[:4])  # warm-up
        vectors, t = timed(lambda: embed_p(passages))
        all_vectors = vectors if len(passages) == len(corpus) else embed_p(corpus)
        q = embed_q(questions)
        top = np.argsort(-(q @ all_vectors.T), axis=1)[:, :10]
        value = mrr([[corpus[i] for i in row] for row in top], relevant)
        base_mrr = value if base_mrr is None else base_mrr
        rows.append({"system": label, "passages": len(passages), "passages_per_s": len(passages) / t[0],
                     "MRR@10": value, "drift": value - base_mrr, "load_s": load})
        print(f"[encode] {label}: {rows[-1]['passages_per_s']:.1f} passages/s, MRR@10 {value:.4f}", flush=True)
    return rows


def machine(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"


def table(result: dict) -> str:
    m = result["machine"]
    base = result["rerank"][0]["pairs_per_s"]
    lines = [f"Machine: **{m}**. {result['queries']} KorQuAD questions x top {result['depth']} Kiwi-BM25 "
             f"passages = {result['rerank'][0]['pairs']} pairs; max_length {result['max_length']}; "
             f"reranker `{result['model']}`.", "",
             "| reranker | machine | pairs/s | vs ST | 1 x {} p50 / p95 (ms) | MRR@10 | drift | score corr. "
             "with ST | load (s) |".format(result["latency_docs"]),
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rerank"]:
        lines.append(f"| {r['system']} | {m} | {r['pairs_per_s']:.1f} | {r['pairs_per_s'] / base:.2f}x | "
                     f"{r['latency_p50_ms']:.0f} / {r['latency_p95_ms']:.0f} | {r['MRR@10']:.4f} | "
                     f"{r['drift']:+.4f} | {r['score_corr']:.4f} | {r['load_s']:.1f} |")
    if result.get("encode"):
        base = result["encode"][0]["passages_per_s"]
        lines += ["", f"Bi-encoder `{result['encoder']}`: {result['encode'][0]['passages']} passages; dense "
                  f"MRR@10 of the {result['queries']} questions over all {result['corpus']} paragraphs.", "",
                  "| bi-encoder | machine | passages/s | vs ST | MRR@10 | drift | load (s) |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for r in result["encode"]:
            lines.append(f"| {r['system']} | {m} | {r['passages_per_s']:.1f} | {r['passages_per_s'] / base:.2f}x | "
                         f"{r['MRR@10']:.4f} | {r['drift']:+.4f} | {r['load_s']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="cross-encoder (default: the shipped reranker, ko-reranker-e5-small)")
    p.add_argument("--encoder", help="bi-encoder (default: the offline multilingual-e5-small twin)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--queries", type=int, default=30)
    p.add_argument("--depth", type=int, default=10, help="passages per question")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--latency-docs", type=int, default=10)
    p.add_argument("--latency-repeat", type=int, default=5)
    p.add_argument("--passages", type=int, default=0, help="passages timed for embedding (0: the whole corpus)")
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: one per core)")
    p.add_argument("--no-encode", action="store_true")
    p.add_argument("--out", help="write <out>.json and <out>.md")
    args = p.parse_args(argv)
    from rag_rerank import models
    args.model = args.model or models.materialize(models.SHIPPED_RERANKER)
    args.encoder = args.encoder or models.materialize("multilingual-e5-small")
    args.backends = [("torch", False), ("onnx", False), ("onnx", True)] if args.device == "cpu" else [("torch", False)]
    questions, relevant, candidates, corpus = korquad(args.queries, args.depth)
    result = {"machine": machine(args.device), "model": str(args.model), "encoder": str(args.encoder),
              "queries": len(questions), "depth": args.depth, "corpus": len(corpus), "max_length": args.max_length,
              "latency_docs": args.latency_docs,
              "rerank": rerank_rows(args, questions, relevant, candidates)}
    if not args.no_encode:
        result["encode"] = encode_rows(args, questions, relevant, corpus)
    text = table(result)
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str))
        out.with_suffix(".md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
