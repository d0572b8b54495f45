"""Session 13 probe: 1 x 50 latency of Reranker.score when a small call is cut into k pieces (each
piece tokenised while the device runs the one before), k = 1 (no cut), 2 (the code's), 3, 4, 6.
argv: model dir, candidates (.jsonl.gz), corpus."""
import statistics
import sys
import time

import torch

from rag_rerank import Reranker

model_dir, cand, corpus = sys.argv[1:4]
sys.path.insert(0, "bench")
from rerank_speed import saved  # noqa: E402

questions, _, candidates, _ = saved(cand, corpus, 20, 50)
calls = list(zip(questions, candidates))
r = Reranker(model_dir, device="cuda")
print("batch_size", r.batch_size, flush=True)


def cut(k):
    def chunks(groups):
        (query, docs), = groups
        n = -(-len(docs) // k)
        return [[(0, s, query, docs[s:s + n])] for s in range(0, len(docs), n)]
    return chunks


original = r._chunks
for k in (1, 2, 3, 4, 6, 2, 1):
    r._chunks = original if k == 2 else cut(k)
    for q, d in calls[:3]:
        r.score(q, d)
    ts = []
    for _ in range(5):
        for q, d in calls:
            torch.cuda.synchronize()
            t = time.perf_counter(); r.score(q, d); ts.append(1000 * (time.perf_counter() - t))
    ts.sort()
    print(f"k={k}: p50 {statistics.median(ts):.2f} ms, p95 {ts[int(0.95 * len(ts)) - 1]:.2f} ms ({len(ts)} calls)", flush=True)
