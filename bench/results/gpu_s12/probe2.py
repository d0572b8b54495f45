"""Session 12, where a throughput call's time goes on the H200 (shipped reranker, defaults): the first probe
found the device busy 74 % of a 40 x 50 call. Here the same call is taken apart, each part timed alone:
the whole call; the forward of already tokenised pairs (no tokenising, one chunk); the device time of its
passes (CUDA events around each replay); the host's own share (batching, packing, bucketing). Run first
with a host wait per chunk (197 ms a call vs 156 ms for the forward alone), then with one wait per call."""
import json
import statistics
import time

import torch

from rag_rerank import Reranker
from rag_rerank.packed import bucket

rows = [json.loads(line) for line in open(".gpu/work/korquad/test.jsonl", encoding="utf-8")][:40]
corpus = [json.loads(line)["text"] for line in open(".gpu/work/korquad/test_corpus.jsonl", encoding="utf-8")]
queries = [row["query"] for row in rows]
docs = [corpus[i : i + 50] for i in range(0, 40 * 13, 13)]
chunk = [(g, 0, q, d) for g, (q, d) in enumerate(zip(queries, docs))]
r = Reranker("/tmp/shipped1", device="cuda")
_mode = torch.inference_mode()  # as Reranker._launch runs the graphs (kept: the guard ends with the object)
_mode.__enter__()


def wall(fn, n=7):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


pairs = r._pairs
windows = pairs.windows(chunk)
r.CHUNK_PAIRS = 1 << 30
print(f"score_many as one chunk (tokenise all, then run): {wall(lambda: r.score_many(queries, docs)):.1f} ms")
r.CHUNK_PAIRS = Reranker.CHUNK_PAIRS
print(f"score_many 40 x 50 (chunks {[sum(len(p) for *_, p in c) for c in r._chunks(list(zip(queries, docs)))]}): "
      f"{wall(lambda: r.score_many(queries, docs)):.1f} ms")
print(f"tokenising them (windows, one chunk): {wall(lambda: pairs.windows(chunk)):.1f} ms")
print(f"_forward of the tokenised pairs (one chunk): {wall(lambda: r._forward(windows)):.1f} ms")
batches = r._batches(pairs.lengths(windows))
print(f"_batches: {wall(lambda: r._batches(pairs.lengths(windows))):.2f} ms; passes {len(batches)}: {[len(b) for b in batches]}")
packs = [pairs.pack(windows, idx, r._position_offset, r._host_spans) for idx in batches]
print(f"pack all passes: {wall(lambda: [pairs.pack(windows, idx, r._position_offset, r._host_spans) for idx in batches]):.1f} ms; "
      f"bucket all: {wall(lambda: [bucket(a, r._graphs.pad_id, r._position_offset, r.max_length) for a in packs]):.1f} ms")
print(f"graphs(arrays) for all passes, packed before: {wall(lambda: [r._graphs(a) for a in packs]):.1f} ms")
ev = []
def timed_passes():
    ev.clear()
    for a in packs:
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); r._graphs(a); e.record(); ev.append((s, e))
wall(timed_passes, 3)
torch.cuda.synchronize()
per = [s.elapsed_time(e) for s, e in ev]
print(f"device time per pass (ms): {[round(x, 1) for x in per]}, sum {sum(per):.1f}")
tokens = [int(a['cu_seq_lens_q'][-1]) for a in packs]
print(f"tokens per pass: {tokens}")
