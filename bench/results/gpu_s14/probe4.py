"""Session 14 probe 4: the packed passes' attention through the memory-efficient (cutlass) varlen kernel
instead of flash (head size 32, where flash was 28 % of a pass's device time): logits against flash,
device time of one pass, and the 1 x 50 call cold, A/B interleaved. argv: model dir, candidates, corpus."""
import statistics
import sys
import time

import torch

from rag_rerank import Reranker, packed

model_dir, cand, corpus = sys.argv[1:4]
sys.path.insert(0, "bench")
from rerank_speed import saved  # noqa: E402

questions, _, candidates, _ = saved(cand, corpus, 120, 50)
flash = packed._varlen


def efficient(q, k, v, cu, max_len, scale):
    return torch.ops.aten._efficient_attention_forward(q[None], k[None], v[None], None, cu, cu, max_len, max_len,
                                                       0.0, 0, False, scale=scale)[0][0]


r = Reranker(model_dir, device="cuda")
q, docs = questions[0], candidates[0]


def use(fn):
    packed._varlen = fn
    r._graphs._graphs.clear(); r._graphs._pool = None  # re-record with this kernel


def device_ms(n):
    w = r._tokenize_chunk([(0, 0, q, docs[:n])])
    r._forward(w)
    ts = []
    for _ in range(30):
        torch.cuda.synchronize()
        a = torch.cuda.Event(enable_timing=True); b = torch.cuda.Event(enable_timing=True)
        a.record(); order, vals = r._launch(w); b.record(); r._collect(order, vals)
        ts.append(a.elapsed_time(b))
    return statistics.median(ts)


def p50(calls, rounds=1):
    ts = []
    for _ in range(rounds):
        for qq, dd in calls:
            r.token_cache.clear(); torch.cuda.synchronize(); t = time.perf_counter(); r.score(qq, dd)
            ts.append(1000 * (time.perf_counter() - t))
    return statistics.median(ts)


want = r.score(q, docs, raw=True)
use(efficient)
got = r.score(q, docs, raw=True)
print("efficient vs flash: max |logit diff|", max(abs(a - b) for a, b in zip(want, got)), flush=True)
many = list(zip(questions[:60], candidates[:60]))
for name, fn in (("flash", flash), ("efficient", efficient), ("flash", flash), ("efficient", efficient)):
    use(fn)
    for qq, dd in many:  # record this kernel's buckets before timing
        r.score(qq, dd)
    print(f"{name}: one pass device ms, 17 passages {device_ms(17):.3f}, 50 passages {device_ms(50):.3f}; "
          f"1 x 50 cold p50, question 0 x 40: {p50([(q, docs)], 40):.2f} ms, 60 questions: {p50(many):.2f} ms", flush=True)
