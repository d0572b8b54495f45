"""Session 12 probes on the GPU machine (shipped reranker, defaults): (1) a 1 x 50 call with small calls
split in two (the second half tokenised while the device runs the first) vs one chunk, interleaved call by
call so host noise falls on both alike; the tokenising of 50 and 25 passages alone; (2) where a throughput
call's time goes: torch.profiler's CUDA kernel totals and the device's busy share of the wall time."""
import json
import statistics
import time

import torch

from rag_rerank import Reranker

rows = [json.loads(line) for line in open(".gpu/work/korquad/test.jsonl", encoding="utf-8")][:40]
corpus = [json.loads(line)["text"] for line in open(".gpu/work/korquad/test_corpus.jsonl", encoding="utf-8")]
texts = corpus[:50]
query = rows[0]["query"]
r = Reranker("/tmp/shipped1", device="cuda")
print("split_small_calls:", r._split_small_calls, "graphs:", r._graphs.enabled)


def ms(fn):
    start = time.perf_counter()
    fn()
    return 1000 * (time.perf_counter() - start)


for split in (True, False):  # warm both shapes (graphs recorded)
    r._split_small_calls = split
    for _ in range(5):
        r.score(query, texts)
times = {True: [], False: []}
for _ in range(100):
    for split in (True, False):
        r._split_small_calls = split
        times[split].append(ms(lambda: r.score(query, texts)))
for split, t in times.items():
    t.sort()
    print(f"1 x 50, split={split}: p50 {statistics.median(t):.2f} ms, p95 {t[94]:.2f} ms")
r._split_small_calls = True
pairs = r._pairs
for n in (50, 25):
    t = sorted(ms(lambda: pairs.windows([(0, 0, query, texts[:n])])) for _ in range(50))
    print(f"tokenising {n} passages + the query: p50 {statistics.median(t):.2f} ms")
t = sorted(ms(lambda: pairs.encode(texts)) for _ in range(50))
print(f"encode_batch_fast of 50 passages alone: p50 {statistics.median(t):.2f} ms")

# (2) throughput: 40 questions x 50 passages in one call
queries = [row["query"] for row in rows]
docs = [corpus[i : i + 50] for i in range(0, 40 * 13, 13)]
r.score_many(queries, docs)
torch.cuda.synchronize()
from torch.profiler import ProfilerActivity, profile

with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    start = time.perf_counter()
    r.score_many(queries, docs)
    torch.cuda.synchronize()
    wall = time.perf_counter() - start
from torch.autograd import DeviceType

kernels = [e for e in prof.key_averages() if e.device_type == DeviceType.CUDA]  # kernel rows, not the ops that launched them
gpu = sum(e.self_device_time_total for e in kernels) / 1e3
print(f"throughput call: {len(queries) * 50} pairs, wall {1000 * wall:.1f} ms, kernels {gpu:.1f} ms "
      f"({100 * gpu / (1000 * wall):.0f} % busy)")
print(prof.key_averages().table(sort_by="self_device_time_total", row_limit=18, max_name_column_width=70))
